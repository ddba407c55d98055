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
from datetime import UTC, datetime
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


class Recorder:
    """Tracer, metric instruments and catalog shared by every call of an instrumentor."""

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        catalog: Catalog | None = None,
        extra_attributes: Callable[[], Mapping[str, AttributeValue]] | None = None,
        budgets: BudgetManager | None = None,
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
        # (asynchronous counters): a synchronous measurement costs the caller ~10 us each,
        # and a call makes one per bucket. One set per meter provider: an instrument is
        # registered once, whatever the number of recorders (re-instrumenting) using it.
        self.billing_tokens, self.cost, self.unpriced = _billing_sums(meter_provider, meter)
        self._catalog = catalog
        self.extra_attributes = extra_attributes
        self.guard = CardinalityGuard()
        self.budgets = budgets

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
        """Start metering one API call.

        ``defer_span``: another span (the client library's own) may carry this call; create
        ours only at the end if none was adopted with `Call.adopt`.
        """
        return Call(
            self,
            operation=operation,
            provider=provider,
            request_model=request_model,
            server_address=server_address,
            server_port=server_port,
            stream=stream,
            processing=processing,
            attributes=attributes,
            defer_span=defer_span,
        )


class Call:
    """One metered API call: its span, timing and response facts, ended exactly once."""

    __slots__ = (
        "__weakref__",
        "_ended",
        "_error",
        "_owns_span",
        "_result",
        "common",
        "finisher",
        "first_chunk_ns",
        "metric_attribution",
        "name",
        "operation",
        "parent",
        "pending",
        "processing",
        "provider",
        "recorder",
        "request_model",
        "reservation",
        "response_model",
        "rollups",
        "salvaged",
        "span",
        "start_ns",
        "stream",
    )

    def __init__(
        self,
        recorder: Recorder,
        *,
        operation: str,
        provider: str,
        request_model: str | None,
        server_address: str | None,
        server_port: int | None,
        stream: bool,
        processing: Processing,
        attributes: Mapping[str, AttributeValue] | None,
        defer_span: bool,
    ) -> None:
        self.recorder = recorder
        self.operation = operation
        self.provider = provider
        self.request_model = request_model
        self.response_model: str | None = None
        self.stream = stream
        self.processing: Processing = processing
        self.first_chunk_ns: int | None = None
        self.finisher: Any = None  # the stream's finisher, for hooks that end streams early
        self._ended = False
        self._error: tuple[str, str] | None = None
        self._result: PriceResult | None = None
        # Usage of a billed response the client then failed to parse (see _wrapper).
        self.salvaged: TokenUsage | None = None
        self.reservation: Reservation | None = None  # budgets drawn on before sending
        common: dict[str, AttributeValue] = {
            sc.GEN_AI_OPERATION_NAME: operation,
            sc.GEN_AI_PROVIDER_NAME: provider,
        }
        if request_model:
            common[sc.GEN_AI_REQUEST_MODEL] = request_model
        if server_address:
            common[sc.SERVER_ADDRESS] = server_address
            if server_port:
                common[sc.SERVER_PORT] = server_port
        self.common = common
        span_attributes: dict[str, AttributeValue] = dict(common)
        if stream:
            span_attributes[sc.GEN_AI_REQUEST_STREAM] = True
        if attributes:
            span_attributes.update(attributes)
        if recorder.extra_attributes is not None:
            span_attributes.update(recorder.extra_attributes())
        attribution = current_attribution()
        self.metric_attribution: dict[str, str] | None = None
        if attribution:
            span_attributes.update(attribution)
            self.metric_attribution = recorder.guard.metric_attributes(attribution)
        self.rollups = open_rollups()
        self.start_ns = time.time_ns()
        self.name = f"{operation} {request_model}" if request_model else operation
        # Attributes learnt after the start are written in one go at the end.
        self.pending: dict[str, AttributeValue] = {}
        self.span: Span | None
        # A deferred span is made at the end, perhaps in another context: keep its parent.
        self.parent = otel_context.get_current() if defer_span else None
        if defer_span:
            self.span = None
            self.pending.update(span_attributes)
        else:
            self.span = recorder.tracer.start_span(
                self.name,
                kind=SpanKind.CLIENT,
                attributes=span_attributes,
                start_time=self.start_ns,
            )
        self._owns_span = not defer_span

    def adopt(self, span: Span) -> None:
        """Carry this call on ``span`` (the client library's own), which its owner ends."""
        if self.span is None and span.is_recording():
            self.span = span
            self._owns_span = False

    def activate(self) -> object:
        """Make our span current (so HTTP spans nest under it); give the token to `deactivate`."""
        if self.span is None:
            return None
        return otel_context.attach(trace.set_span_in_context(self.span))

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
        if self._ended:
            return
        self._ended = True
        try:
            self._record(usage, error)
        except Exception as exc:
            log_once("recording", exc)
        finally:
            if self._owns_span and self.span is not None:
                try:
                    self.span.end()
                except Exception as exc:
                    log_once("span.end", exc)

    @property
    def ended(self) -> bool:
        return self._ended

    # --- internals -------------------------------------------------------------------
    def _record(self, usage: TokenUsage | None, error: BaseException | None) -> None:
        recorder = self.recorder
        pending = self.pending
        end_ns = time.time_ns()
        attrs = dict(self.common)
        if self.response_model:
            attrs[sc.GEN_AI_RESPONSE_MODEL] = self.response_model
        if error is not None:
            self._error = (type(error).__qualname__, str(error))
        if self._error is not None:
            pending[sc.ERROR_TYPE] = self._error[0]
            attrs[sc.ERROR_TYPE] = self._error[0]
        recorder.duration.record((end_ns - self.start_ns) / 1e9, attrs)
        if self.first_chunk_ns is not None:
            ttfc = (self.first_chunk_ns - self.start_ns) / 1e9
            recorder.time_to_first_chunk.record(ttfc, attrs)
            pending[sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = ttfc
        try:
            if usage is not None:
                pending.update(usage.to_attributes())
                attrs.pop(sc.ERROR_TYPE, None)
                self._record_usage(usage, attrs)
        finally:
            if self.reservation is not None:  # settled once (a no-op if already settled)
                self.reservation.settle(usage, self._result)
            self._write_span(error)

    def _write_span(self, error: BaseException | None) -> None:
        span = self.span
        if span is None:  # deferred and nothing adopted: our own span after all
            span = self.span = self.recorder.tracer.start_span(
                self.name, context=self.parent, kind=SpanKind.CLIENT, start_time=self.start_ns
            )
            self._owns_span = True
        if not span.is_recording():
            return
        span.set_attributes(self.pending)
        if self._error is not None:
            span.set_status(Status(StatusCode.ERROR, self._error[1][:200]))
        if error is not None and self._owns_span:
            span.record_exception(error)

    def _record_usage(self, usage: TokenUsage, attrs: dict[str, AttributeValue]) -> None:
        recorder = self.recorder
        if usage.input_total or usage.output_total:
            recorder.token_usage.record(
                usage.input_total, {**attrs, sc.GEN_AI_TOKEN_TYPE: sc.TOKEN_TYPE_INPUT}
            )
            recorder.token_usage.record(
                usage.output_total, {**attrs, sc.GEN_AI_TOKEN_TYPE: sc.TOKEN_TYPE_OUTPUT}
            )
        try:
            result: PriceResult | None = self._price(usage)
        except Exception as exc:  # a broken catalog: the tokens are still counted
            log_once("pricing", exc)
            result = None
        self._record_billing(usage, result, attrs)
        for rollup in self.rollups:
            rollup.add(usage, result)
        self._result = result

    def _price(self, usage: TokenUsage) -> PriceResult:
        catalog = self.recorder.catalog
        at = datetime.fromtimestamp(self.start_ns / 1e9, UTC)
        model = self.response_model or self.request_model or ""
        result = catalog.price(
            usage, model, provider=self.provider, at=at, processing=self.processing
        )
        if (
            result.status == sc.STATUS_UNPRICED
            and self.request_model
            and self.request_model != model
        ):
            fallback = catalog.price(
                usage,
                self.request_model,
                provider=self.provider,
                at=at,
                processing=self.processing,
            )
            if fallback.is_priced:
                return fallback
        return result

    def _record_billing(
        self,
        usage: TokenUsage,
        result: PriceResult | None,
        attrs: Mapping[str, AttributeValue],
    ) -> None:
        recorder = self.recorder
        processing = result.processing if result is not None else self.processing
        context_tier = result.context_tier if result is not None else "base"
        point: dict[str, AttributeValue] = {
            key: attrs[key]
            for key in (sc.GEN_AI_PROVIDER_NAME, sc.GEN_AI_REQUEST_MODEL, sc.GEN_AI_RESPONSE_MODEL)
            if key in attrs
        }
        point[sc.GEN_AI_OPERATION_NAME] = self.operation
        point[sc.BILLING_PROCESSING] = processing
        point[sc.BILLING_CONTEXT_TIER] = context_tier
        point[sc.BILLING_USAGE_SOURCE] = usage.source
        if self.metric_attribution:
            point.update(self.metric_attribution)
        # Tokens first: whatever happens to pricing, the usage is counted.
        for bucket, count in usage.buckets():
            recorder.billing_tokens.add(count, {**point, sc.BILLING_TOKEN_BUCKET: bucket})
        status = result.status if result is not None else sc.STATUS_UNPRICED
        if result is None or result.total is None:
            recorder.unpriced.add(1, {**point, sc.BILLING_PRICING_STATUS: status})
        else:
            # One cost point per call (not per bucket): each metric point costs the caller
            # microseconds, and per-bucket cost is derived exactly from the token points.
            point[sc.GEN_AI_USAGE_COST_CURRENCY] = result.currency
            point[sc.BILLING_PRICING_STATUS] = status
            recorder.cost.add(float(result.total), point)
        span_attrs: dict[str, AttributeValue] = {
            sc.BILLING_PRICING_STATUS: status,
            sc.BILLING_PROCESSING: processing,
            sc.BILLING_CONTEXT_TIER: context_tier,
        }
        if result is not None:
            span_attrs[sc.BILLING_CATALOG_VERSION] = result.catalog_version
            if result.price_id:
                span_attrs[sc.BILLING_PRICE_ID] = result.price_id
            if result.total is not None:
                span_attrs[sc.GEN_AI_USAGE_COST_AMOUNT] = float(result.total)
                span_attrs[sc.GEN_AI_USAGE_COST_CURRENCY] = result.currency
                span_attrs[sc.GEN_AI_USAGE_COST_SOURCE] = sc.COST_SOURCE_LOCAL
                span_attrs[sc.BILLING_COST_DECIMAL] = decimal_str(result.total)
        self.pending.update(span_attrs)


def _processing_of_tier(tier: str) -> Processing | None:
    tier = tier.lower()
    if tier in ("flex", "priority", "batch"):
        return tier  # type: ignore[return-value]
    if tier in ("default", "standard", "auto", "scale", "standard_only"):
        return "standard"
    return None
