"""Mistral AI: reads the ``mistralai`` client's requests and responses (La Plateforme).

Every API call of the Speakeasy-generated client passes through ``BaseSDK.do_request``
(sync) or ``do_request_async`` with ``(hook_ctx, request, error_status_codes, stream,
retry_config)``: ``request`` is the ``httpx`` request about to be sent, whose URL names the
call and whose JSON body names the model. It returns the ``httpx`` response, which the public
method (``chat.complete``, ``chat.stream``, ``embeddings.create``...) then parses.

Covered: chat completions (``chat.complete``/``stream``, sync and async), FIM completions
(``fim.complete``/``stream``) and embeddings (``embeddings.create``). A streamed response
reaches the user inside the client's own ``EventStream``, built *after* ``do_request``
returns; so the stream is watched one level down, at the bytes the ``httpx`` response reads:
`stream_of` puts a tap (an ``httpx`` byte stream of the same kind) in front of the response's
own, and the core watches the tap. The user's ``EventStream`` and its events are untouched.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

from opentelemetry.util.types import AttributeValue

from .. import semconv as sc
from ..counting import count_messages, count_text, estimate_source
from ..usage import TokenUsage, from_mistral
from ..usage import read_field as field
from ._adapter import Request, ResponseFacts, StreamState
from ._common import PerURL, capture_content, output_attributes, request_attributes

if TYPE_CHECKING:
    from ..pricing import Processing

MISTRAL_AI = "mistral_ai"
# The client's own telemetry (opt-in since 2.4.10): "global" makes spans with gen_ai.usage.*
# in the application's tracer provider, beside ours.
SDK_TELEMETRY_ENV = "MISTRAL_SDK_TELEMETRY"
_log = logging.getLogger("otel_tokens")
# usage.service_tier ("the service tier at which the request was processed: standard or
# priority"), and the request's service_tier, as our processing tiers. A tier not named
# here has rates we cannot know: such a call is kept unpriced (see `_facts`).
_TIERS: dict[str, Processing] = {"standard": "standard", "priority": "priority"}

# Our operation names by the end of the API path.
_PATHS = {
    "/v1/chat/completions": "chat",
    "/v1/fim/completions": "text_completion",
    "/v1/embeddings": "embeddings",
}


def _operation(path: str) -> str | None:
    return next((op for end, op in _PATHS.items() if path.endswith(end)), None)


_OPERATIONS = PerURL(_operation)


class MistralAdapter:
    def __init__(self, *, library_span: bool = False) -> None:
        self.capture = capture_content()  # read once, when instrumenting
        if os.environ.get(SDK_TELEMETRY_ENV, "").strip().lower() == "global":
            _log.warning(
                "otel-tokens: %s=global: the mistralai client makes its own spans with "
                "gen_ai.usage.* in your tracer provider, beside ours, and backends that sum "
                "spans would count tokens twice. Unset it (or set it to false) to keep one "
                "span with usage per call (docs/mistral.md).",
                SDK_TELEMETRY_ENV,
            )

    def read_request(self, client: Any, args: tuple[Any, ...], kwargs: Any) -> Request | None:
        request = kwargs.get("request", args[1] if len(args) > 1 else None)
        url = getattr(request, "url", None)
        if url is None:
            return None
        operation = _OPERATIONS[url.path]
        if operation is None:
            return None
        try:
            body = json.loads(request.content or b"{}")
        except ValueError:  # not JSON (a multipart upload): not a metered call
            return None
        if not isinstance(body, dict):
            return None
        stream = kwargs.get("stream", args[3] if len(args) > 3 else False)
        model = body.get("model")
        tier = body.get("service_tier")
        return Request(
            operation=operation,
            provider=MISTRAL_AI,
            model=model if isinstance(model, str) else None,
            endpoint=url.path,
            stream=bool(stream),
            server_address=url.host or None,
            server_port=url.port,
            processing=_TIERS.get(tier, "standard") if isinstance(tier, str) else "standard",
            body=body,
            capture_content=self.capture,
        )

    def request_attributes(self, request: Request) -> dict[str, AttributeValue]:
        return request_attributes(request.body)

    def max_output_tokens(self, request: Request) -> int | None:
        if request.operation == "embeddings":
            return 0
        value = request.body.get("max_tokens")
        return value if type(value) is int else None

    def estimate_input(self, request: Request) -> int:
        return _estimate_input(request)

    def read_response(self, request: Request, response: Any) -> ResponseFacts:
        status = getattr(response, "status_code", 200)
        if status >= 400:
            # do_request returns an error response; the public method raises from it. The
            # type is the status code, as the conventions' error.type for HTTP failures.
            return ResponseFacts(error=(str(status), f"HTTP {status}"))
        data = response.json() if hasattr(response, "json") else response
        return _facts(request, data, _message_text(data) if request.capture_content else "")

    def stream_of(self, request: Request, result: Any) -> Any:
        """The tap in front of a streamed response's bytes (see the module's docstring)."""
        if not request.stream or getattr(result, "status_code", 200) >= 400:
            return None
        inner = getattr(result, "stream", None)
        if inner is None:
            return None
        tap = _tap_class(type(inner))(inner)
        result.stream = tap
        return tap

    def stream_state(self, request: Request) -> StreamState:
        return _EventBytes(request)


def _facts(request: Request, data: Any, text: str) -> ResponseFacts:
    usage_data = field(data, "usage")
    attributes = output_attributes(request, text) if text else None
    usage = from_mistral(usage_data) if usage_data is not None else None
    tier = field(usage_data, "service_tier")
    tier = tier.strip().lower() if isinstance(tier, str) and tier.strip() else None
    processing = _TIERS.get(tier) if tier is not None else None
    unknown_tier = tier is not None and processing is None
    if usage is not None and (field(usage_data, "prompt_audio_seconds") or unknown_tier):
        # Audio input is billed by the second, which no token bucket holds, and a tier we
        # do not know has rates we do not know: the tokens go on the span, no price (a
        # price that misses either would look exact and be wrong).
        attributes = {
            **(attributes or {}),
            sc.GEN_AI_USAGE_INPUT_TOKENS: usage.input_total,
            sc.GEN_AI_USAGE_OUTPUT_TOKENS: usage.output_total,
            sc.BILLING_PRICING_STATUS: sc.STATUS_UNPRICED,
        }
        usage = None
    choices = field(data, "choices") or ()
    return ResponseFacts(
        usage=usage,
        model=field(data, "model") or None,
        response_id=field(data, "id") or None,
        finish_reasons=tuple(str(r) for c in choices if (r := field(c, "finish_reason"))),
        processing=processing,
        attributes=attributes,
    )


def _content(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content chunks: text, thinking, references...
        return "".join(c.get("text") or "" for c in content if isinstance(c, dict))
    return ""


def _message_text(data: Any) -> str:
    return "".join(_content(field(c, "message", "content")) for c in field(data, "choices") or ())


def _estimate_input(request: Request) -> int:
    body, model = request.body, request.model
    if request.operation == "chat":
        return count_messages(body.get("messages"), model)
    if request.operation == "embeddings":
        inputs = body.get("input") or body.get("inputs")
        texts = [inputs] if isinstance(inputs, str) else (inputs or [])
        return sum(count_text(t, model) for t in texts if isinstance(t, str))
    return count_text(str(body.get("prompt") or ""), model) + count_text(
        str(body.get("suffix") or ""), model
    )


class _EventBytes(StreamState):
    """A chat or FIM stream's bytes (server-sent events of ``CompletionChunk`` JSON), kept
    as they pass (one list append per chunk) and read at the end. The usage is in the last
    chunk, with the finish reason. A stream cut before it is counted locally: the prompt
    (the request's messages) and the text received, with tiktoken's ``o200k_base`` standing
    in for Mistral's own tokenizer (no local library ships it), marked estimated."""

    __slots__ = ("chunks", "request")

    def __init__(self, request: Request) -> None:
        self.request = request
        self.chunks: list[bytes] = []

    def event(self, chunk: Any) -> bool:
        self.chunks.append(chunk)
        return False

    def finish(self, error: BaseException | None) -> ResponseFacts:
        request = self.request
        lines = _data_lines(b"".join(self.chunks))
        # The client has parsed every event already: parse again only what is needed. The
        # usage chunk is the last one naming "usage" (inside a JSON string the quotes would
        # be escaped, so the key is the only match); the text only for an estimate or for
        # captured content.
        last_usage = next(
            (e for line in reversed(lines) if b'"usage"' in line and (e := _json(line))), None
        )
        if last_usage is not None and last_usage.get("usage"):
            text = _delta_text(map(_json, lines)) if request.capture_content else ""
            facts = _facts(request, last_usage, text)
            ended = any(field(c, "finish_reason") for c in last_usage.get("choices") or ())
            if facts.usage is not None and not ended:
                return _with_usage(facts, facts.usage.with_source("estimated"))
            return facts
        events = [e for e in map(_json, lines) if e]
        if not events and error is None:
            return ResponseFacts()  # nothing came back: nothing to bill
        text = _delta_text(events)
        model = request.model
        usage = TokenUsage(
            input=_estimate_input(request),
            output=count_text(text, model),
            source=estimate_source(model),
        )
        first = events[0] if events else {}
        reasons = tuple(
            str(r) for e in events for c in e.get("choices") or () if (r := c.get("finish_reason"))
        )
        return ResponseFacts(
            usage=usage,
            model=first.get("model") or None,
            response_id=first.get("id") or None,
            finish_reasons=reasons,
            attributes=output_attributes(request, text),
        )


def _delta_text(events: Any) -> str:
    return "".join(
        _content(field(c, "delta", "content")) for e in events if e for c in e.get("choices") or ()
    )


def _with_usage(facts: ResponseFacts, usage: TokenUsage) -> ResponseFacts:
    from dataclasses import replace

    return replace(facts, usage=usage)


def _data_lines(raw: bytes) -> list[bytes]:
    """The payloads of the ``data:`` lines of server-sent events, ``[DONE]`` left out."""
    found = []
    for line in raw.splitlines():
        if line.startswith(b"data:"):
            payload = line[5:].strip()
            if payload and payload != b"[DONE]":
                found.append(payload)
    return found


def _json(payload: bytes) -> dict[str, Any] | None:
    """One event's JSON object; ``None`` for a line cut short by a failure."""
    try:
        value = json.loads(payload)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


_taps: dict[type, type] = {}


def _tap_class(stream_type: type) -> type:
    tap = _taps.get(stream_type)
    if tap is None:
        tap = _taps[stream_type] = _make_tap(stream_type)
    return tap


def _make_tap(stream_type: type) -> type:
    """A byte stream of ``stream_type``'s ``httpx`` (``httpx`` or ``httpx2``) and kind
    (sync or async) in front of the response's own: the response checks the kind of its
    stream before it reads it. Its ``_iterator`` is what the core's watcher swaps."""
    module = sys.modules[stream_type.__module__.split(".", 1)[0]]
    if issubclass(stream_type, module.AsyncByteStream):

        class _AsyncTap(module.AsyncByteStream):  # type: ignore[name-defined,misc]
            def __init__(self, inner: Any) -> None:
                self._inner = inner
                self._iterator = inner.__aiter__()

            def __aiter__(self) -> Any:
                return self._iterator

            async def close(self) -> None:  # the core hooks this one (an early close)
                await self._inner.aclose()

            async def aclose(self) -> None:
                await self.close()

        return _AsyncTap

    class _SyncTap(module.SyncByteStream):  # type: ignore[name-defined,misc]
        def __init__(self, inner: Any) -> None:
            self._inner = inner
            self._iterator = iter(inner)

        def __iter__(self) -> Any:
            return self._iterator

        def close(self) -> None:
            self._inner.close()

    return _SyncTap
