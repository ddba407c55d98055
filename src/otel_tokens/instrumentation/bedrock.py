"""Amazon Bedrock: reads ``boto3``'s ``bedrock-runtime`` calls.

Every AWS API call of a botocore client passes through ``BaseClient._make_api_call(
operation_name, api_params)``, for every service: `read_request` answers ``None`` at once
for any client that is not ``bedrock-runtime`` (one dict lookup per client object) and
for every operation it does not meter.

Covered: ``converse`` and ``invoke_model`` (Anthropic Messages, Amazon Nova and Meta Llama
bodies; any other model by the ``x-amzn-bedrock-*-token-count`` headers), and their streams
``converse_stream`` and ``invoke_model_with_response_stream``: the botocore ``EventStream``
inside the response dict (`BedrockAdapter.stream_of`) is watched in place through its raw
message generator, and its usage read at the end from the last two raw messages (ConverseStream's
``metadata`` event; the last chunk's ``amazon-bedrock-invocationMetrics``).

InvokeModel's ``body`` is a ``StreamingBody`` that reading consumes: the adapter reads it
whole and puts a new ``StreamingBody`` over the same bytes in its place, so the user reads
exactly what the service sent (docs/bedrock.md).
"""

from __future__ import annotations

import base64
import importlib
import inspect
import io
import json
import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opentelemetry.util.types import AttributeValue

from .. import semconv as sc
from ..usage import TokenUsage, from_anthropic
from ..usage import read_count as count
from ..usage import read_field as field
from ..usage.bedrock import (
    from_bedrock_converse,
    from_bedrock_headers,
    from_bedrock_llama,
    from_bedrock_nova,
)
from ._adapter import Request, ResponseFacts, StreamState, TailState
from ._common import PerClient, capture_content, output_attributes, request_attributes

if TYPE_CHECKING:
    from ..pricing import Processing

_log = logging.getLogger("otel_tokens")

BEDROCK = "aws.bedrock"
_SERVICE = "bedrock-runtime"
_STREAMS = frozenset(("ConverseStream", "InvokeModelWithResponseStream"))
_METERED = frozenset(("Converse", "InvokeModel")) | _STREAMS
_CONVERSE = frozenset(("Converse", "ConverseStream"))

# The geographic scopes of cross-region inference profiles (``us.anthropic.claude-...``).
# A geographic profile bills the model at the source region's on-demand price: priced as the
# underlying model. ``global.`` profiles have their own (lower) prices, which genai-prices
# lists under the ``global.`` ids: that prefix stays part of the priced id.
_GEO_PREFIXES = frozenset(("us", "eu", "apac", "au", "jp", "ca", "in", "us-gov"))
_GLOBAL = "global"
# ARN resource types whose id is a model id (``foundation-model/anthropic.claude-...``) or
# an inference profile id (``inference-profile/us.anthropic.claude-...``). The others
# (application inference profiles, provisioned, custom and imported models, prompt routers)
# do not name the model in the ARN: such calls are not priced.
_MODEL_ARNS = frozenset(("foundation-model", "inference-profile"))

# The service tiers Bedrock bills per token, as our processing tiers. ``reserved`` is paid
# for as reserved capacity, not per token: see `_UNBILLED`.
_TIERS: dict[str, Processing] = {
    "default": "standard",
    "priority": "priority",
    "flex": "flex",
}


def split_model_id(model_id: str) -> tuple[str | None, str | None]:
    """(the model id to price, the inference profile's scope) of a ``modelId``.

    ``anthropic.claude-3-5-haiku-20241022-v1:0`` → (itself, None);
    ``us.anthropic.claude-...`` → (``anthropic.claude-...``, ``us``);
    ``global.anthropic.claude-...`` → (itself, ``global``); a foundation-model or
    inference-profile ARN → as its resource id; any other ARN → (None, None).
    """
    resource = model_id
    if model_id.startswith("arn:"):
        # arn:<partition>:bedrock:<region>:<account>:<resource type>/<id>
        parts = model_id.split(":", 5)
        kind, _, resource = parts[5].partition("/") if len(parts) == 6 else ("", "", "")
        if kind not in _MODEL_ARNS or not resource:
            return None, None
    scope, dot, rest = resource.partition(".")
    if dot and "." in rest:  # <scope>.<vendor>.<model>: a cross-region inference profile
        if scope in _GEO_PREFIXES:
            return rest, scope
        if scope == _GLOBAL:
            return resource, scope
    return resource, None


def _server_of(client: Any) -> tuple[str | None, int | None]:
    url = getattr(getattr(client, "meta", None), "endpoint_url", None)
    if not isinstance(url, str):
        return None, None
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return parts.hostname, port


def _tier(value: Any) -> str | None:
    """A service tier as given: Converse's ``{"type": "flex"}`` or InvokeModel's string."""
    if isinstance(value, Mapping):
        value = value.get("type")
    return value.lower() if isinstance(value, str) else None


def _latency(value: Any) -> str | None:
    """Converse's ``{"latency": "optimized"}`` or InvokeModel's header string."""
    if isinstance(value, Mapping):
        value = value.get("latency")
    return value.lower() if isinstance(value, str) else None


class _Unreadable:
    """Stands in for a body whose reading failed: the user's read fails the same way."""

    def __init__(self, error: BaseException) -> None:
        self._error = error

    def read(self, *args: Any) -> bytes:
        raise self._error

    def close(self) -> None:
        return


def _take_body(response: dict[str, Any]) -> bytes | None:
    """Read InvokeModel's ``StreamingBody`` and give the user a new one over the same bytes."""
    body = response.get("body")
    if body is None or not hasattr(body, "read"):
        return None
    from botocore.response import StreamingBody  # type: ignore[import-untyped]

    try:
        data: bytes = body.read()
    except Exception as exc:
        response["body"] = StreamingBody(_Unreadable(exc), None)
        raise
    response["body"] = StreamingBody(io.BytesIO(data), len(data))
    return data


def _json_response(response: dict[str, Any]) -> Any:
    """InvokeModel's body, decoded, if it is JSON (the only bodies with usage); any other
    body (an image, audio) is left unread: its usage is in the headers."""
    if "json" not in str(response.get("contentType") or ""):
        return None
    data = _take_body(response)
    try:
        return json.loads(data) if data else None
    except ValueError:  # not what it says it is: the headers still have the counts
        return None


def _invoke_usage(body: Any, headers: Mapping[str, Any]) -> TokenUsage | None:
    """An InvokeModel body's usage in its family's own format, else the headers' counts."""
    if isinstance(body, dict):
        usage = body.get("usage")
        if isinstance(usage, dict):
            if "input_tokens" in usage or "output_tokens" in usage:  # Anthropic Messages
                return from_anthropic(usage)
            if "inputTokens" in usage or "outputTokens" in usage:  # Amazon Nova
                return from_bedrock_nova(usage)
        if "prompt_token_count" in body or "generation_token_count" in body:  # Meta Llama
            return from_bedrock_llama(body)
    return from_bedrock_headers(headers)


def _invoke_finish(body: Any) -> tuple[str, ...]:
    if not isinstance(body, dict):
        return ()
    reason = body.get("stop_reason") or body.get("stopReason")
    return (str(reason),) if reason else ()


def _converse_text(response: Any) -> str:
    parts = []
    for block in field(response, "output", "message", "content") or ():
        text = field(block, "text")
        if isinstance(text, str):
            parts.append(text)
    return "".join(parts)


def _json_body(raw: Any) -> Any:
    """InvokeModel's request body (bytes, str or a dict boto3 has not serialised)."""
    if isinstance(raw, Mapping):
        return raw
    if isinstance(raw, bytes | bytearray | str) and len(raw) <= 1 << 20:
        try:
            return json.loads(raw)
        except ValueError:
            return None
    return None  # a file object: reading it is the client's


_OTEL_BOTOCORE = "opentelemetry.instrumentation.botocore"


def otel_botocore_meters_bedrock() -> bool:
    """Is OpenTelemetry's botocore instrumentation wrapping ``_make_api_call`` now, with its
    Bedrock extension (which puts ``gen_ai.usage.*`` on its own span per call)? Walks the
    wrappers around the method, in whichever order the instrumentations were applied."""
    try:
        from botocore.client import BaseClient  # type: ignore[import-untyped]

        wrapper = inspect.getattr_static(BaseClient, "_make_api_call", None)
        for _ in range(16):  # a chain of wrappers, never a cycle; bounded all the same
            handler = getattr(wrapper, "_self_wrapper", None)
            if handler is None:
                return False
            if str(getattr(handler, "__module__", "")).startswith(_OTEL_BOTOCORE):
                # Its releases before the Bedrock extension put no usage on their spans.
                extensions = importlib.import_module(_OTEL_BOTOCORE + ".extensions")
                # Its older releases name the registry _KNOWN_EXTENSIONS.
                known = getattr(extensions, "_BOTOCORE_EXTENSIONS", None)
                known = known if known is not None else getattr(extensions, "_KNOWN_EXTENSIONS", {})
                return "bedrock-runtime" in known
            wrapper = getattr(wrapper, "__wrapped__", None)
    except Exception:
        return False
    return False


_warned: set[str] = set()


def _warn_once(kind: str, message: str) -> None:
    if kind not in _warned:
        _warned.add(kind)
        _log.warning(message)


class BedrockAdapter:
    def __init__(self, *, library_span: bool = False) -> None:
        self.capture = capture_content()  # read once, when instrumenting
        self._clients = PerClient()
        # (the outermost wrapper of _make_api_call, is OpenTelemetry's botocore instrumentation
        # among its wrappers?): see _peer_active.
        self._peer: tuple[Any, bool] | None = None
        self._base: Any = None

    def _client_facts(self, client: Any) -> tuple[str | None, int | None] | None:
        """(host, port) of a bedrock-runtime client; None for any other AWS client."""
        key = id(client)
        if key in self._clients:
            facts: tuple[str | None, int | None] | None = self._clients[key]
            return facts
        service = getattr(
            getattr(getattr(client, "meta", None), "service_model", None), "service_name", None
        )
        facts = _server_of(client) if service == _SERVICE else None
        self._clients.remember(client, facts)
        return facts

    def _peer_active(self, client: Any) -> bool:
        """Is OpenTelemetry's botocore instrumentation wrapping ``_make_api_call`` now? Asked
        again only when the method's outermost wrapper has changed (instrument or
        uninstrument of either), so a call pays one attribute lookup for it."""
        base = self._base
        if base is None:  # botocore's BaseClient, where every wrapper of the method sits
            from botocore.client import BaseClient

            base = self._base = BaseClient
        method = base.__dict__.get("_make_api_call")
        known = self._peer
        if known is not None and known[0] is method:
            return known[1]
        active = otel_botocore_meters_bedrock()
        self._peer = (method, active)
        if active:
            _log.info(
                "otel-tokens: opentelemetry-instrumentation-botocore instruments Bedrock too: "
                "each call rides on its span, and its gen_ai.client.token.usage is the "
                "call's only one (docs/bedrock.md)"
            )
        return active

    def peer_span(self, span: Any) -> bool:
        """Is ``span`` OpenTelemetry's botocore instrumentation's span of the call (its
        Bedrock extension's scope, ``opentelemetry.instrumentation.botocore.bedrock-runtime``)?"""
        scope = getattr(span, "instrumentation_scope", None)
        return str(getattr(scope, "name", "")).startswith(_OTEL_BOTOCORE)

    def read_request(self, client: Any, args: tuple[Any, ...], kwargs: Any) -> Request | None:
        # ``BaseClient._make_api_call(operation_name, api_params)``
        operation = args[0] if args else kwargs.get("operation_name")
        if operation not in _METERED:
            return None
        server = self._client_facts(client)
        if server is None:
            return None
        params = args[1] if len(args) > 1 else kwargs.get("api_params")
        if not isinstance(params, Mapping):
            return None
        model_id = params.get("modelId")
        model = model_id if isinstance(model_id, str) and model_id else None
        if operation in _CONVERSE:
            body = {k: (list(v) if type(v) is list else v) for k, v in params.items()}
            name = "chat"
        else:
            body = {
                "body": _json_body(params.get("body")),
                "performanceConfigLatency": params.get("performanceConfigLatency"),
                "serviceTier": params.get("serviceTier"),
            }
            name = "embeddings" if model and "embed" in model else "chat"
        attributes: dict[str, AttributeValue] | None = None
        if model:
            _, scope = split_model_id(model)
            if scope:
                attributes = {sc.BILLING_INFERENCE_PROFILE: scope}
        return Request(
            operation=name,
            provider=BEDROCK,
            model=model,
            endpoint=operation,
            stream=operation in _STREAMS,
            server_address=server[0],
            server_port=server[1],
            processing=_TIERS.get(_tier(params.get("serviceTier")) or "default", "standard"),
            attributes=attributes,
            body=body,
            capture_content=self.capture,
            # OpenTelemetry's botocore instrumentation makes a span with usage for this call:
            # the call rides on it rather than make a second one (docs/bedrock.md).
            defer_span=self._peer_active(client),
        )

    def _inference(self, request: Request) -> Mapping[str, Any]:
        """The request's generation options, whichever family's names they have."""
        if request.endpoint in _CONVERSE:
            config = request.body.get("inferenceConfig")
            return config if isinstance(config, Mapping) else {}
        body = request.body.get("body")
        if not isinstance(body, Mapping):
            return {}
        nova = body.get("inferenceConfig")  # Amazon Nova: inferenceConfig.max_new_tokens
        return nova if isinstance(nova, Mapping) else body

    def request_attributes(self, request: Request) -> dict[str, AttributeValue]:
        options = self._inference(request)
        attrs = request_attributes(options)  # max_tokens (Anthropic), temperature, top_p
        for key in ("maxTokens", "max_new_tokens", "max_gen_len"):
            value = options.get(key)
            if type(value) is int:
                attrs[sc.GEN_AI_REQUEST_MAX_TOKENS] = value
        value = options.get("topP")
        if isinstance(value, int | float) and not isinstance(value, bool):
            attrs[sc.GEN_AI_REQUEST_TOP_P] = float(value)
        return attrs

    def max_output_tokens(self, request: Request) -> int | None:
        if request.operation == "embeddings":
            return 0
        value = self.request_attributes(request).get(sc.GEN_AI_REQUEST_MAX_TOKENS)
        return value if type(value) is int else None

    def estimate_input(self, request: Request) -> int:
        return 0  # not counted locally: Bedrock models' tokenizers are not shipped

    def read_response(self, request: Request, response: Any) -> ResponseFacts:
        if not isinstance(response, dict):
            return ResponseFacts()
        headers = field(response, "ResponseMetadata", "HTTPHeaders") or {}
        if request.endpoint == "Converse":
            raw = response.get("usage")
            usage = from_bedrock_converse(raw) if raw is not None else None
            stop = response.get("stopReason")
            reasons: tuple[str, ...] = (str(stop),) if stop else ()
            text = _converse_text(response) if request.capture_content else ""
            # The tier that served the call, else the one asked for.
            tier = _tier(response.get("serviceTier")) or _tier(request.body.get("serviceTier"))
            latency = _latency(response.get("performanceConfig")) or _latency(
                request.body.get("performanceConfig")
            )
            response_id = None
        else:
            body = _json_response(response)
            usage = _invoke_usage(body, headers)
            reasons = _invoke_finish(body)
            text = ""
            # The tier that served the call, else the one asked for.
            tier = _tier(response.get("serviceTier")) or _tier(request.body.get("serviceTier"))
            latency = _latency(response.get("performanceConfigLatency")) or _latency(
                request.body.get("performanceConfigLatency")
            )
            found = body.get("id") if isinstance(body, dict) else None
            response_id = found if isinstance(found, str) else None
        return self.facts(request, usage, reasons, tier, latency, response_id, text)

    def facts(
        self,
        request: Request,
        usage: TokenUsage | None,
        reasons: tuple[str, ...],
        tier: str | None,
        latency: str | None,
        response_id: str | None = None,
        text: str = "",
    ) -> ResponseFacts:
        """A response's or a finished stream's facts; ``tier`` and ``latency``: those that
        served the call, else those asked for."""
        served, _ = split_model_id(request.model) if request.model else (None, None)
        unbilled = (
            "reserved" if tier == "reserved" else "optimized" if latency == "optimized" else None
        )
        if unbilled is not None and usage is not None:
            return self._unbilled(served, usage, unbilled)
        return ResponseFacts(
            usage=usage,
            model=served,
            response_id=response_id,
            finish_reasons=reasons,
            processing=_TIERS.get(tier) if tier else None,
            attributes=output_attributes(request, text) if text else None,
        )

    def _unbilled(self, served: str | None, usage: TokenUsage, why: str) -> ResponseFacts:
        """Reserved capacity is paid for by the hour, and latency-optimized inference has its
        own rates the catalog does not carry: either priced at on-demand rates would be a
        guess that looks exact, so such a call carries its token totals and no price."""
        _warn_once(
            why,
            f"otel-tokens: Bedrock {why} calls are not billed at on-demand rates; they carry "
            "token totals but no cost (see docs/bedrock.md)",
        )
        return ResponseFacts(
            model=served,
            attributes={
                sc.GEN_AI_USAGE_INPUT_TOKENS: usage.input_total,
                sc.GEN_AI_USAGE_OUTPUT_TOKENS: usage.output_total,
                sc.BILLING_PRICING_STATUS: sc.STATUS_UNPRICED,
            },
        )

    def stream_of(self, request: Request, response: Any) -> Any:
        """The ``EventStream`` of a ConverseStream (``stream``) or an
        InvokeModelWithResponseStream (``body``) response."""
        if not request.stream or not isinstance(response, dict):
            return None
        return response.get("stream" if request.endpoint == "ConverseStream" else "body")

    def stream_state(self, request: Request) -> StreamState:
        if request.endpoint == "ConverseStream":
            return _StreamTail(self, request)
        return _InvokeTail(self, request)


def _payload(message: Any) -> tuple[str | None, Any]:
    """(event type, decoded JSON payload) of a raw ``EventStreamMessage``; an exception
    message or a payload that is not JSON reads as (type, None)."""
    headers = getattr(message, "headers", None) or {}
    kind = headers.get(":event-type")
    if headers.get(":message-type", "event") != "event":
        return kind, None
    try:
        return kind, json.loads(message.payload)
    except (ValueError, TypeError, AttributeError):
        return kind, None


def _exception(message: Any) -> tuple[str, str] | None:
    """(type, message) of an exception message (``modelStreamErrorException``...), which
    botocore raises to the user as an ``EventStreamError`` outside our watcher."""
    headers = getattr(message, "headers", None) or {}
    if headers.get(":message-type") != "exception":
        return None
    kind = str(headers.get(":exception-type") or "EventStreamError")
    try:
        text = json.loads(message.payload).get("message")
    except (ValueError, TypeError, AttributeError):
        text = None
    return kind, str(text or kind)


def _chunk(payload: Any) -> Any:
    """An InvokeModelWithResponseStream ``chunk``'s model event: base64 JSON in ``bytes``."""
    data = payload.get("bytes") if isinstance(payload, dict) else None
    if not isinstance(data, str):
        return None
    try:
        return json.loads(base64.b64decode(data))
    except (ValueError, TypeError):
        return None


def _invocation_usage(metrics: Any) -> TokenUsage | None:
    """Bedrock's ``amazon-bedrock-invocationMetrics``: the same counts as InvokeModel's
    token headers (input is uncached input; cache writes have the default 5m TTL)."""
    if not isinstance(metrics, dict):
        return None
    if "inputTokenCount" not in metrics and "outputTokenCount" not in metrics:
        return None
    return TokenUsage(
        input=count(metrics, "inputTokenCount"),
        cache_read=count(metrics, "cacheReadInputTokenCount"),
        cache_write_5m=count(metrics, "cacheWriteInputTokenCount"),
        output=count(metrics, "outputTokenCount"),
    )


def _anthropic_start(message: Any) -> Any:
    """The ``usage`` of an Anthropic ``message_start`` chunk (raw message), else None."""
    if message is None:
        return None
    kind, payload = _payload(message)
    event = _chunk(payload) if kind == "chunk" else None
    if not isinstance(event, dict) or event.get("type") != "message_start":
        return None
    usage = field(event, "message", "usage")
    return usage if isinstance(usage, dict) else None


def _split_1h(usage: TokenUsage, start: Any) -> TokenUsage:
    """The invocation metrics' cache writes (no TTL split) split 5m/1h as the model's own
    ``message_start`` usage splits them, when its writes are the same total."""
    if start is None or not usage.cache_write_5m:
        return usage
    split = from_anthropic(start)
    if split.cache_write_1h and split.cache_write_5m + split.cache_write_1h == usage.cache_write_5m:
        return replace(
            usage, cache_write_5m=split.cache_write_5m, cache_write_1h=split.cache_write_1h
        )
    return usage


class _StreamTail(TailState):
    """A Bedrock stream, read at the end from its last two raw messages (nothing per event):
    ConverseStream's ``messageStop`` (stop reason) and ``metadata`` (usage, tier), or
    InvokeModelWithResponseStream's last chunks (the model's stop reason; Bedrock's
    invocation metrics in the last one). A ConverseStream cut before its ``metadata`` has no
    usage: its events before it carry no counts, and Bedrock models' tokenizers are not
    shipped to estimate them."""

    def __init__(self, adapter: BedrockAdapter, request: Request) -> None:
        super().__init__()
        self.adapter = adapter
        self.request = request

    def usage(self, metrics: TokenUsage | None, last_usage: Any) -> TokenUsage | None:
        return metrics

    def finish(self, error: BaseException | None) -> ResponseFacts:
        request = self.request
        usage: TokenUsage | None = None
        reasons: tuple[str, ...] = ()
        tier = _tier(request.body.get("serviceTier"))
        latency = _latency(
            request.body.get(
                "performanceConfig" if request.endpoint in _CONVERSE else "performanceConfigLatency"
            )
        )
        response_id = None
        last_usage: Any = None
        for message in (self.previous, self.last):
            if message is None:
                continue
            kind, payload = _payload(message)
            if not isinstance(payload, dict):
                continue
            if request.endpoint == "ConverseStream":
                if kind == "messageStop" and payload.get("stopReason"):
                    reasons = (str(payload["stopReason"]),)
                elif kind == "metadata":
                    raw = payload.get("usage")
                    usage = from_bedrock_converse(raw) if raw is not None else usage
                    tier = _tier(payload.get("serviceTier")) or tier
                    latency = _latency(payload.get("performanceConfig")) or latency
                continue
            event = _chunk(payload) if kind == "chunk" else None
            if not isinstance(event, dict):
                continue
            usage = _invocation_usage(event.get("amazon-bedrock-invocationMetrics")) or usage
            found = event.get("usage")  # Anthropic's message_delta: output so far
            last_usage = found if isinstance(found, dict) else last_usage
            delta = event.get("delta")
            reason = event.get("stop_reason") or event.get("stopReason")
            if not reason and isinstance(delta, dict):
                reason = delta.get("stop_reason")  # Anthropic's message_delta
            if reason:
                reasons = (str(reason),)
            message_id = field(event, "message", "id")
            response_id = message_id if isinstance(message_id, str) else response_id
        if request.endpoint != "ConverseStream":
            usage = self.usage(usage, last_usage)
        facts = self.adapter.facts(request, usage, reasons, tier, latency, response_id)
        failed = _exception(self.last)
        return replace(facts, error=failed) if failed is not None else facts


class _InvokeTail(_StreamTail):
    """An InvokeModelWithResponseStream: also keeps its first message, an Anthropic model's
    ``message_start``, whose usage has the 5m/1h split of the cache writes that Bedrock's
    invocation metrics lack, and the input of a stream cut before them. One Python call per
    event, next to botocore's parsing of each event (tens of microseconds)."""

    passive = False

    def __init__(self, adapter: BedrockAdapter, request: Request) -> None:
        super().__init__(adapter, request)
        self.first: Any = None

    def event(self, event: Any) -> bool:
        if self.first is None:
            self.first = event
        self.keep(event)
        return False

    def usage(self, metrics: TokenUsage | None, last_usage: Any) -> TokenUsage | None:
        start = _anthropic_start(self.first)
        if metrics is not None:
            return _split_1h(metrics, start)
        if start is None:
            return None  # cut before any counts: no usage rather than a guess
        # Cut before Bedrock's metrics: the model's own counts so far, marked estimated (the
        # output is what its last message_delta had counted, if one was kept).
        counted = dict(start)
        output = last_usage.get("output_tokens") if last_usage is not None else None
        if output is not None:
            counted["output_tokens"] = output
        return from_anthropic(counted, source="estimated")
