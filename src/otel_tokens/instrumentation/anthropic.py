"""Anthropic: reads the ``anthropic`` client's requests, responses and stream events.

Covers ``messages.create`` with and without ``stream=True``, ``messages.stream()``,
``messages.parse``, beta messages, sync and async, raw-response variants, and the Bedrock
and Vertex clients.

anthropic 2.x makes its own OpenTelemetry span per API call (scope
``com.anthropic.sdk.python``) with usage on it. Two spans with usage would double-count in
any backend that sums spans, so when that span exists the core puts our cost and billing
attributes on it (through two hooks of the SDK's tracing, see `LibrarySpan` in the
description) and makes no span of its own; this adapter reads those hooks' arguments.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from opentelemetry.util.types import AttributeValue

from .. import semconv as sc
from ..counting import count_messages, count_text, estimate_source
from ..usage import TokenUsage, from_anthropic
from ..usage import read_field as field
from ._adapter import Request, ResponseFacts, StreamState
from ._common import (
    PerClient,
    PerURL,
    api_request_options,
    capture_content,
    content_json,
    json_body,
    output_attributes,
    request_attributes,
    server_of,
)

if TYPE_CHECKING:
    from ..pricing import Processing

_USAGE_KEYS = (
    "input_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "cache_creation",
    "server_tool_use",
    "output_tokens_details",
)


def processing_of_tier(tier: Any) -> Processing | None:
    """Anthropic's ``usage.service_tier`` as our processing tier (None: unknown)."""
    return _TIERS.get(tier) if isinstance(tier, str) else None


_TIERS: dict[str, Processing] = {"standard": "standard", "priority": "priority", "batch": "batch"}


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
    """True when this client makes its own call spans (anthropic 2.x, not switched off, and
    a tracer to make them with)."""
    try:
        options = client.open_telemetry
        return bool(options["traces"]["enabled"]) and client._tracer is not None
    except Exception:
        return False


# Messages endpoints; count_tokens is free, and batches are billed by their own results.
_IS_MESSAGES = PerURL(lambda path: path.endswith("/messages"))


class AnthropicAdapter:
    def __init__(self, *, library_span: bool = False) -> None:
        # True once the instrumentor has hooked the SDK's span finishing (anthropic 2.x).
        self.use_sdk_span = library_span
        self.capture = capture_content()  # read once, when instrumenting
        self._clients = PerClient()

    def _client_facts(self, client: Any) -> tuple[str | None, int | None, str, bool]:
        """(host, port, provider, makes its own spans) of a client, worked out once."""
        facts: tuple[str | None, int | None, str, bool] | None = self._clients.get(id(client))
        if facts is None:
            host, port = server_of(client)
            facts = (host, port, provider_for(client), sdk_traces(client))
            self._clients.remember(client, facts)
        return facts

    def read_request(self, client: Any, args: tuple[Any, ...], kwargs: Any) -> Request | None:
        options = api_request_options(args, kwargs)
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

    def read_response(self, request: Request, response: Any) -> ResponseFacts:
        if response is None:
            return ResponseFacts()
        reason = field(response, "stop_reason")
        usage = field(response, "usage")
        return ResponseFacts(
            usage=_estimate(request, _text(response)) if usage is None else from_anthropic(usage),
            model=field(response, "model") or None,
            response_id=field(response, "id") or None,
            finish_reasons=(str(reason),) if reason else (),
            processing=processing_of_tier(field(usage, "service_tier")),
            attributes=(
                output_attributes(request, _text(response)) if request.capture_content else None
            ),
        )

    def estimate_input(self, request: Request) -> int:
        return _estimate_input(request)

    def stream_state(self, request: Request) -> StreamState:
        return _MessagesStream(request)

    # --- reading anthropic 2.x's own tracing hooks (a `LibrarySpanReader`) -----------------
    def finished_call(self, args: Any, kwargs: Any) -> tuple[Any, BaseException | None, Any]:
        """``finish_api_call_span(client, span, result)``: the span, and the call's error or
        data."""
        span = args[1] if len(args) > 1 else kwargs.get("span")
        result = args[2] if len(args) > 2 else kwargs.get("result")
        error = getattr(result, "error", None)
        return (
            span,
            error if isinstance(error, BaseException) else None,
            getattr(result, "data", None),
        )

    def finished_stream(self, instance: Any, args: Any, kwargs: Any) -> tuple[Any, Any]:
        """``StreamedMessage.end(self, error=None)``: its span, and the error it ended with."""
        return getattr(instance, "_span", None), kwargs.get(
            "error", args[1] if len(args) > 1 else None
        )

    def raised_type(self, error: BaseException | None) -> str | None:
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

    def stream_snapshot(self, request: Request, instance: Any) -> ResponseFacts:
        """The SDK's own accumulated message of a stream (a raw stream we never saw)."""
        shared = getattr(instance, "_shared_snapshot", None)
        message = shared() if shared is not None else getattr(instance, "_snapshot", None)
        if message is None:
            return ResponseFacts()
        usage = field(message, "usage")
        complete = bool(getattr(instance, "_has_message_delta", False))
        return ResponseFacts(
            usage=(
                None
                if usage is None
                else from_anthropic(usage, source="provider" if complete else "estimated")
            ),
            model=field(message, "model") or None,
            response_id=field(message, "id") or None,
            processing=processing_of_tier(field(usage, "service_tier")),
        )


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
        source=estimate_source(request.model),
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

    def finish(self, error: BaseException | None) -> ResponseFacts:
        message = self.message
        start_usage = field(message, "usage")
        text = "".join(self.text)
        return ResponseFacts(
            usage=self._usage(start_usage, text),
            model=field(message, "model") or None,
            response_id=field(message, "id") or None,
            finish_reasons=(self.reason,) if self.reason else (),
            processing=processing_of_tier(field(start_usage, "service_tier")),
            attributes=output_attributes(self.request, text),
        )

    def _usage(self, start_usage: Any, text: str) -> TokenUsage:
        if start_usage is None:
            return _estimate(self.request, text)
        merged: dict[str, Any] = {key: field(start_usage, key) for key in _USAGE_KEYS}
        delta = self.delta_usage
        if delta is None:
            # Cut off before the final usage: input as reported, output counted by us.
            merged["output_tokens"] = count_text(text, self.request.model)
            return from_anthropic(merged, source=estimate_source(self.request.model))
        for key in _USAGE_KEYS:
            value = field(delta, key)
            if value is not None:  # message_delta totals are cumulative: they replace
                merged[key] = value
        merged["output_tokens"] = field(delta, "output_tokens")
        return from_anthropic(merged)


@functools.cache
def _wraps_stream_errors() -> bool:
    from anthropic import _streaming

    return hasattr(_streaming, "iter_response_bytes")
