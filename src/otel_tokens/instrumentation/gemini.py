"""Gemini: reads the ``google-genai`` client's requests and responses (Gemini Developer API
and Vertex AI, ``vertexai=True``).

Every API call of the client passes through ``BaseApiClient.request`` (sync) or
``async_request`` with ``(http_method, path, request_dict, http_options)``: the core hands
the adapter the second argument, the resource path (``models/{m}:generateContent``,
``publishers/google/models/{m}:embedContent``). That is enough to know the call, its model
and its provider; the request body is out of the adapter's reach (see docs/gemini.md).

Covered: ``models.generate_content`` and chats (``client.chats``, which call it),
``models.embed_content`` (``embedContent``, ``batchEmbedContents``, Vertex ``predict`` of
embedding models), sync and ``client.aio``. Streams (``generate_content_stream``) pass
through ``request_streamed``, whose plain generator the core cannot watch yet: they are not
metered, and the log says so once when the library is instrumented.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opentelemetry.util.types import AttributeValue

from .. import semconv as sc
from ..counting import count_text, estimate_source
from ..usage import TokenUsage, from_gemini
from ..usage import read_count as count
from ..usage import read_field as field
from ._adapter import Request, ResponseFacts, StreamState
from ._common import PerClient, PerURL, capture_content, output_attributes

if TYPE_CHECKING:
    from ..pricing import Processing

_log = logging.getLogger("otel_tokens")

GEMINI_API = "gcp.gemini"
VERTEX_AI = "gcp.vertex_ai"

# Our operation names by the API method at the end of the path.
_METHODS = {
    "generateContent": "generate_content",
    "streamGenerateContent": "generate_content",
    "embedContent": "embeddings",
    "batchEmbedContents": "embeddings",
    "predict": "embeddings",  # only for embedding models: Imagen's predict is not tokens
}

# Vertex AI's usageMetadata.trafficType, as our processing tier. ON_DEMAND_OFFPEAK and
# PROVISIONED_THROUGHPUT have none (see `_UNBILLED_TRAFFIC`).
_TRAFFIC: dict[str, Processing] = {
    "ON_DEMAND": "standard",
    "ON_DEMAND_PRIORITY": "priority",
    "ON_DEMAND_FLEX": "flex",
}
# Traffic our processing tiers cannot name: provisioned throughput is paid for by the hour
# of reserved capacity, not per token, and off-peak has its own rates. Pricing either at the
# on-demand rates would be a guess that looks exact, so such calls carry their token totals
# on the span and no price (docs/gemini.md).
_UNBILLED_TRAFFIC = frozenset(("PROVISIONED_THROUGHPUT", "ON_DEMAND_OFFPEAK"))
# The Gemini Developer API names the tier that served a call in a response header.
# Grounding with Google Search: Gemini 1.x and 2.x models are billed per grounded prompt
# (a response whose candidates searched counts once), later ones per search query
# (ai.google.dev/gemini-api/docs/pricing; Vertex AI bills the same way). genai-prices has
# the rates under web_searches_kcount ($35 and $14 per thousand).
_PER_GROUNDED_PROMPT = re.compile(r"(?:.*/)?gemini-[12][.-]")

_TIER_HEADER = "x-gemini-service-tier"
_TIERS: dict[str, Processing] = {
    "standard": "standard",
    "flex": "flex",
    "priority": "priority",
}


def _parse_path(path: str) -> tuple[str, str | None] | None:
    """(operation, model) of a metered API path, or None (``countTokens``, files, caches,
    a GET of a model, Imagen's ``predict``...)."""
    resource, sep, method = path.rpartition(":")
    if not sep or method not in _METHODS or "/" in method:
        return None
    # publishers/google/models/gemini-2.5-flash, models/gemini-2.5-flash, tunedModels/x,
    # projects/p/locations/l/endpoints/123 (a tuned or deployed model: its resource name).
    _, found, model = resource.rpartition("models/")
    name = model if found else resource
    if method == "predict" and "embedding" not in name:
        return None
    return _METHODS[method], (name or None)


_PATHS = PerURL(_parse_path)


def provider_for(client: Any) -> str:
    return VERTEX_AI if getattr(client, "vertexai", False) else GEMINI_API


def _server_of(client: Any) -> tuple[str | None, int | None]:
    options = getattr(client, "_http_options", None)
    # An HttpOptions model; a dict in releases before 1.5.
    base_url = (
        options.get("base_url") if isinstance(options, dict) else getattr(options, "base_url", None)
    )
    if not isinstance(base_url, str):
        return None, None
    parts = urlsplit(base_url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return parts.hostname, port


def processing_of(traffic_type: Any, tier_header: Any) -> Processing | None:
    """Our processing tier from Vertex's ``trafficType`` or the Gemini API's tier header
    (None: as requested)."""
    if isinstance(traffic_type, str):
        found = _TRAFFIC.get(traffic_type.rsplit(".", 1)[-1].upper())
        if found is not None:
            return found
    if isinstance(tier_header, str):
        return _TIERS.get(tier_header.strip().lower())
    return None


def _header(headers: Any, name: str) -> Any:
    if not headers:
        return None
    value = headers.get(name)
    if value is None:  # the client keeps the server's spelling
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value


def _json_of(response: Any) -> Any:
    """The decoded body of the client's ``HttpResponse`` (or an already decoded body)."""
    body = getattr(response, "body", response)
    if isinstance(body, (str, bytes)):
        return json.loads(body) if body else None
    return body


def _text(data: Any) -> str:
    parts = []
    for candidate in field(data, "candidates") or ():
        for part in field(candidate, "content", "parts") or ():
            text = field(part, "text")
            if isinstance(text, str) and not field(part, "thought"):
                parts.append(text)
    return "".join(parts)


def _embedding_usage(data: Any) -> TokenUsage | None:
    """Vertex AI's ``predict`` of text-embedding models: a token count per instance."""
    predictions = field(data, "predictions")
    if not isinstance(predictions, list):
        return None
    counts = [field(p, "embeddings", "statistics", "token_count") for p in predictions]
    if not counts or any(c is None for c in counts):
        return None
    return TokenUsage(
        input=sum(count(p, "embeddings", "statistics", "token_count") for p in predictions)
    )


_warned: set[str] = set()


def _warn_once(kind: str, message: str) -> None:
    if kind not in _warned:
        _warned.add(kind)
        _log.warning(message)


class GeminiAdapter:
    def __init__(self, *, library_span: bool = False) -> None:
        self.capture = capture_content()  # read once, when instrumenting
        self._clients = PerClient()

    def _client_facts(self, client: Any) -> tuple[str | None, int | None, str]:
        facts: tuple[str | None, int | None, str] | None = self._clients.get(id(client))
        if facts is None:
            host, port = _server_of(client)
            facts = (host, port, provider_for(client))
            self._clients.remember(client, facts)
        return facts

    def read_request(self, client: Any, args: tuple[Any, ...], kwargs: Any) -> Request | None:
        # ``BaseApiClient.request(http_method, path, request_dict, http_options=None)``
        options = kwargs.get("path", args[1] if len(args) > 1 else None)
        if not isinstance(options, str):
            return None
        parsed = _PATHS[options]
        if parsed is None:
            return None
        path = options.split("?", 1)[0]
        operation, model = parsed
        host, port, provider = self._client_facts(client)
        body = kwargs.get("request_dict", args[2] if len(args) > 2 else None)
        return Request(
            operation=operation,
            provider=provider,
            model=model,
            endpoint=path.rpartition(":")[2],
            stream=path.endswith(":streamGenerateContent"),
            server_address=host,
            server_port=port,
            # One level deep: a chat's history list grows after the call.
            body=(
                {k: (list(v) if type(v) is list else v) for k, v in body.items()}
                if isinstance(body, dict)
                else {}
            ),
            capture_content=self.capture,
        )

    def request_attributes(self, request: Request) -> dict[str, AttributeValue]:
        config = request.body.get("generationConfig")
        if not isinstance(config, dict):
            return {}
        attrs: dict[str, AttributeValue] = {}
        limit = config.get("maxOutputTokens")
        if type(limit) is int:
            attrs[sc.GEN_AI_REQUEST_MAX_TOKENS] = limit
        for key, name in (
            ("temperature", sc.GEN_AI_REQUEST_TEMPERATURE),
            ("topP", sc.GEN_AI_REQUEST_TOP_P),
        ):
            value = config.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                attrs[name] = float(value)
        return attrs

    def max_output_tokens(self, request: Request) -> int | None:
        if request.operation == "embeddings":
            return 0
        config = request.body.get("generationConfig")
        value = config.get("maxOutputTokens") if isinstance(config, dict) else None
        return value if type(value) is int else None

    def estimate_input(self, request: Request) -> int:
        return 0  # the prompt is in the request body, which the adapter does not see

    def read_response(self, request: Request, response: Any) -> ResponseFacts:
        data = _json_of(response)
        if not data:
            return ResponseFacts()
        usage_metadata = field(data, "usageMetadata")
        traffic = field(usage_metadata, "trafficType")
        if isinstance(traffic, str) and traffic.upper() in _UNBILLED_TRAFFIC:
            return self._unbilled(request, data, usage_metadata, traffic.upper())
        if usage_metadata is not None:
            usage: TokenUsage | None = from_gemini(usage_metadata)
        else:
            usage = _embedding_usage(data)
        candidates = field(data, "candidates") or ()
        reasons = tuple(str(r).lower() for c in candidates if (r := field(c, "finishReason")))
        model = field(data, "modelVersion") or None
        if usage is not None:
            usage = _with_searches(usage, model or request.model, (data,))
        return ResponseFacts(
            usage=usage,
            model=model,
            response_id=field(data, "responseId") or None,
            finish_reasons=reasons,
            processing=processing_of(
                traffic, _header(getattr(response, "headers", None), _TIER_HEADER)
            ),
            attributes=output_attributes(request, _text(data)) if request.capture_content else None,
        )

    def _unbilled(
        self, request: Request, data: Any, usage_metadata: Any, traffic: str
    ) -> ResponseFacts:
        """A call on traffic that is not billed per token at a rate we know: its token
        totals go on the span (the conventions' own attributes), and no billing usage, so
        that nothing prices it as on-demand traffic."""
        _warn_once(
            traffic,
            f"otel-tokens: Vertex AI {traffic} traffic is not billed per token at on-demand "
            "rates; its calls carry token totals but no cost (see docs/gemini.md)",
        )
        tokens = from_gemini(usage_metadata)
        return ResponseFacts(
            model=field(data, "modelVersion") or None,
            response_id=field(data, "responseId") or None,
            attributes={
                sc.GEN_AI_USAGE_INPUT_TOKENS: tokens.input_total,
                sc.GEN_AI_USAGE_OUTPUT_TOKENS: tokens.output_total,
                sc.BILLING_PRICING_STATUS: sc.STATUS_UNPRICED,
            },
        )

    def stream_state(self, request: Request) -> StreamState:
        return _ContentStream(self, request)


class _ContentStream(StreamState):
    """``streamGenerateContent`` chunks (the client's ``HttpResponse`` objects, one JSON
    body each). The usage is in the last chunk: per chunk only its body (a string) is kept,
    parsed at the end. A stream cut before its usage is counted from the text it had, with
    ``o200k_base`` standing in for Gemini's own tokenizer (which no local library has), and
    marked estimated."""

    __slots__ = ("adapter", "bodies", "last", "request")

    def __init__(self, adapter: GeminiAdapter, request: Request) -> None:
        self.adapter = adapter
        self.request = request
        self.bodies: list[Any] = []
        self.last: Any = None

    def event(self, chunk: Any) -> bool:
        self.last = chunk
        self.bodies.append(getattr(chunk, "body", chunk))
        return False

    def finish(self, error: BaseException | None) -> ResponseFacts:
        request = self.request
        for body in reversed(self.bodies):
            data = _json_of(body)
            if field(data, "usageMetadata") is None:
                continue
            # The last chunk's usage totals the call; reported, but if the stream stopped
            # before its finish reason the counts may be short.
            facts = self.adapter.read_response(request, _with_headers(data, self.last))
            if facts.usage is not None:  # the searches of every chunk, not the last one's
                usage = _with_searches(
                    facts.usage, facts.model or request.model, map(_json_of, self.bodies)
                )
                facts = _replace_usage(facts, usage)
            ended = any(field(c, "finishReason") for c in field(data, "candidates") or ())
            if ended or facts.usage is None:
                return facts
            return _replace_usage(facts, facts.usage.with_source("estimated"))
        chunks = [_json_of(body) for body in self.bodies]
        text = "".join(_text(d) for d in chunks if d)
        model = request.model
        prompt = _prompt_text(request.body)
        source = estimate_source(model)
        usage = TokenUsage(
            input=count_text(prompt, model), output=count_text(text, model), source=source
        )
        first = next((d for d in chunks if d), None)
        return ResponseFacts(
            usage=usage,
            model=field(first, "modelVersion") or None,
            response_id=field(first, "responseId") or None,
            attributes=output_attributes(request, text),
        )


def _with_searches(usage: TokenUsage, model: str | None, bodies: Iterable[Any]) -> TokenUsage:
    """``usage`` with the Google Search grounding requests the bodies' candidates made, as
    billed for ``model``: one per grounded prompt, or one per search query."""
    queries, grounded = 0, False
    for data in bodies:
        for candidate in field(data, "candidates") or ():
            searched = field(field(candidate, "groundingMetadata"), "webSearchQueries")
            if searched:
                grounded = True
                queries += len(searched)
    if not grounded:
        return usage
    per_prompt = model is not None and _PER_GROUNDED_PROMPT.match(model) is not None
    return replace(usage, web_search_requests=1 if per_prompt else queries)


def _with_headers(data: Any, chunk: Any) -> Any:
    """``data`` as a response whose headers are the stream's (the tier header)."""
    headers = getattr(chunk, "headers", None)
    return _Parsed(data, headers) if headers else data


class _Parsed:
    __slots__ = ("body", "headers")

    def __init__(self, body: Any, headers: Any) -> None:
        self.body = body
        self.headers = headers


def _replace_usage(facts: ResponseFacts, usage: TokenUsage) -> ResponseFacts:
    return replace(facts, usage=usage)


def _prompt_text(body: Any) -> str:
    parts = []
    for content in field(body, "contents") or ():
        for part in field(content, "parts") or ():
            text = field(part, "text")
            if isinstance(text, str):
                parts.append(text)
    return "".join(parts)
