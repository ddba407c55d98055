"""Gemini (``google-genai``) and Bedrock (``boto3`` ``bedrock-runtime``) workloads for
overhead.py, and through it loop.py and instructions.py: canned wire bytes, in-process
transports, and the calls each row times.

- Gemini: ``genai.Client(http_options=HttpOptions(httpx_client=...))`` with overhead.py's
  in-process ``httpx2.MockTransport`` client. A non-streamed ``generate_content`` gets a
  JSON body; a ``generate_content_stream`` gets its SSE chunks one per transport chunk, the
  usage in the last, as the Gemini API sends them.
- Bedrock: a real ``boto3`` client whose ``before-send`` event answers with a botocore
  ``AWSResponse`` over the pre-encoded bytes (botocore still builds, serialises and signs
  every request). ``converse`` gets its JSON body; ``converse_stream`` the binary AWS
  event-stream messages, one per transport chunk (the framing of
  the Bedrock fake in ``otel_tokens_fakes``, imported from there).

Both price: ``gemini-2.5-flash`` (cache reads and thoughts in its usage) and Claude Sonnet
4.5 on Bedrock (cache reads and writes), so every call runs the whole recording path.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from overhead import Plan, Workload

GEMINI_MODEL = "gemini-2.5-flash"
GEMINI_URL = "https://generativelanguage.googleapis.com/"
BEDROCK_MODEL = "anthropic.claude-sonnet-4-5-20250929-v1:0"

_TEXT = "The quick brown fox jumps over the lazy dog and then it writes a short report"
_WORDS = tuple(f" {w}" for w in _TEXT.split(" "))
_PROMPT = "Summarise the attached report in three sentences. " * 6
_SYSTEM = "You are a concise assistant. " * 8


def _text(n: int) -> str:
    return "".join(_WORDS[i % len(_WORDS)] for i in range(n))


# --- Gemini -------------------------------------------------------------------------------
_GEMINI_USAGE = {
    "promptTokenCount": 1_240,
    "cachedContentTokenCount": 1_024,
    "candidatesTokenCount": 300,
    "thoughtsTokenCount": 128,
    "totalTokenCount": 1_668,
    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 1_240}],
    "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": 1_024}],
}


def _candidate(text: str, finish: bool) -> dict[str, Any]:
    candidate: dict[str, Any] = {
        "content": {"role": "model", "parts": [{"text": text}]},
        "index": 0,
    }
    if finish:
        candidate["finishReason"] = "STOP"
    return candidate


def gemini_response() -> bytes:
    return json.dumps(
        {
            "candidates": [_candidate(_text(300), True)],
            "usageMetadata": _GEMINI_USAGE,
            "modelVersion": GEMINI_MODEL,
            "responseId": "bench-gemini-0001",
        }
    ).encode()


def gemini_stream(chunks: int) -> tuple[bytes, ...]:
    """``chunks`` SSE chunks of text; the last one finishes with the usage."""
    out = []
    for i in range(chunks):
        last = i == chunks - 1
        chunk: dict[str, Any] = {
            "candidates": [_candidate(_WORDS[i % len(_WORDS)], last)],
            "modelVersion": GEMINI_MODEL,
            "responseId": "bench-gemini-0002",
        }
        if last:
            chunk["usageMetadata"] = _GEMINI_USAGE
        out.append(f"data: {json.dumps(chunk, separators=(',', ':'))}\r\n\r\n".encode())
    return tuple(out)


def gemini_workloads(plan: Plan) -> list[Workload]:
    from google import genai
    from google.genai import types
    from overhead import cheap_stream_workloads, mock_http_client

    def client(body: bytes | tuple[bytes, ...]) -> Any:
        # overhead.py's in-process httpx2 transport (google-genai takes httpx2 clients too).
        options = types.HttpOptions(base_url=GEMINI_URL, httpx_client=mock_http_client(body))
        return genai.Client(api_key="bench", http_options=options)

    config = types.GenerateContentConfig(system_instruction=_SYSTEM, max_output_tokens=1024)
    plain = client(gemini_response())

    def nonstream() -> None:
        plain.models.generate_content(model=GEMINI_MODEL, contents=_PROMPT, config=config)

    def streamer(c: Any) -> Callable[[], None]:
        def run() -> None:
            for _ in c.models.generate_content_stream(
                model=GEMINI_MODEL, contents=_PROMPT, config=config
            ):
                pass

        return run

    return cheap_stream_workloads(plan, nonstream, streamer, lambda n: client(gemini_stream(n)))


# --- Bedrock ------------------------------------------------------------------------------
_BEDROCK_USAGE = {
    "inputTokens": 216,
    "outputTokens": 300,
    "cacheReadInputTokens": 1_024,
    "cacheWriteInputTokens": 0,
    "totalTokens": 1_540,
}


def _event_message() -> Callable[..., bytes]:
    """The AWS event-stream framing of the Bedrock fake (one copy of it)."""
    from otel_tokens_fakes import event_message

    return event_message


def bedrock_response() -> bytes:
    return json.dumps(
        {
            "output": {"message": {"role": "assistant", "content": [{"text": _text(300)}]}},
            "stopReason": "end_turn",
            "usage": _BEDROCK_USAGE,
            "metrics": {"latencyMs": 812},
        }
    ).encode()


def bedrock_stream(chunks: int) -> tuple[bytes, ...]:
    """ConverseStream: ``messageStart``, ``chunks`` ``contentBlockDelta`` events,
    ``contentBlockStop``, ``messageStop`` and the ``metadata`` event with the usage."""
    event = _event_message()
    out = [event("messageStart", {"role": "assistant"})]
    out += [
        event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": word}})
        for word in (_WORDS[i % len(_WORDS)] for i in range(chunks))
    ]
    out.append(event("contentBlockStop", {"contentBlockIndex": 0}))
    out.append(event("messageStop", {"stopReason": "end_turn"}))
    out.append(event("metadata", {"usage": _BEDROCK_USAGE, "metrics": {"latencyMs": 812}}))
    return tuple(out)


class _Raw:
    """What botocore reads an HTTP response through (urllib3's response, to it): ``stream()``
    for event streams and ``read()`` for bodies, over bytes encoded once."""

    def __init__(self, parts: tuple[bytes, ...]) -> None:
        self._parts = parts
        self._data: bytes | None = None
        self._offset = 0

    def stream(self, amt: int | None = None, decode_content: bool | None = None) -> Iterator[bytes]:
        return iter(self._parts)

    def read(self, amt: int | None = None, decode_content: bool | None = None) -> bytes:
        if self._data is None:
            self._data = b"".join(self._parts)
        end = len(self._data) if amt is None else self._offset + amt
        out = self._data[self._offset : end]
        self._offset += len(out)
        return out

    def close(self) -> None:
        pass


def _answer(body: bytes | tuple[bytes, ...]) -> Callable[..., Any]:
    """A ``before-send`` handler answering with ``body`` (a tuple: an event stream)."""
    from botocore.awsrequest import AWSResponse

    if isinstance(body, tuple):
        parts = body
        headers = {"content-type": "application/vnd.amazon.eventstream"}
    else:
        parts = (body,)
        headers = {"content-type": "application/json", "content-length": str(len(body))}
    headers["x-amzn-requestid"] = "bench-bedrock-0001"

    def handler(request: Any, **_: Any) -> Any:
        return AWSResponse(request.url, 200, headers, _Raw(parts))

    return handler


def bedrock_workloads(plan: Plan) -> list[Workload]:
    import boto3
    from botocore.config import Config
    from overhead import cheap_stream_workloads

    def client(body: bytes | tuple[bytes, ...]) -> Any:
        c = boto3.client(
            "bedrock-runtime",
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
            config=Config(retries={"max_attempts": 1}),
        )
        c.meta.events.register("before-send.bedrock-runtime.*", _answer(body))
        return c

    messages = [{"role": "user", "content": [{"text": _PROMPT}]}]
    system = [{"text": _SYSTEM}]
    inference = {"maxTokens": 1024}
    plain = client(bedrock_response())

    def nonstream() -> None:
        plain.converse(
            modelId=BEDROCK_MODEL, messages=messages, system=system, inferenceConfig=inference
        )

    def streamer(c: Any) -> Callable[[], None]:
        def run() -> None:
            response = c.converse_stream(
                modelId=BEDROCK_MODEL, messages=messages, system=system, inferenceConfig=inference
            )
            for _ in response["stream"]:
                pass

        return run

    return cheap_stream_workloads(plan, nonstream, streamer, lambda n: client(bedrock_stream(n)))
