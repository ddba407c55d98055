"""The demo application: ordinary OpenAI, Anthropic, Gemini and Bedrock calls, nothing
otel-tokens specific.

``otel-tokens demo`` runs it under ``opentelemetry-instrument``, which loads our
instrumentors from their entry points; the cost summary comes from the
``otel_tokens_summary`` span exporter when the process exits. It calls each provider whose
key is set (``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``, ``GEMINI_API_KEY`` or
``GOOGLE_API_KEY``, ``AWS_BEARER_TOKEN_BEDROCK`` or ``DEMO_BEDROCK=1`` to use the AWS
credentials already configured), with cheap models and tiny prompts; with
none set, ``otel-tokens demo`` sets them all and points each client at its local fake
(`otel_tokens.demo.offline_providers`).
"""

from __future__ import annotations

import os
from typing import Any

import anthropic
import boto3  # type: ignore[import-untyped]
import openai
from anthropic.types import TextBlockParam
from google import genai
from openai.types.chat import ChatCompletionMessageParam

OPENAI_MODEL = os.environ.get("DEMO_OPENAI_MODEL", "gpt-4o-mini")
ANTHROPIC_MODEL = os.environ.get("DEMO_ANTHROPIC_MODEL", "claude-haiku-4-5")
GEMINI_MODEL = os.environ.get("DEMO_GEMINI_MODEL", "gemini-2.5-flash")
# A cross-region inference profile: priced as the underlying model, the prefix kept.
BEDROCK_MODEL = os.environ.get("DEMO_BEDROCK_MODEL", "us.amazon.nova-micro-v1:0")
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


def gemini_calls(client: genai.Client) -> None:
    reply = client.models.generate_content(model=GEMINI_MODEL, contents=QUESTION)
    print("gemini:", reply.text)
    # Streamed: the usage comes in the last chunk.
    chunks = client.models.generate_content_stream(model=GEMINI_MODEL, contents=QUESTION)
    print("gemini stream:", "".join(chunk.text or "" for chunk in chunks))


def bedrock_calls(client: Any) -> None:
    request: dict[str, Any] = {
        "modelId": BEDROCK_MODEL,
        "messages": [{"role": "user", "content": [{"text": QUESTION}]}],
        "inferenceConfig": {"maxTokens": 200},
    }
    reply = client.converse(**request)
    content = reply["output"]["message"]["content"]
    print("bedrock:", "".join(block.get("text", "") for block in content))
    # Streamed: the usage comes in the stream's metadata event.
    events = client.converse_stream(**request)["stream"]
    text = "".join(
        event["contentBlockDelta"]["delta"].get("text", "")
        for event in events
        if "contentBlockDelta" in event
    )
    print("bedrock stream:", text)


def main() -> None:
    if os.environ.get("OPENAI_API_KEY"):
        openai_calls(openai.OpenAI())
    if os.environ.get("ANTHROPIC_API_KEY"):
        anthropic_calls(anthropic.Anthropic())
    if os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY"):
        gemini_calls(genai.Client())
    if os.environ.get("AWS_BEARER_TOKEN_BEDROCK") or os.environ.get("DEMO_BEDROCK"):
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        bedrock_calls(boto3.client("bedrock-runtime", region_name=region or "us-east-1"))


if __name__ == "__main__":
    main()
