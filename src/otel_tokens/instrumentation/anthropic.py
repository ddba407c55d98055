"""Anthropic: reads the ``anthropic`` client's requests, responses and stream events.

Covers ``messages.create`` with and without ``stream=True``, ``messages.stream()``,
``messages.parse``, beta messages, sync and async, raw-response variants, and the Bedrock
and Vertex clients.

anthropic 2.x makes its own OpenTelemetry span per API call (scope
``com.anthropic.sdk.python``) with usage on it. Two spans with usage would double-count in
any backend that sums spans, so when that span exists we put our cost and billing
attributes on it (through two hooks of the SDK's tracing) and make no span of our own.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import Any

from opentelemetry.util.types import AttributeValue

from .. import semconv as sc
from ..counting import count_messages, count_text
from ..usage import TokenUsage, from_anthropic
from ..usage._read import field
from ._common import (
    PerClient,
    PerURL,
    capture_content,
    capture_output,
    content_json,
    json_body,
    keep_fields,
    request_attributes,
    server_of,
)
from ._recording import Call, Request, hold_end, release_end
from ._safety import log_once
from ._streams import StreamState
from ._wrapper import ACTIVE_CALL, complete, is_raw

_USAGE_KEYS = (
    "input_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "cache_creation",
    "server_tool_use",
    "output_tokens_details",
)

# SDK spans carrying a streamed call of ours, until the SDK ends them.
_span_calls: weakref.WeakValueDictionary[int, Call] = weakref.WeakValueDictionary()


def provider_for(client: Any) -> str:
    name = getattr(client, "_gen_ai_provider_name", None)
    if isinstance(name, str) and name:
        return name
    cls = type(client).__name__
    if "Bedrock" in cls:
        return "aws.bedrock"
    if "Vertex" in cls:
        return "gcp.vertex_ai"
    return "anthropic"


def sdk_traces(client: Any) -> bool:
    """True when this client makes its own call spans (anthropic 2.x, not switched off)."""
    try:
        options = client.open_telemetry
        return bool(options["traces"]["enabled"])
    except Exception:
        return False


# Messages endpoints; count_tokens is free, and batches are billed by their own results.
_IS_MESSAGES = PerURL(lambda path: path.endswith("/messages"))


class AnthropicAdapter:
    def __init__(self, *, use_sdk_span: bool) -> None:
        # Set by the instrumentor once it has hooked the SDK's span finishing.
        self.use_sdk_span = use_sdk_span
        self.capture = capture_content()  # read once, when instrumenting
        self._clients = PerClient()
        self._stream_types: tuple[type, ...] | None = None

    def is_stream(self, result: Any) -> bool:
        if self._stream_types is None:
            import anthropic

            self._stream_types = (anthropic.Stream, anthropic.AsyncStream)
        return isinstance(result, self._stream_types)

    def _client_facts(self, client: Any) -> tuple[str | None, int | None, str, bool]:
        """(host, port, provider, makes its own spans) of a client, worked out once."""
        facts: tuple[str | None, int | None, str, bool] | None = self._clients.get(id(client))
        if facts is None:
            host, port = server_of(client)
            facts = (host, port, provider_for(client), sdk_traces(client))
            self._clients.remember(client, facts)
        return facts

    def read_request(self, client: Any, options: Any) -> Request | None:
        method = getattr(options, "method", "")
        if method != "post" and str(method).lower() != "post":
            return None
        if not _IS_MESSAGES[getattr(options, "url", "")]:
            return None
        body = json_body(options)
        host, port, provider, traced = self._client_facts(client)
        model = body.get("model")
        request = Request(
            operation="chat",
            provider=provider,
            model=model if type(model) is str else None,
            endpoint="/v1/messages",
            stream=body.get("stream") is True,
            server_address=host,
            server_port=port,
            body=body,
            defer_span=self.use_sdk_span and traced,
            capture_content=self.capture,
        )
        if self.capture and "messages" in body:  # serialised now: messages may change later
            request.attributes = {sc.GEN_AI_INPUT_MESSAGES: content_json(body["messages"])}
        return request

    def request_attributes(self, request: Request) -> dict[str, AttributeValue]:
        return request_attributes(request.body)

    def max_output_tokens(self, request: Request) -> int | None:
        value = request.body.get("max_tokens")
        return value if type(value) is int else None

    def read_response(self, call: Call, request: Request, response: Any) -> TokenUsage | None:
        if response is None:
            return None
        reason = field(response, "stop_reason")
        usage = field(response, "usage")
        call.set_response(
            model=field(response, "model") or None,
            response_id=field(response, "id") or None,
            finish_reasons=[str(reason)] if reason else None,
            service_tier=field(usage, "service_tier"),
        )
        if request.capture_content:
            capture_output(call, request, _text(response))
        if usage is None:
            return _estimate(request, _text(response))
        return from_anthropic(usage)

    def keep_response(self, request: Request, response: Any) -> Any:
        kept = keep_fields(request, response, "model", "id", "stop_reason")
        return response if kept is None else kept  # the whole response: its text is read too

    def estimate_input(self, request: Request) -> int:
        return _estimate_input(request)

    def stream_state(self, request: Request) -> StreamState:
        return _MessagesStream(request)


def _text(message: Any) -> str:
    parts = []
    for block in field(message, "content") or ():
        text = field(block, "text") or field(block, "thinking")
        if isinstance(text, str):
            parts.append(text)
    return "".join(parts)


def _estimate_input(request: Request) -> int:
    body = request.body
    tokens = count_messages(body.get("messages"), request.model)
    system = body.get("system")
    if isinstance(system, str):
        tokens += count_text(system, request.model)
    elif isinstance(system, list):
        tokens += sum(count_text(str(field(b, "text") or ""), request.model) for b in system)
    return tokens


def _estimate(request: Request, output_text: str) -> TokenUsage:
    return TokenUsage(
        input=_estimate_input(request),
        output=count_text(output_text, request.model),
        source="estimated",
    )


class _MessagesStream(StreamState):
    """message_start carries input usage; message_delta carries cumulative final usage."""

    __slots__ = ("delta_usage", "message", "reason", "request", "text")

    def __init__(self, request: Request) -> None:
        self.request = request
        self.message: Any = None
        self.delta_usage: Any = None
        self.reason: str | None = None
        self.text: list[str] = []

    def event(self, event: Any) -> bool:
        kind = event.type
        if kind == "content_block_delta":
            delta = event.delta
            piece = getattr(delta, "text", None) or getattr(delta, "thinking", None)
            if piece:
                self.text.append(piece)
        elif kind == "message_start":
            self.message = event.message
        elif kind == "message_delta":
            self.delta_usage = event.usage
            reason = getattr(event.delta, "stop_reason", None)
            if reason:
                self.reason = reason
        return False

    def finish(self, call: Call, error: BaseException | None) -> TokenUsage | None:
        message = self.message
        start_usage = field(message, "usage")
        call.set_response(
            model=field(message, "model") or None,
            response_id=field(message, "id") or None,
            finish_reasons=[self.reason] if self.reason else None,
            service_tier=field(start_usage, "service_tier"),
        )
        capture_output(call, self.request, "".join(self.text))
        if start_usage is None:
            return _estimate(self.request, "".join(self.text))
        merged: dict[str, Any] = {key: field(start_usage, key) for key in _USAGE_KEYS}
        delta = self.delta_usage
        if delta is None:
            # Cut off before the final usage: input as reported, output counted by us.
            merged["output_tokens"] = count_text("".join(self.text), self.request.model)
            return from_anthropic(merged, source="estimated")
        for key in _USAGE_KEYS:
            value = field(delta, key)
            if value is not None:  # message_delta totals are cumulative: they replace
                merged[key] = value
        merged["output_tokens"] = field(delta, "output_tokens")
        return from_anthropic(merged)


# --- hooks into anthropic 2.x's own tracing -----------------------------------------------
def finish_api_call_span_hook(
    wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any
) -> Any:
    """Before the SDK ends its call span: adopt it, and meter non-streamed calls onto it."""
    record: Callable[[], None] | None = None
    call: Call | None = None
    span = None
    try:
        active = ACTIVE_CALL.get()
        span = args[1] if len(args) > 1 else kwargs.get("span")
        result = args[2] if len(args) > 2 else kwargs.get("result")
        if active is not None and span is not None:
            call, request, adapter = active
            call.adopt(span)
            if call.span is span:
                error = getattr(result, "error", None)
                data = getattr(result, "data", None)
                if error is not None:
                    call.end(call.salvaged, error)
                elif data is not None and (
                    adapter.is_stream(data) or (request.stream and hasattr(data, "parse"))
                ):
                    # Streamed (raw or not): ended by the SDK's StreamedMessage.end hook.
                    _span_calls[id(span)] = call
                elif data is not None and call.recorder.background and not is_raw(data):
                    record = functools.partial(complete, call, request, adapter, data)
                elif data is not None:
                    complete(call, request, adapter, data)
    except Exception as exc:
        log_once("anthropic.finish_api_call_span", exc)
    if record is None or call is None:
        return wrapped(*args, **kwargs)
    return _holding_end(call, span, record, wrapped, args, kwargs)


def streamed_message_end_hook(
    wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any
) -> Any:
    """Before the SDK ends a streamed call's span: finish our call with what was seen."""
    record: Callable[[], None] | None = None
    call: Call | None = None
    span = None
    try:
        span = getattr(instance, "_span", None)
        call = _span_calls.pop(id(span), None) if span is not None else None
        if call is not None and not call.ended:
            error = kwargs.get("error", args[1] if len(args) > 1 else None)
            error = error if isinstance(error, BaseException) else None
            raised = _raised_type(error)
            if raised is not None:  # the user gets the client's wrapper, not this error
                call.mark_error(raised, str(error))
                error = None
            if call.finisher is not None and error is None and call.recorder.background:
                record = functools.partial(call.finisher.finish, None)
            elif call.finisher is not None:
                call.finisher.finish(error)
            else:  # a raw stream whose .parse() we have not seen: use the SDK's snapshot
                call.end(_snapshot_usage(call, instance), error)
    except Exception as exc:
        log_once("anthropic.StreamedMessage.end", exc)
    if record is None or call is None:
        return wrapped(*args, **kwargs)
    return _holding_end(call, span, record, wrapped, args, kwargs)


def _holding_end(
    call: Call,
    span: Any,
    record: Callable[[], None],
    wrapped: Callable[..., Any],
    args: Any,
    kwargs: Any,
) -> Any:
    """Background mode: the SDK writes its attributes and "ends" its span, but we hold that
    end; ``record`` then writes ours on the recording thread and ends the span at the time
    the SDK ended it. The caller pays for neither our reading, pricing nor attributes."""
    held = hold_end(span)
    if held is None:  # a span that takes no attribute: write ours before the SDK ends it
        _record_safely(record)
        return wrapped(*args, **kwargs)
    try:
        return wrapped(*args, **kwargs)
    finally:
        release_end(call, span, held)
        _record_safely(record)


def _record_safely(record: Callable[[], None]) -> None:
    try:
        record()
    except Exception as exc:
        log_once("anthropic.held_end", exc)


def _raised_type(error: BaseException | None) -> str | None:
    """The type the user will see for a transport ``error`` the SDK's span saw first.

    The SDK's span sees a stream's transport failure at the body, before the client turns
    it into its own error (``APIConnectionError``, ``APITimeoutError``; anthropic >= 2.17).
    """
    if error is None or not _wraps_stream_errors():
        return None
    import anthropic
    import httpx2

    if isinstance(error, anthropic.AnthropicError):
        return None
    if isinstance(error, httpx2.TimeoutException):
        return anthropic.APITimeoutError.__qualname__
    return anthropic.APIConnectionError.__qualname__


@functools.cache
def _wraps_stream_errors() -> bool:
    from anthropic import _streaming

    return hasattr(_streaming, "iter_response_bytes")


def _snapshot_usage(call: Call, observer: Any) -> TokenUsage | None:
    shared = getattr(observer, "_shared_snapshot", None)
    message = shared() if shared is not None else getattr(observer, "_snapshot", None)
    if message is None:
        return None
    usage = field(message, "usage")
    call.set_response(
        model=field(message, "model") or None,
        response_id=field(message, "id") or None,
        service_tier=field(usage, "service_tier"),
    )
    if usage is None:
        return None
    complete = bool(getattr(observer, "_has_message_delta", False))
    return from_anthropic(usage, source="provider" if complete else "estimated")
