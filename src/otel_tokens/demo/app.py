"""The demo application: ordinary OpenAI and Anthropic calls, nothing otel-tokens specific.

``otel-tokens demo`` runs it under ``opentelemetry-instrument``, which loads our
instrumentors from their entry points; the cost summary comes from the
``otel_tokens_summary`` span exporter when the process exits. With ``OPENAI_API_KEY`` /
``ANTHROPIC_API_KEY`` set it calls the real APIs (cheap models, tiny prompts); otherwise
``otel-tokens demo`` points the clients at the bundled local server.
"""

from __future__ import annotations

import os

import anthropic
import openai
from anthropic.types import TextBlockParam
from openai.types.chat import ChatCompletionMessageParam

OPENAI_MODEL = os.environ.get("DEMO_OPENAI_MODEL", "gpt-4o-mini")
ANTHROPIC_MODEL = os.environ.get("DEMO_ANTHROPIC_MODEL", "claude-haiku-4-5")
QUESTION = "In one sentence: why does exact token metering matter for billing?"
# Long enough to be cached by providers that cache prompts above ~1024 tokens.
SYSTEM = "You are a concise assistant for a billing platform. " * 120


def openai_calls(client: openai.OpenAI) -> None:
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": QUESTION},
    ]
    reply = client.chat.completions.create(model=OPENAI_MODEL, messages=messages)
    print("openai:", reply.choices[0].message.content)
    # Streamed, with the provider's usage chunk.
    stream = client.chat.completions.create(
        model=OPENAI_MODEL,
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    print("openai stream:", text)
    # Streamed without usage: otel-tokens counts it locally and says so (estimated).
    stream = client.chat.completions.create(
        model=OPENAI_MODEL,
        messages=[{"role": "user", "content": QUESTION}],
        stream=True,
    )
    print("openai stream (no usage):", "".join(c.choices[0].delta.content or "" for c in stream))


def anthropic_calls(client: anthropic.Anthropic) -> None:
    system: list[TextBlockParam] = [
        {"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral", "ttl": "1h"}}
    ]
    message = client.messages.create(
        model=ANTHROPIC_MODEL,
        max_tokens=200,
        system=system,
        messages=[{"role": "user", "content": QUESTION}],
    )
    print("anthropic:", "".join(b.text for b in message.content if b.type == "text"))
    with client.messages.stream(
        model=ANTHROPIC_MODEL,
        max_tokens=200,
        system=system,
        messages=[{"role": "user", "content": QUESTION}],
    ) as stream:
        print("anthropic stream:", "".join(stream.text_stream))


def main() -> None:
    if os.environ.get("OPENAI_API_KEY"):
        openai_calls(openai.OpenAI())
    if os.environ.get("ANTHROPIC_API_KEY"):
        anthropic_calls(anthropic.Anthropic())


if __name__ == "__main__":
    main()
