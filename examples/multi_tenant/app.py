"""A multi-tenant ASGI service: each request runs an agent workflow of several LLM calls.

Nothing here is otel-tokens specific except the attribution middleware (tenants come from
the gateway's ``x-tenant-id`` header), the ``workflow`` roll-up and ``budgets.expect`` (the
most one request may use). Budgets are enforced by the instrumentation
(``OTEL_TOKENS_BUDGETS``); a refused call surfaces as ``BudgetExceeded``, which the app turns
into HTTP 402.

Run it with any ASGI server, e.g. ``opentelemetry-instrument uvicorn app:app``, or drive it
in-process with ``run.py``.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai

import otel_tokens
from otel_tokens import budgets
from otel_tokens.budgets import BudgetExceeded
from otel_tokens.counting import count_text

_openai: openai.AsyncOpenAI | None = None
_anthropic: anthropic.AsyncAnthropic | None = None


def clients() -> tuple[openai.AsyncOpenAI, anthropic.AsyncAnthropic]:
    global _openai, _anthropic
    if _openai is None or _anthropic is None:
        _openai, _anthropic = openai.AsyncOpenAI(), anthropic.AsyncAnthropic()
    return _openai, _anthropic


def most_tokens(question: str) -> int:
    """The most the workflow below can use: every call's max_tokens, and every input (the
    question twice, the plan and the draft as they are passed on, a few words of prompt)."""
    q = count_text(question, "gpt-4o-mini")
    return (200 + 400 + 100) + (q + 20) + (200 + q + 20) + (400 + 20)


@otel_tokens.workflow("answer-question")
async def answer(question: str) -> str:
    # A tenant whose budget cannot pay for all three calls is refused at the first, before
    # anything is sent, instead of paying for a plan and then being refused the answer.
    with budgets.expect(tokens=most_tokens(question)):
        return await _answer(question)


async def _answer(question: str) -> str:
    oai, claude = clients()
    plan = await oai.chat.completions.create(
        model="gpt-4o-mini",
        max_tokens=200,
        messages=[{"role": "user", "content": f"Plan an answer to: {question}"}],
    )
    draft = await claude.messages.create(
        model="claude-haiku-4-5",
        max_tokens=400,
        messages=[{"role": "user", "content": f"{plan.choices[0].message.content}\n{question}"}],
    )
    text = "".join(b.text for b in draft.content if b.type == "text")
    review = await oai.chat.completions.create(
        model="gpt-4o-mini",
        max_tokens=100,
        messages=[{"role": "user", "content": f"Check this answer briefly: {text}"}],
    )
    return f"{text}\n(review: {review.choices[0].message.content})"


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    try:
        question = json.loads(body or b"{}").get("question", "What is a token?")
        status, payload = 200, {"answer": await answer(question)}
    except BudgetExceeded as exc:
        status, payload = 402, {"error": str(exc), "budget": exc.budget}
    data = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": data})


app = otel_tokens.AttributionMiddleware(_app)
