"""The one recording path every provider goes through.

A provider module starts a `Call` with what it read from the request, tells it what it
read from the response, and ends it with a `TokenUsage`. `Call` prices the usage, sets the
span attributes and records the metrics, exactly once, and never raises.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.metrics import (
    CallbackOptions,
    Histogram,
    Meter,
    MeterProvider,
    Observation,
    get_meter,
    get_meter_provider,
)
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, TracerProvider
from opentelemetry.util.types import AttributeValue

from .. import semconv as sc
from .._background import queue
from ..attribution import CardinalityGuard
from ..attribution import current as current_attribution
from ..budgets import BudgetManager, Reservation
from ..pricing import Catalog, PriceResult, Processing, decimal_str, default_catalog
from ..usage import TokenUsage
from ..workflow import open_rollups
from ._safety import log_once

_SCOPE = "otel_tokens"
_SCHEMA_URL = "https://opentelemetry.io/schemas/1.37.0"

# Attributes a pricing exporter needs on token points to price aggregated points exactly:
# everything that changes the price of a token.
_PRICE_KEYS = (
    sc.GEN_AI_PROVIDER_NAME,
    sc.GEN_AI_REQUEST_MODEL,
    sc.GEN_AI_RESPONSE_MODEL,
    sc.BILLING_PROCESSING,
    sc.BILLING_CONTEXT_TIER,
    sc.BILLING_USAGE_SOURCE,
)


def _version() -> str:
    from importlib.metadata import version

    try:
        return version("otel-tokens")
    except Exception:
        return "0"


class Sums:
    """Monotonic sums by attribute set, reported by an asynchronous counter's callback."""

    __slots__ = ("_lock", "_values")

    def __init__(self) -> None:
        self._values: dict[tuple[tuple[str, AttributeValue], ...], float] = {}
        self._lock = threading.Lock()

    def add(self, amount: float, attributes: Mapping[str, AttributeValue]) -> None:
        key = tuple(attributes.items())
        with self._lock:
            self._values[key] = self._values.get(key, 0) + amount

    def observe(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            items = list(self._values.items())
        return [Observation(value, dict(key)) for key, value in items]


_sums_by_provider: weakref.WeakKeyDictionary[Any, tuple[Sums, Sums, Sums]] = (
    weakref.WeakKeyDictionary()
)
_sums_lock = threading.Lock()


def _billing_sums(meter_provider: MeterProvider | None, meter: Meter) -> tuple[Sums, Sums, Sums]:
    owner = meter_provider if meter_provider is not None else get_meter_provider()
    with _sums_lock:
        sums = _sums_by_provider.get(owner)
        if sums is not None:
            return sums
        sums = (Sums(), Sums(), Sums())
        for name, total, unit, description in (
            (
                sc.METRIC_BILLING_TOKENS,
                sums[0],
                "{token}",
                "Billable tokens (and requests) by disjoint billing bucket.",
            ),
            (
                sc.METRIC_BILLING_COST,
                sums[1],
                "{currency}",
                "Cost of the billable usage, in gen_ai.usage.cost.currency units "
                "(an approximation in floating point; exact cost is in the ledger).",
            ),
            (
                sc.METRIC_BILLING_UNPRICED,
                sums[2],
                "{call}",
                "Calls whose usage could not be priced (unknown model or variant).",
            ),
        ):
            meter.create_observable_counter(
                name, callbacks=[total.observe], unit=unit, description=description
            )
        _sums_by_provider[owner] = sums
        return sums


@dataclass(slots=True)
class Request:
    """What a provider adapter read from one API request, on the caller's thread.

    Only what the call needs at once; attributes that only the span needs are read from
    ``body`` (a copy) by the adapter's ``request_attributes`` when the span is made.
    """

    operation: str
    provider: str
    model: str | None
    endpoint: str = ""
    stream: bool = False
    server_address: str | None = None
    server_port: int | None = None
    processing: Processing = "standard"
    attributes: dict[str, AttributeValue] | None = None  # known at once (captured content)
    body: Mapping[str, Any] = field(default_factory=dict)
    defer_span: bool = False
    injected_usage: bool = False
    capture_content: bool = False  # OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT


def _READ_RESPONSE() -> TokenUsage | None:  # a marker: see Call.end_with_response
    raise AssertionError("never called")


class Recorder:
    """Tracer, metric instruments and catalog shared by every call of an instrumentor.

    ``background``: end calls on the recording thread (`otel_tokens._background`) instead of
    the caller's; see `Call.end`.
    """

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        catalog: Catalog | None = None,
        budgets: BudgetManager | None = None,
        background: bool = False,
    ) -> None:
        version = _version()
        self.tracer: Tracer = trace.get_tracer(
            _SCOPE, version, tracer_provider, schema_url=_SCHEMA_URL
        )
        meter: Meter = get_meter(_SCOPE, version, meter_provider, schema_url=_SCHEMA_URL)
        self.token_usage: Histogram = meter.create_histogram(
            sc.METRIC_CLIENT_TOKEN_USAGE,
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=list(sc.TOKEN_USAGE_BUCKETS),
        )
        self.duration: Histogram = meter.create_histogram(
            sc.METRIC_CLIENT_OPERATION_DURATION,
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=list(sc.DURATION_BUCKETS),
        )
        self.time_to_first_chunk: Histogram = meter.create_histogram(
            sc.METRIC_CLIENT_TIME_TO_FIRST_CHUNK,
            unit="s",
            description="Time from the request to the first chunk of a streamed response.",
            explicit_bucket_boundaries_advisory=list(sc.DURATION_BUCKETS),
        )
        # The billing counters are sums we keep ourselves and report when the SDK collects
        # (asynchronous counters): a synchronous measurement costs ~10 us each, and a call
        # makes one per bucket. One set per meter provider: an instrument is registered
        # once, whatever the number of recorders (re-instrumenting) using it.
        self.billing_tokens, self.cost, self.unpriced = _billing_sums(meter_provider, meter)
        self._catalog = catalog
        self.guard = CardinalityGuard()
        self.budgets = budgets
        self.background = background

    @property
    def catalog(self) -> Catalog:
        return self._catalog or default_catalog()

    def start(
        self,
        *,
        operation: str,
        provider: str,
        request_model: str | None,
        server_address: str | None = None,
        server_port: int | None = None,
        stream: bool = False,
        processing: Processing = "standard",
        attributes: Mapping[str, AttributeValue] | None = None,
        defer_span: bool = False,
    ) -> Call:
        """Start metering one API call (the instrumentation's wrapper uses `Call` directly).

        ``defer_span``: another span (the client library's own) may carry this call; create
        ours only at the end if none was adopted with `Call.adopt`.
        """
        request = Request(
            operation=operation,
            provider=provider,
            model=request_model,
            stream=stream,
            server_address=server_address,
            server_port=server_port,
            processing=processing,
            attributes=dict(attributes) if attributes else None,
            defer_span=defer_span,
        )
        return Call(self, request)


class Call:
    """One metered API call: its span, timing and response facts, ended exactly once.

    The caller's thread does as little as it can: it notes the start, the context and what
    the provider module read. Pricing, the span and the metric points are made when the call
    ends, on the recording thread in background mode. Our span is then made at the end, with
    the call's own start and end times, under the span that was current when the call began.
    A span that another library owns (anthropic's) and ends itself: where the provider module
    holds that end (`HeldEnd`), the attributes are written on the recording thread and the
    span ended at the held time; otherwise they are written at once, before the library ends
    it, and only the metric points wait.
    """

    __slots__ = (
        "__weakref__",
        "_attribution",
        "_ended",
        "_error",
        "_held_end_ns",
        "_outcome",
        "_owns_span",
        "_response",
        "_result",
        "adapter",
        "finisher",
        "first_chunk_ns",
        "parent",
        "pending",
        "processing",
        "recorder",
        "request",
        "reservation",
        "response_model",
        "salvaged",
        "span",
        "start_ns",
    )

    def __init__(self, recorder: Recorder, request: Request, adapter: Any = None) -> None:
        """``adapter``: the provider's `Adapter`, whose ``request_attributes(request)`` gives
        the span the request's own attributes."""
        self.start_ns = time.time_ns()
        self.recorder = recorder
        self.request = request
        self.adapter = adapter
        self.processing: Processing = request.processing
        self.response_model: str | None = None
        self.first_chunk_ns: int | None = None
        self.finisher: Any = None  # the stream's finisher, for hooks that end streams early
        self._ended = False
        self._attribution: dict[str, str] | None = None  # read once: see `attribution`
        self._error: tuple[str, str] | None = None
        self._held_end_ns: int | None = None
        self._response: Any = None
        self._outcome: tuple[Any, TokenUsage | None, BaseException | None, int] | None = None
        self._result: PriceResult | None = None
        # Usage of a billed response the client then failed to parse (see _wrapper).
        self.salvaged: TokenUsage | None = None
        self.reservation: Reservation | None = None  # budgets drawn on before sending
        # Attributes learnt after the start, written in one go at the end.
        self.pending: dict[str, AttributeValue] = {}
        # The context the call was made in: our span's parent, and where its attribution
        # (baggage) and enclosing workflows are read, whichever thread records it.
        self.parent = otel_context.get_current()
        self.span: Span | None = None
        self._owns_span = False
        if not (request.defer_span or recorder.background):
            self.span = recorder.tracer.start_span(
                self.name,
                context=self.parent,
                kind=SpanKind.CLIENT,
                attributes=self._start_attributes(),
                start_time=self.start_ns,
            )
            self._owns_span = True

    @property
    def name(self) -> str:
        request = self.request
        return f"{request.operation} {request.model}" if request.model else request.operation

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def attribution(self) -> dict[str, str]:
        """Our attribution keys in the context the call was made in (its baggage), read once
        for the span and the metric points."""
        found = self._attribution
        if found is None:
            found = self._attribution = current_attribution(self.parent)
        return found

    def adopt(self, span: Span) -> None:
        """Carry this call on ``span`` (the client library's own), which its owner ends."""
        if self.span is None and span.is_recording():
            self.span = span
            self._owns_span = False

    @property
    def adopted_span(self) -> Span | None:
        """The client library's span carrying this call, if any."""
        return None if self._owns_span else self.span

    def hold_end(self, end_ns: int) -> None:
        """The adopted span's owner ended it at ``end_ns`` and we held that end: we end it
        there once our attributes are on it (on the recording thread, in background mode)."""
        self._held_end_ns = end_ns

    def activate(self) -> object:
        """Make our span current (so HTTP spans nest under it); give the token to `deactivate`.

        In background mode there is no span of ours until the call ends.
        """
        if self.span is None:
            return None
        return otel_context.attach(trace.set_span_in_context(self.span, self.parent))

    @staticmethod
    def deactivate(token: object) -> None:
        if token is not None:
            otel_context.detach(token)  # type: ignore[arg-type]

    def set_response(
        self,
        *,
        model: str | None = None,
        response_id: str | None = None,
        finish_reasons: Sequence[str] | None = None,
        service_tier: str | None = None,
        attributes: Mapping[str, AttributeValue] | None = None,
    ) -> None:
        pending = self.pending
        if model:
            self.response_model = model
            pending[sc.GEN_AI_RESPONSE_MODEL] = model
        if response_id:
            pending[sc.GEN_AI_RESPONSE_ID] = response_id
        if finish_reasons:
            pending[sc.GEN_AI_RESPONSE_FINISH_REASONS] = list(finish_reasons)
        if service_tier:
            processing = _processing_of_tier(service_tier)
            if processing is not None:
                self.processing = processing
        if attributes:
            pending.update(attributes)

    def mark_error(self, error_type: str, message: str) -> None:
        """A failure the client reported without raising (e.g. a failed response event)."""
        self._error = (error_type, message)

    def first_chunk(self) -> None:
        if self.first_chunk_ns is None:
            self.first_chunk_ns = time.time_ns()

    def end(self, usage: TokenUsage | None, error: BaseException | None = None) -> None:
        """Price, set attributes, record metrics and end the span; only the first call counts."""
        if not self._ended:
            self._ended = True
            self._end(None, usage, error)

    def end_later(
        self, read: Callable[[], TokenUsage | None], error: BaseException | None = None
    ) -> None:
        """Like `end` with the usage ``read()`` returns; in background mode ``read`` (reading
        the response) runs on the recording thread too."""
        if not self._ended:
            self._ended = True
            self._end(read, None, error)

    def end_with_response(self, response: Any) -> None:
        """Like `end_later` with the adapter's ``read_response`` of ``response`` (a parsed,
        non-streamed response): no object is made per call to say so."""
        if not self._ended:
            self._ended = True
            if self.recorder.background:  # read later: hold only what will be read
                try:
                    response = self.adapter.keep_response(self.request, response)
                except Exception as exc:
                    log_once("response.keep", exc)
            self._response = response
            self._end(_READ_RESPONSE, None, None)

    # --- internals -------------------------------------------------------------------
    def _end(
        self,
        read: Callable[[], TokenUsage | None] | None,
        usage: TokenUsage | None,
        error: BaseException | None,
    ) -> None:
        held = self._held_end_ns
        end_ns = held if held is not None else time.time_ns()
        # Budgets are settled at once: the next call's pre-flight check must see this one.
        background = self.recorder.background and self.reservation is None
        if background and (self.span is None or held is not None):
            self._outcome = (read, usage, error, end_ns)
            queue.submit(self)  # runs __call__ on the recording thread
        else:
            self._finish(read, usage, error, end_ns, background)

    def __call__(self) -> None:
        """The queued end of this call (see `_end`)."""
        outcome = self._outcome
        if outcome is not None:
            self._outcome = None
            self._finish(*outcome, False)

    def _finish(
        self,
        read: Callable[[], TokenUsage | None] | None,
        usage: TokenUsage | None,
        error: BaseException | None,
        end_ns: int,
        defer_metrics: bool,
    ) -> None:
        if read is not None:
            try:
                if read is _READ_RESPONSE:
                    response, self._response = self._response, None
                    usage = self.adapter.read_response(self, self.request, response)
                else:
                    usage = read()
            except Exception as exc:
                log_once("response", exc)
        result: PriceResult | None = None
        try:
            result = self._record_span(usage, error, end_ns)
        except Exception as exc:
            log_once("recording", exc)
        finally:
            if self.span is not None and (self._owns_span or self._held_end_ns is not None):
                try:
                    self.span.end(end_time=end_ns)
                except Exception as exc:
                    log_once("span.end", exc)
        if defer_metrics:
            queue.submit(partial(self._record_metrics, usage, result, end_ns))
        else:
            self._record_metrics(usage, result, end_ns)

    def _common(self) -> dict[str, AttributeValue]:
        """The attributes of the call's span and of every metric point."""
        request = self.request
        common: dict[str, AttributeValue] = {
            sc.GEN_AI_OPERATION_NAME: request.operation,
            sc.GEN_AI_PROVIDER_NAME: request.provider,
        }
        if request.model:
            common[sc.GEN_AI_REQUEST_MODEL] = request.model
        if request.server_address:
            common[sc.SERVER_ADDRESS] = request.server_address
            if request.server_port:
                common[sc.SERVER_PORT] = request.server_port
        return common

    def _start_attributes(self) -> dict[str, AttributeValue]:
        request = self.request
        attrs = self._common()
        if request.stream:
            attrs[sc.GEN_AI_REQUEST_STREAM] = True
        if self.adapter is not None:
            attrs.update(self.adapter.request_attributes(request))
        if request.attributes:
            attrs.update(request.attributes)
        attribution = self.attribution
        if attribution:
            attrs.update(attribution)
        return attrs

    def _record_span(
        self, usage: TokenUsage | None, error: BaseException | None, end_ns: int
    ) -> PriceResult | None:
        pending = self.pending
        if error is not None:
            self._error = (type(error).__qualname__, str(error))
        if self._error is not None:
            pending[sc.ERROR_TYPE] = self._error[0]
        if self.first_chunk_ns is not None:
            pending[sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = (
                self.first_chunk_ns - self.start_ns
            ) / 1e9
        result: PriceResult | None = None
        try:
            if usage is not None:
                pending.update(usage.to_attributes())
                try:
                    result = self._price(usage)
                except Exception as exc:  # a broken catalog: the tokens are still counted
                    log_once("pricing", exc)
                self._result = result
                pending.update(self._billing_attributes(usage, result))
        finally:
            try:
                if self.reservation is not None:  # settled once (a no-op if already settled)
                    self.reservation.settle(usage, result)
            finally:
                self._write_span(error, end_ns)
        return result

    def _write_span(self, error: BaseException | None, end_ns: int) -> None:
        span = self.span
        if span is None:  # background, or deferred and nothing adopted: our own span
            attrs = self._start_attributes()
            attrs.update(self.pending)
            span = self.span = self.recorder.tracer.start_span(
                self.name,
                context=self.parent,
                kind=SpanKind.CLIENT,
                attributes=attrs,
                start_time=self.start_ns,
            )
            self._owns_span = True
        elif not span.is_recording():
            return
        elif self._owns_span:
            span.set_attributes(self.pending)
        else:
            # The library's span: ours is not made, so it gets the request facts too. What
            # the library wrote itself stays (as when we write first and it writes last).
            attrs = self._start_attributes()
            attrs.update(self.pending)
            existing = getattr(span, "attributes", None) or {}
            span.set_attributes({k: v for k, v in attrs.items() if k not in existing})
            status = getattr(span, "status", None)
            if status is not None and status.status_code is not StatusCode.UNSET:
                return
        if self._error is not None:
            span.set_status(Status(StatusCode.ERROR, self._error[1][:200]))
        if error is not None and self._owns_span:
            span.record_exception(error, timestamp=end_ns)

    def _record_metrics(
        self, usage: TokenUsage | None, result: PriceResult | None, end_ns: int
    ) -> None:
        try:
            self._record_points(usage, result, end_ns)
        except Exception as exc:
            log_once("metrics", exc)

    def _record_points(
        self, usage: TokenUsage | None, result: PriceResult | None, end_ns: int
    ) -> None:
        recorder = self.recorder
        attrs = self._common()
        if self.response_model:
            attrs[sc.GEN_AI_RESPONSE_MODEL] = self.response_model
        if self._error is not None:
            attrs[sc.ERROR_TYPE] = self._error[0]
        # The context the call was made in, whichever thread records: exemplars then link
        # to the caller's sampled span, if any, as when recording on the caller's thread.
        context = self.parent
        recorder.duration.record((end_ns - self.start_ns) / 1e9, attrs, context)
        if self.first_chunk_ns is not None:
            ttfc = (self.first_chunk_ns - self.start_ns) / 1e9
            recorder.time_to_first_chunk.record(ttfc, attrs, context)
        if usage is None:
            return
        attrs.pop(sc.ERROR_TYPE, None)
        if usage.input_total or usage.output_total:
            recorder.token_usage.record(
                usage.input_total, {**attrs, sc.GEN_AI_TOKEN_TYPE: sc.TOKEN_TYPE_INPUT}, context
            )
            recorder.token_usage.record(
                usage.output_total, {**attrs, sc.GEN_AI_TOKEN_TYPE: sc.TOKEN_TYPE_OUTPUT}, context
            )
        self._record_billing(usage, result, attrs)
        for rollup in open_rollups(self.parent):
            rollup.add(usage, result)

    def _price(self, usage: TokenUsage) -> PriceResult:
        catalog = self.recorder.catalog
        at = datetime.fromtimestamp(self.start_ns / 1e9, UTC)
        requested = self.request.model
        provider = self.request.provider
        model = self.response_model or requested or ""
        result = catalog.price(usage, model, provider=provider, at=at, processing=self.processing)
        if result.status == sc.STATUS_UNPRICED and requested and requested != model:
            fallback = catalog.price(
                usage,
                requested,
                provider=provider,
                at=at,
                processing=self.processing,
            )
            if fallback.is_priced:
                return fallback
        return result

    def _billing_attributes(
        self, usage: TokenUsage, result: PriceResult | None
    ) -> dict[str, AttributeValue]:
        """Our billing attributes of the span."""
        processing = result.processing if result is not None else self.processing
        attrs: dict[str, AttributeValue] = {
            sc.BILLING_PRICING_STATUS: (
                result.status if result is not None else sc.STATUS_UNPRICED
            ),
            sc.BILLING_PROCESSING: processing,
            sc.BILLING_CONTEXT_TIER: result.context_tier if result is not None else "base",
        }
        if result is not None:
            attrs[sc.BILLING_CATALOG_VERSION] = result.catalog_version
            if result.price_id:
                attrs[sc.BILLING_PRICE_ID] = result.price_id
            if result.total is not None:
                attrs[sc.GEN_AI_USAGE_COST_AMOUNT] = float(result.total)
                attrs[sc.GEN_AI_USAGE_COST_CURRENCY] = result.currency
                attrs[sc.GEN_AI_USAGE_COST_SOURCE] = sc.COST_SOURCE_LOCAL
                attrs[sc.BILLING_COST_DECIMAL] = decimal_str(result.total)
        return attrs

    def _record_billing(
        self,
        usage: TokenUsage,
        result: PriceResult | None,
        attrs: Mapping[str, AttributeValue],
    ) -> None:
        recorder = self.recorder
        point: dict[str, AttributeValue] = {
            key: attrs[key]
            for key in (sc.GEN_AI_PROVIDER_NAME, sc.GEN_AI_REQUEST_MODEL, sc.GEN_AI_RESPONSE_MODEL)
            if key in attrs
        }
        point[sc.GEN_AI_OPERATION_NAME] = self.request.operation
        point[sc.BILLING_PROCESSING] = result.processing if result is not None else self.processing
        point[sc.BILLING_CONTEXT_TIER] = result.context_tier if result is not None else "base"
        point[sc.BILLING_USAGE_SOURCE] = usage.source
        attribution = self.attribution
        if attribution:
            point.update(recorder.guard.metric_attributes(attribution))
        # Tokens first: whatever happens to pricing, the usage is counted.
        for bucket, count in usage.buckets():
            recorder.billing_tokens.add(count, {**point, sc.BILLING_TOKEN_BUCKET: bucket})
        status = result.status if result is not None else sc.STATUS_UNPRICED
        if result is None or result.total is None:
            recorder.unpriced.add(1, {**point, sc.BILLING_PRICING_STATUS: status})
        else:
            # One cost point per call (not per bucket): per-bucket cost is derived exactly
            # from the token points, which carry every attribute that changes the price.
            point[sc.GEN_AI_USAGE_COST_CURRENCY] = result.currency
            point[sc.BILLING_PRICING_STATUS] = status
            recorder.cost.add(float(result.total), point)


class HeldEnd:
    """Stands in for an adopted span's ``end`` while its owner finishes it: it only notes the
    end time, and the `Call` ends the span there once our attributes are on it."""

    __slots__ = ("end_ns",)

    def __init__(self) -> None:
        self.end_ns: int | None = None

    def __call__(self, end_time: int | None = None) -> None:
        if self.end_ns is None:
            self.end_ns = end_time if end_time is not None else time.time_ns()


def hold_end(span: Any) -> HeldEnd | None:
    """Hold ``span``'s end (see `HeldEnd`); None if the span takes no attribute."""
    held = HeldEnd()
    try:
        span.end = held
    except Exception:
        return None
    return held


def release_end(call: Call, span: Any, held: HeldEnd) -> None:
    """Give ``span`` its own ``end`` back; if its owner ended it meanwhile, ``call`` ends it."""
    try:
        del span.end
    except Exception as exc:
        log_once("span.release", exc)
    if held.end_ns is not None:
        call.hold_end(held.end_ns)


def _processing_of_tier(tier: str) -> Processing | None:
    tier = tier.lower()
    if tier in ("flex", "priority", "batch"):
        return tier  # type: ignore[return-value]
    if tier in ("default", "standard", "auto", "scale", "standard_only"):
        return "standard"
    return None
