"""OpenAI: reads the ``openai`` client's requests, responses and stream events.

Covers Chat Completions (``create``, ``parse``, ``stream=True``, the ``.stream()`` helper),
Responses (``create``, ``parse``, ``stream()``, ``stream=True``), embeddings and legacy
completions, sync and async, their ``with_raw_response``/``with_streaming_response``
variants, ``AzureOpenAI`` and OpenAI-compatible servers at other base URLs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from opentelemetry.util.types import AttributeValue

from .. import semconv as sc
from ..counting import count_messages, count_text, estimate_source
from ..usage import TokenUsage, from_openai_chat, from_openai_responses
from ..usage import read_field as field
from ._adapter import Request, ResponseFacts, StreamState, TailState
from ._common import (
    MAX_TOKEN_KEYS,
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
from ._reconcile import reported_cost

if TYPE_CHECKING:
    from decimal import Decimal

    from ..pricing import Processing

INCLUDE_USAGE_ENV = "OTEL_TOKENS_OPENAI_INCLUDE_USAGE"
PROVIDER_ENV = "OTEL_TOKENS_OPENAI_PROVIDER"

_ENDPOINTS = {
    "/chat/completions": "chat",
    "/responses": "chat",
    "/completions": "text_completion",
    "/embeddings": "embeddings",
}
# gen_ai.provider.name of OpenAI-compatible APIs, by host suffix.
_HOST_PROVIDERS = (
    ("api.openai.com", "openai"),
    (".openai.azure.com", "azure.ai.openai"),
    (".services.ai.azure.com", "azure.ai.inference"),
    ("api.groq.com", "groq"),
    ("api.deepseek.com", "deepseek"),
    ("api.x.ai", "x_ai"),
    ("api.mistral.ai", "mistral_ai"),
    ("api.perplexity.ai", "perplexity"),
    ("generativelanguage.googleapis.com", "gcp.gemini"),
    ("aiplatform.googleapis.com", "gcp.vertex_ai"),
    ("api.together.xyz", "together"),
    ("api.together.ai", "together"),
    ("api.fireworks.ai", "fireworks"),
    ("openrouter.ai", "openrouter"),
    ("api.cohere.ai", "cohere"),
    ("api.cohere.com", "cohere"),
    ("bedrock-runtime", "aws.bedrock"),
)


# The metered endpoint a request path ends with (chat before completions), or None.
_ENDPOINT_OF = PerURL(lambda path: next((e for e in _ENDPOINTS if path.endswith(e)), None))


def provider_for(client: Any, host: str | None, override: str | None = None) -> str:
    """``gen_ai.provider.name`` for a client: Azure by class, others by base URL host."""
    if override:
        return override
    if hasattr(client, "_azure_deployment") or type(client).__name__.endswith("AzureOpenAI"):
        return "azure.ai.openai"
    runtime = getattr(client, "_provider_runtime", None)
    runtime_name = str(getattr(runtime, "name", "") or "").lower()
    if "bedrock" in runtime_name:
        return "aws.bedrock"
    if "vertex" in runtime_name:
        return "gcp.vertex_ai"
    if host:
        host = host.lower()
        for suffix, provider in _HOST_PROVIDERS:
            if host.endswith(suffix) or (suffix.endswith("-runtime") and suffix in host):
                return provider
    return "openai"  # an OpenAI-compatible server we do not know: override with the env var


def sends_usage_chunk(client: Any, host: str | None) -> bool:
    """True where the endpoint is known to honour ``stream_options.include_usage``: OpenAI's
    own API and Azure OpenAI. Another OpenAI-compatible server may reject the option, and a
    request of the user's must never fail because of us."""
    if hasattr(client, "_azure_deployment") or type(client).__name__.endswith("AzureOpenAI"):
        return True
    host = (host or "").lower()
    return host == "api.openai.com" or host.endswith(".openai.azure.com")


def include_usage_default(value: str | None) -> bool | None:
    """``OTEL_TOKENS_OPENAI_INCLUDE_USAGE``: true asks every server for the usage chunk,
    false none; unset (None) asks the endpoints `sends_usage_chunk` knows."""
    if value is None or not value.strip():
        return None
    return value.strip().lower() in ("1", "true", "yes", "on")


def processing_of_tier(tier: Any) -> Processing | None:
    """OpenAI's ``service_tier`` of a response as our processing tier (None: unknown)."""
    if not isinstance(tier, str):
        return None
    return _TIERS.get(tier.lower())


_TIERS: dict[str, Processing] = {
    "flex": "flex",
    "priority": "priority",
    "batch": "batch",
    "default": "standard",
    "standard": "standard",
    "auto": "standard",
    "scale": "standard",
}


class OpenAIAdapter:
    def __init__(self, *, library_span: bool = False, include_usage: bool | None = None) -> None:
        # The environment is read once, when instrumenting: not on every call.
        self.include_usage = (
            include_usage_default(os.environ.get(INCLUDE_USAGE_ENV))
            if include_usage is None
            else include_usage
        )
        self.capture = capture_content()
        self.provider_override = os.environ.get(PROVIDER_ENV) or None
        self._clients = PerClient()

    def _client_facts(self, client: Any) -> tuple[str | None, int | None, str, bool]:
        """(host, port, provider, asks for the usage chunk) of a client, worked out once."""
        facts: tuple[str | None, int | None, str, bool] | None = self._clients.get(id(client))
        if facts is None:
            host, port = server_of(client)
            usage_chunk = self.include_usage
            if usage_chunk is None:
                usage_chunk = sends_usage_chunk(client, host)
            facts = (host, port, provider_for(client, host, self.provider_override), usage_chunk)
            self._clients.remember(client, facts)
        return facts

    def read_request(self, client: Any, args: tuple[Any, ...], kwargs: Any) -> Request | None:
        options = api_request_options(args, kwargs)
        method = getattr(options, "method", "")
        if method != "post" and str(method).lower() != "post":
            return None
        endpoint: str | None = _ENDPOINT_OF[getattr(options, "url", "")]
        if endpoint is None:
            return None
        body = json_body(options)
        host, port, provider, usage_chunk = self._client_facts(client)
        model = body.get("model")
        tier = body.get("service_tier")
        processing: Processing = "standard"
        if tier in ("flex", "priority"):
            processing = tier
        request = Request(
            operation=_ENDPOINTS[endpoint],
            provider=provider,
            model=model if type(model) is str else None,
            endpoint=endpoint,
            stream=body.get("stream") is True,
            server_address=host,
            server_port=port,
            processing=processing,
            body=body,
            capture_content=self.capture,
        )
        if self.capture:  # serialised now: the user's message objects may change later
            content = body.get("messages", body.get("input", body.get("prompt")))
            if content is not None:
                request.attributes = {sc.GEN_AI_INPUT_MESSAGES: content_json(content)}
        if usage_chunk and request.stream and endpoint in ("/chat/completions", "/completions"):
            _include_usage(options, body, request)
        return request

    def request_attributes(self, request: Request) -> dict[str, AttributeValue]:
        attrs = request_attributes(request.body)
        tier = request.body.get("service_tier")
        if isinstance(tier, str):
            attrs[sc.OPENAI_REQUEST_SERVICE_TIER] = tier
        return attrs

    def max_output_tokens(self, request: Request) -> int | None:
        body = request.body
        if request.endpoint == "/embeddings":
            return 0  # embeddings produce no output tokens
        max_output = next(
            (v for k in MAX_TOKEN_KEYS if type(v := body.get(k)) is int),
            16 if request.endpoint == "/completions" else None,  # the legacy API's default
        )
        choices = body.get("n")
        if max_output and type(choices) is int and choices > 1:
            max_output *= choices  # every choice is billed
        return max_output

    def read_response(self, request: Request, response: Any) -> ResponseFacts:
        if response is None:
            return ResponseFacts()
        choices = field(response, "choices") or ()
        usage = field(response, "usage")
        if usage is not None:
            tokens = (
                from_openai_responses(usage)
                if request.endpoint == "/responses"
                else from_openai_chat(usage)
            )
        else:  # an OpenAI-compatible server that reports no usage: count it ourselves
            tokens = _estimate(request, _response_text(request.endpoint, response))
        return ResponseFacts(
            usage=tokens,
            provider_cost=_reported_cost(request, usage),
            model=field(response, "model") or None,
            response_id=field(response, "id") or None,
            finish_reasons=tuple(str(r) for c in choices if (r := field(c, "finish_reason"))),
            processing=processing_of_tier(field(response, "service_tier")),
            attributes=(
                output_attributes(request, _response_text(request.endpoint, response))
                if request.capture_content
                else None
            ),
        )

    def estimate_input(self, request: Request) -> int:
        """The prompt as pre-flight counts it (chat framing, tools and images as OpenAI
        counts them) for a budget reservation or the context-window guard."""
        body, model = request.body, request.model
        if model and request.endpoint in ("/chat/completions", "/responses"):
            from ..window import count_input

            try:
                if request.endpoint == "/chat/completions":
                    messages = body.get("messages")
                    return count_input(
                        model, messages, tools=body.get("tools"), provider=request.provider
                    )[0]
                return count_input(
                    model,
                    input=body.get("input"),
                    tools=body.get("tools"),
                    system=body.get("instructions"),
                    provider=request.provider,
                )[0]
            except Exception:  # a shape pre-flight cannot read: the plain count below
                pass
        return _estimate(request, "").input_total

    def stream_state(self, request: Request) -> StreamState:
        if request.endpoint == "/responses":
            return _ResponsesStream(request)
        if _usage_at_end(request):
            return _HiddenUsageTail(request) if request.injected_usage else _ChatTail(request)
        return _ChatStream(request)


class _VendorSDKAdapter(OpenAIAdapter):
    """A vendor's own SDK generated in the shape of ``openai``'s (a separate client with the
    same request method, options, stream classes and response shapes): read as the openai
    client is, with the vendor's ``gen_ai.provider.name`` whatever its base URL (a proxy's,
    a test server's). ``OTEL_TOKENS_OPENAI_PROVIDER`` is the openai client's, not theirs."""

    vendor: ClassVar[str]

    def __init__(self, *, library_span: bool = False, include_usage: bool | None = None) -> None:
        super().__init__(library_span=library_span, include_usage=include_usage)
        self.provider_override = self.vendor

    def stream_state(self, request: Request) -> StreamState:
        # Their streams end with the usage unasked: only the last chunks are read, as for an
        # OpenAI stream with include_usage.
        if request.endpoint in ("/chat/completions", "/completions") and _tail_suffices(request):
            return _HiddenUsageTail(request) if request.injected_usage else _ChatTail(request)
        return super().stream_state(request)


class GroqAdapter(_VendorSDKAdapter):
    """The ``groq`` SDK. Its streams carry the usage in the last chunk's ``x_groq.usage``
    without being asked (``stream_options.include_usage`` is not needed, so not injected)."""

    vendor = "groq"

    def stream_state(self, request: Request) -> StreamState:
        state = super().stream_state(request)
        return _XGroqStream(request) if type(state) is _ChatStream else state


class TogetherAdapter(_VendorSDKAdapter):
    """The ``together`` SDK (2.x and later, generated like openai's). Its streams carry the
    usage in the last chunk without being asked."""

    vendor = "together"


def _include_usage(options: Any, body: Mapping[str, Any], request: Request) -> None:
    """Ask for the usage chunk the user did not ask for, and hide it from them (reasoning
    tokens are in no text we could count)."""
    stream_options = body.get("stream_options")
    if isinstance(stream_options, Mapping) and "include_usage" in stream_options:
        return
    merged = dict(stream_options) if isinstance(stream_options, Mapping) else {}
    merged["include_usage"] = True
    new_body = {**body, "stream_options": merged}
    options.json_data = new_body
    request.body = new_body
    request.injected_usage = True


def _tail_suffices(request: Request) -> bool:
    """A stream that ends with its usage needs only its last chunks: one choice, and no
    reply text to capture."""
    if request.capture_content:
        return False
    choices = request.body.get("n")
    return not (type(choices) is int and choices > 1)


def _usage_at_end(request: Request) -> bool:
    """The stream ends with a usage chunk (``include_usage``, the user's or ours), and only
    its last chunks are needed (`_tail_suffices`)."""
    if not _tail_suffices(request):
        return False
    if request.injected_usage:
        return True
    options = request.body.get("stream_options")
    return isinstance(options, Mapping) and options.get("include_usage") is True


def _response_text(endpoint: str, response: Any) -> str:
    if endpoint == "/responses":
        parts = []
        for item in field(response, "output") or ():
            for content in field(item, "content") or ():
                text = field(content, "text")
                if isinstance(text, str):
                    parts.append(text)
        return "".join(parts)
    parts = []
    for choice in field(response, "choices") or ():
        text = field(choice, "message", "content") or field(choice, "text")
        if isinstance(text, str):
            parts.append(text)
    return "".join(parts)


def _estimate(request: Request, output_text: str, output: int | None = None) -> TokenUsage:
    """Count the request's prompt, and ``output_text`` (or take ``output`` as counted)."""
    body = request.body
    model = request.model
    tools = body.get("tools")
    tool_tokens = count_text(content_json(tools), model) if tools else 0
    if request.endpoint == "/chat/completions":
        prompt = count_messages(body.get("messages"), model) + tool_tokens
    elif request.endpoint == "/responses":
        prompt = count_messages(_as_messages(body.get("input")), model) + tool_tokens
        instructions = body.get("instructions")
        if isinstance(instructions, str):
            prompt += count_text(instructions, model)
    else:
        raw = body.get("prompt", body.get("input"))
        texts = raw if isinstance(raw, list) else [raw]
        prompt = sum(count_text(t, model) for t in texts if isinstance(t, str))
    if output is None:
        output = count_text(output_text, model)
    return TokenUsage(input=prompt, output=output, source=estimate_source(model))


def _as_messages(value: Any) -> Any:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    return value


class _ChatStream(StreamState):
    """Chat Completions and legacy completions chunks."""

    __slots__ = ("injected", "model", "reasons", "request", "response_id", "text", "tier", "usage")

    def __init__(self, request: Request) -> None:
        self.request = request
        self.injected = request.injected_usage
        self.usage: Any = None
        self.model: str | None = None
        self.response_id: str | None = None
        self.tier: str | None = None
        self.reasons: list[str] = []
        self.text: list[str] = []

    def event(self, chunk: Any) -> bool:
        usage = chunk.usage
        if usage is not None:
            self.usage = usage
        if self.response_id is None and chunk.id:  # Azure's first filter chunk has id ""
            self.response_id = chunk.id
            self.model = chunk.model or None
        elif self.model is None and chunk.model:
            self.model = chunk.model
        choices = chunk.choices
        if not choices:
            if self.tier is None:
                self.tier = getattr(chunk, "service_tier", None)
            return self.injected and usage is not None
        text = self.text
        for choice in choices:
            delta = getattr(choice, "delta", None)
            if delta is None:  # legacy completions
                if choice.text:
                    text.append(choice.text)
            else:
                if delta.content:
                    text.append(delta.content)
                if delta.tool_calls:
                    for tool_call in delta.tool_calls:
                        function = tool_call.function
                        if function is not None:
                            text.append((function.name or "") + (function.arguments or ""))
            if choice.finish_reason:
                self.reasons.append(choice.finish_reason)
                self.tier = getattr(chunk, "service_tier", None) or self.tier
        return False

    def finish(self, error: BaseException | None) -> ResponseFacts:
        text = "".join(self.text)
        return ResponseFacts(
            usage=(
                from_openai_chat(self.usage)
                if self.usage is not None
                else _estimate(self.request, text)
            ),
            provider_cost=_reported_cost(self.request, self.usage),
            model=self.model,
            response_id=self.response_id,
            finish_reasons=tuple(self.reasons),
            processing=processing_of_tier(self.tier),
            attributes=output_attributes(self.request, text),
        )


def _reported_cost(request: Request, usage: Any) -> tuple[Decimal, str] | None:
    """OpenRouter's ``usage.cost`` (its credits, US dollars): what it will charge for the
    call, kept beside our price of the usage (_reconcile.py). Other providers report none."""
    if request.provider != "openrouter" or usage is None:
        return None
    cost = reported_cost(field(usage, "cost"))
    return None if cost is None else (cost, "USD")


class _XGroqStream(_ChatStream):
    """`_ChatStream` of the groq SDK: the last chunk's ``x_groq.usage`` where no chunk has
    ``usage`` (the user did not ask for ``include_usage``)."""

    __slots__ = ()

    def event(self, chunk: Any) -> bool:
        hide = super().event(chunk)
        if self.usage is None:
            extra = getattr(chunk, "x_groq", None)
            if extra is not None and getattr(extra, "usage", None) is not None:
                self.usage = extra.usage
        return hide


class _ChatTail(TailState):
    """A chat or legacy completions stream that ends with its usage chunk: nothing is read
    per chunk. The last two chunks give the usage and the response facts (the usage chunk
    has no choices; the one before it has the finish reason).

    A stream that ends before its usage chunk (closed, failed, or a server that ignores
    ``include_usage``) is estimated: the prompt counted locally, and one output token per
    content chunk (all but a chat stream's role chunk and a finish chunk), as OpenAI streams a
    token per chunk. Reading every chunk's text to count it would cost each chunk about 2 µs.
    """

    def __init__(self, request: Request) -> None:
        super().__init__()
        self.request = request

    def finish(self, error: BaseException | None) -> ResponseFacts:
        usage: Any = None
        model = response_id = tier = None
        reasons: list[str] = []
        for chunk in (self.previous, self.last):
            if chunk is None:
                continue
            # groq's SDK: the usage is in x_groq when include_usage was not asked for.
            usage = field(chunk, "usage") or field(chunk, "x_groq", "usage") or usage
            model = field(chunk, "model") or model
            response_id = field(chunk, "id") or response_id
            tier = field(chunk, "service_tier") or tier
            reasons += [
                str(r) for c in field(chunk, "choices") or () if (r := field(c, "finish_reason"))
            ]
        if usage is not None:
            tokens = from_openai_chat(usage)
        else:
            # A token per chunk, but for a chat stream's role chunk and a finish chunk.
            lead = 1 if self.request.endpoint == "/chat/completions" else 0
            output = max(self.events - lead - len(reasons), 0)
            tokens = _estimate(self.request, "", output=output)
        return ResponseFacts(
            usage=tokens,
            provider_cost=_reported_cost(self.request, usage),
            model=model,
            response_id=response_id,
            finish_reasons=tuple(reasons),
            processing=processing_of_tier(tier),
        )


class _HiddenUsageTail(_ChatTail):
    """`_ChatTail` for a stream whose usage chunk we asked for: that chunk is hidden from the
    user's code, so each chunk is looked at (its ``usage`` only)."""

    passive = False

    def event(self, chunk: Any) -> bool:
        self.keep(chunk)
        return chunk.usage is not None and not chunk.choices


_RESPONSE_EVENTS = frozenset(
    (
        "response.created",
        "response.in_progress",
        "response.completed",
        "response.incomplete",
        "response.failed",
    )
)


class _ResponsesStream(StreamState):
    """Responses API events: usage arrives on response.completed (or incomplete/failed)."""

    __slots__ = ("final", "request", "text")

    def __init__(self, request: Request) -> None:
        self.request = request
        self.final: Any = None
        self.text: list[str] = []

    def event(self, event: Any) -> bool:
        kind = event.type
        if kind == "response.output_text.delta":
            self.text.append(event.delta)
        elif kind in _RESPONSE_EVENTS:
            self.final = event.response
        return False

    def finish(self, error: BaseException | None) -> ResponseFacts:
        final = self.final
        text = "".join(self.text)
        attributes = output_attributes(self.request, text)
        if final is None:
            return ResponseFacts(usage=_estimate(self.request, text), attributes=attributes)
        failed: tuple[str, str] | None = None
        if field(final, "status") == "failed":  # the client yields it, it does not raise
            failure = field(final, "error")
            failed = (
                str(field(failure, "code") or "response.failed"),
                str(field(failure, "message") or "response failed"),
            )
        usage = field(final, "usage")
        return ResponseFacts(
            usage=from_openai_responses(usage)
            if usage is not None
            else _estimate(self.request, text),
            model=field(final, "model") or None,
            response_id=field(final, "id") or None,
            processing=processing_of_tier(field(final, "service_tier")),
            attributes=attributes,
            error=failed,
        )
