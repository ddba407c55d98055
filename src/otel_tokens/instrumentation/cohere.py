"""Cohere: reads the ``cohere`` v2 client's requests and responses (``ClientV2``,
``AsyncClientV2``).

Non-streamed calls pass through the HTTP client's ``request(path, *, method, json=...)``,
which returns the ``httpx`` response: ``v2/chat``, ``v2/embed`` and ``v2/rerank`` are
metered (the v1 paths of ``cohere.Client`` are not). A chat stream is ``V2Client.chat_stream``
(``AsyncV2Client.chat_stream``), a generator of parsed events that sends its request when
first pulled; the core replaces it with a watching one. Its ``message-end`` event carries the
usage.

Billed: ``usage.billed_units`` (chat), ``meta.billed_units`` (embed, rerank), never
``usage.tokens``. Rerank's search units are the ``search_units`` bucket, priced where a price
file has a ``search_units_kcount`` rate and unpriced otherwise (genai-prices has none).
Classifications and images have no bucket: such a call carries them on the span and is
unpriced, said so by ``gen_ai.billing.pricing_status``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from opentelemetry.util.types import AttributeValue

from .. import semconv as sc
from ..counting import count_messages, count_text, estimate_source
from ..usage import TokenUsage, cohere_units, from_cohere
from ..usage import read_field as field
from ._adapter import Request, ResponseFacts, StreamState
from ._common import PerClient, capture_content, output_attributes

COHERE = "cohere"
CLASSIFICATIONS = "cohere.billed_units.classifications"
IMAGES = "cohere.billed_units.images"

_PATHS = {"v2/chat": "chat", "v2/embed": "embeddings", "v2/rerank": "rerank"}
_OMITTED = (type(None), type(...))


def _server_of(client: Any, base_url: Any = None) -> tuple[str | None, int | None]:
    try:
        url = client.get_base_url(base_url)
        parts = urlsplit(url)
        return parts.hostname, parts.port
    except Exception:  # a client without a base URL we can read
        return None, None


_SERVERS = PerClient()


def _server(client: Any, base_url: Any = None) -> tuple[str | None, int | None]:
    """The server of ``client``'s requests (worked out once per client, unless the call
    names its own base URL)."""
    if base_url is not None:
        return _server_of(client, base_url)
    found: tuple[str | None, int | None] | None = _SERVERS.get(id(client))
    if found is None:
        found = _server_of(client)
        _SERVERS.remember(client, found)
    return found


def _copy(body: Any) -> dict[str, Any]:
    """The request's fields that were given (one level deep: a chat loop appends to the
    very list it sent)."""
    if not isinstance(body, dict):
        return {}
    return {
        k: (list(v) if type(v) is list else v)
        for k, v in body.items()
        if v is not None and type(v).__name__ != "ellipsis"
    }


class CohereAdapter:
    def __init__(self, *, library_span: bool = False) -> None:
        self.capture = capture_content()  # read once, when instrumenting

    def read_request(self, client: Any, args: tuple[Any, ...], kwargs: Any) -> Request | None:
        if "messages" in kwargs and "path" not in kwargs:  # V2Client.chat_stream(**kwargs)
            wrapper = getattr(client, "_client_wrapper", None)
            http = getattr(wrapper, "httpx_client", None)
            host, port = _server(http) if http is not None else (None, None)
            body = _copy(kwargs)
            body.pop("request_options", None)  # headers (keys), timeouts: not the request's
            model = body.get("model")
            return Request(
                operation="chat",
                provider=COHERE,
                model=model if isinstance(model, str) else None,
                endpoint="v2/chat",
                stream=True,
                server_address=host,
                server_port=port,
                body=body,
                capture_content=self.capture,
            )
        path = kwargs.get("path", args[0] if args else None)
        operation = _PATHS.get(path) if isinstance(path, str) else None
        if operation is None:
            return None
        body = _copy(kwargs.get("json"))
        if body.get("stream") is True:  # streamed through chat_stream, metered there
            return None
        model = body.get("model")
        host, port = _server(client, kwargs.get("base_url"))
        return Request(
            operation=operation,
            provider=COHERE,
            model=model if isinstance(model, str) else None,
            endpoint=path,
            server_address=host,
            server_port=port,
            body=body,
            capture_content=self.capture,
        )

    def request_attributes(self, request: Request) -> dict[str, AttributeValue]:
        attrs: dict[str, AttributeValue] = {}
        body = request.body
        value = body.get("max_tokens")
        if type(value) is int:
            attrs[sc.GEN_AI_REQUEST_MAX_TOKENS] = value
        for key, name in (
            ("temperature", sc.GEN_AI_REQUEST_TEMPERATURE),
            ("p", sc.GEN_AI_REQUEST_TOP_P),
        ):
            value = body.get(key)
            if type(value) is float or type(value) is int:
                attrs[name] = float(value)
        return attrs

    def max_output_tokens(self, request: Request) -> int | None:
        if request.operation != "chat":
            return 0
        value = request.body.get("max_tokens")
        return value if type(value) is int else None

    def estimate_input(self, request: Request) -> int:
        body, model = request.body, request.model
        if request.operation == "chat":
            return count_messages(_plain(body.get("messages")), model)
        texts = body.get("texts") or body.get("documents") or ()
        total = sum(count_text(t, model) for t in texts if isinstance(t, str))
        return total + count_text(str(body.get("query") or ""), model)

    def read_response(self, request: Request, response: Any) -> ResponseFacts:
        status = getattr(response, "status_code", 200)
        if status >= 400:  # the client raises from it after request returns
            return ResponseFacts(error=(str(status), f"HTTP {status}"))
        data = response.json() if hasattr(response, "json") else response
        usage = field(data, "usage")
        if usage is None:
            usage = field(data, "meta")
        reason = field(data, "finish_reason")
        text = _message_text(data) if request.capture_content else ""
        return _facts(
            request,
            usage,
            response_id=field(data, "id"),
            reasons=(str(reason),) if reason else (),
            text=text,
        )

    def stream_state(self, request: Request) -> StreamState:
        return _ChatStream(request)


def _facts(
    request: Request,
    usage: Any,
    *,
    response_id: Any,
    reasons: tuple[str, ...],
    text: str,
) -> ResponseFacts:
    attributes: dict[str, AttributeValue] = dict(output_attributes(request, text) or {})
    tokens: TokenUsage | None = None
    if usage is not None:
        units = cohere_units(usage)
        if units.classifications or units.images:
            # Units no bucket holds have no rate we can read: the call is unpriced, and says
            # what it billed.
            if units.classifications:
                attributes[CLASSIFICATIONS] = units.classifications
            if units.images:
                attributes[IMAGES] = units.images
            billed = from_cohere(usage)
            attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] = billed.input_total
            attributes[sc.GEN_AI_USAGE_OUTPUT_TOKENS] = billed.output_total
            attributes[sc.BILLING_PRICING_STATUS] = sc.STATUS_UNPRICED
        else:
            tokens = from_cohere(usage)
    return ResponseFacts(
        usage=tokens,
        response_id=response_id if isinstance(response_id, str) and response_id else None,
        finish_reasons=reasons,
        attributes=attributes or None,
    )


def _plain(messages: Any) -> list[dict[str, Any]]:
    """Messages as dicts (the SDK accepts its models too) for counting."""
    found = []
    for message in messages or ():
        if isinstance(message, dict):
            found.append(message)
            continue
        dump = getattr(message, "dict", None) or getattr(message, "model_dump", None)
        if dump is not None:
            try:
                found.append(dump())
            except Exception:
                continue
    return found


def _message_text(data: Any) -> str:
    content = field(data, "message", "content") or ()
    return "".join(t for c in content if isinstance(t := field(c, "text"), str))


class _ChatStream(StreamState):
    """``chat_stream`` events: ``message-start`` (the id), ``content-delta`` (the text),
    ``message-end`` (finish reason and usage). A stream cut before ``message-end`` is
    counted locally, the prompt and the text received, with tiktoken's ``o200k_base``
    standing in for Cohere's tokenizer, marked estimated."""

    __slots__ = ("end", "request", "response_id", "texts")

    def __init__(self, request: Request) -> None:
        self.request = request
        self.texts: list[str] = []
        self.response_id: Any = None
        self.end: Any = None

    def event(self, event: Any) -> bool:
        kind = field(event, "type")
        if kind == "content-delta":
            text = field(event, "delta", "message", "content", "text")
            if isinstance(text, str):
                self.texts.append(text)
        elif kind == "message-end":
            self.end = event
        elif kind == "message-start":
            self.response_id = field(event, "id")
        return False

    def finish(self, error: BaseException | None) -> ResponseFacts:
        request, text = self.request, "".join(self.texts)
        if self.end is not None:
            reason = field(self.end, "delta", "finish_reason")
            return _facts(
                request,
                field(self.end, "delta", "usage"),
                response_id=self.response_id,
                reasons=(str(reason),) if reason else (),
                text=text,
            )
        if self.response_id is None and not self.texts and error is None:
            return ResponseFacts()  # never started: nothing to bill
        model = request.model
        usage = TokenUsage(
            input=count_messages(_plain(request.body.get("messages")), model),
            output=count_text(text, model),
            source=estimate_source(model),
        )
        return ResponseFacts(
            usage=usage,
            response_id=self.response_id if isinstance(self.response_id, str) else None,
            attributes=output_attributes(request, text),
        )
