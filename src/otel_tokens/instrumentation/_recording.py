"""The one recording path every call ends through.

`Recorder` holds what every call of an instrumentor shares (tracer, metric instruments,
catalog, budgets). `Recorder.finish` turns a call's facts into a price, the span's
attributes and the metric points, on the thread that ends the call, exactly once, and never
raises. The price catalog, and the modules that pull it in, load on the first call, not when
the application starts.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

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
from opentelemetry.trace import Status, StatusCode, Tracer, TracerProvider
from opentelemetry.util.types import AttributeValue

from .. import semconv as sc
from .._safety import log_once
from ..attribution import CardinalityGuard
from ._adapter import Request, ResponseFacts
from ._call import Call
from ._points import Shape, Shapes, SumKey
from ._reconcile import Reconciler

if TYPE_CHECKING:
    from ..budgets import BudgetManager
    from ..pricing import Catalog, PriceResult, Processing

_SCOPE = "otel_tokens"
_SCHEMA_URL = "https://opentelemetry.io/schemas/1.37.0"


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
        self._values: dict[SumKey, float] = {}
        self._lock = threading.Lock()

    def add(self, amount: float, attributes: Mapping[str, AttributeValue]) -> None:
        self.add_keys([(tuple(attributes.items()), amount)])

    def add_keys(self, amounts: list[tuple[SumKey, float]]) -> None:
        """Add each amount to its key (``tuple(attributes.items())``), under one lock."""
        values = self._values
        with self._lock:
            for key, amount in amounts:
                values[key] = values.get(key, 0) + amount

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


class _Late:
    """The pricing and workflow modules, imported on the first call that ends: they load the
    price catalog's data, which an application that has not made a call yet should not
    wait for."""

    __slots__ = ("decimal_str", "default_catalog", "open_rollups")

    def __init__(self) -> None:
        from ..pricing import decimal_str, default_catalog
        from ..workflow import open_rollups

        self.decimal_str = decimal_str
        self.default_catalog = default_catalog
        self.open_rollups = open_rollups


class Recorder:
    """Tracer, metric instruments, catalog and budgets shared by every call of an
    instrumentor, and the one path that records a call when it ends (`finish`)."""

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        catalog: Catalog | None = None,
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
        # (asynchronous counters): a synchronous measurement costs ~10 us each, and a call
        # makes one per bucket. One set per meter provider: an instrument is registered
        # once, whatever the number of recorders (re-instrumenting) using it.
        self.billing_tokens, self.cost, self.unpriced = _billing_sums(meter_provider, meter)
        self.reconciler = Reconciler(meter)
        self._catalog = catalog
        self._late: _Late | None = None
        self.guard = CardinalityGuard()
        self.shapes = Shapes()
        self.budgets = budgets

    @property
    def catalog(self) -> Catalog:
        return self._catalog or self.late.default_catalog()

    @property
    def late(self) -> _Late:
        late = self._late
        if late is None:
            late = self._late = _Late()
        return late

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
        """Start metering one API call by hand (the instrumentors' wrapper makes `Call`s
        itself); end it with `Call.end` or `Call.end_with`.

        ``defer_span``: another span (the client library's own) may carry this call; adopt
        it with `Call.adopt`, else none is made.
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

    # --- the end of a call ---------------------------------------------------------------
    def finish(
        self, call: Call, facts: ResponseFacts, error: BaseException | None, end_ns: int
    ) -> None:
        """Price ``call``'s usage, write and end its span, record its metric points; never
        raises. Called once per call, by `Call.end_with`."""
        late = self.late
        ended = _Ended(call, facts, error, end_ns)
        result: PriceResult | None = None
        try:
            result = self._record_span(ended, late)
        except Exception as exc:
            log_once("recording", exc)
        finally:
            span = call.span
            if span is not None and call.owns_span:
                try:
                    span.end(end_time=end_ns)
                except Exception as exc:
                    log_once("span.end", exc)
            elif call.peer_end is not None:  # the peer's span: ended once both are done
                try:
                    call.peer_end.written(ended.written)
                except Exception as exc:
                    log_once("span.end", exc)
        try:
            self._record_points(ended, result, late)
        except Exception as exc:
            log_once("metrics", exc)

    def _record_span(self, ended: _Ended, late: _Late) -> PriceResult | None:
        call, facts, usage = ended.call, ended.facts, ended.facts.usage
        pending: dict[str, AttributeValue] = {}
        if facts.model:
            pending[sc.GEN_AI_RESPONSE_MODEL] = facts.model
        if facts.response_id:
            pending[sc.GEN_AI_RESPONSE_ID] = facts.response_id
        if facts.finish_reasons:
            pending[sc.GEN_AI_RESPONSE_FINISH_REASONS] = list(facts.finish_reasons)
        if facts.attributes:
            pending.update(facts.attributes)
        if ended.error_type is not None:
            pending[sc.ERROR_TYPE] = ended.error_type[0]
        if call.first_chunk_ns is not None:
            pending[sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = (
                call.first_chunk_ns - call.start_ns
            ) / 1e9
        result: PriceResult | None = None
        try:
            if usage is not None:
                pending.update(usage.to_attributes())
                try:
                    result = self._price(ended)
                except Exception as exc:  # a broken catalog: the tokens are still counted
                    log_once("pricing", exc)
                pending.update(_billing_attributes(ended, result, late))
            if facts.provider_cost is not None:
                pending.update(self._reconcile(ended, result))
        finally:
            try:
                if call.reservation is not None:  # settled once (a no-op if already settled)
                    call.reservation.settle(usage, result)
            finally:
                _write_span(ended, pending)
        return result

    def _reconcile(self, ended: _Ended, result: PriceResult | None) -> dict[str, AttributeValue]:
        call, facts = ended.call, ended.facts
        assert facts.provider_cost is not None
        ours = (result.total, result.currency) if result is not None else (None, None)
        return self.reconciler.reconcile(facts.provider_cost, ours, call.request, facts.model)

    def _price(self, ended: _Ended) -> PriceResult:
        call, usage = ended.call, ended.facts.usage
        assert usage is not None
        return self.catalog.price_call(
            usage,
            ended.facts.model,
            call.request.model,
            provider=call.request.provider,
            at=datetime.fromtimestamp(call.start_ns / 1e9, UTC),
            processing=ended.processing,
        )

    def _record_points(self, ended: _Ended, result: PriceResult | None, late: _Late) -> None:
        call, usage = ended.call, ended.facts.usage
        # Riding on a peer's span (_peer_span.py): the peer records the GenAI client
        # metrics of the call; the billing points are ours alone. A peer that is active but
        # sampled this call out records them all the same (its span does not record, so it
        # was not adopted; ours does not record either, under the same sampling).
        peer = call.peer_end is not None or (
            call.request.defer_span and call.span is not None and not call.span.is_recording()
        )
        error_type = ended.error_type[0] if ended.error_type is not None else None
        shape = self.shapes.of(call.request, ended.facts.model, error_type)
        # The context the call was made in: exemplars link to the call's parent span.
        context = call.parent
        if not peer:
            self.duration.record((ended.end_ns - call.start_ns) / 1e9, shape.duration, context)
        if call.first_chunk_ns is not None:
            ttfc = (call.first_chunk_ns - call.start_ns) / 1e9
            self.time_to_first_chunk.record(ttfc, shape.duration, context)
        if usage is None:
            return
        input_total, output_total = usage.input_total, usage.output_total
        if not peer and (input_total or output_total):
            self.token_usage.record(input_total, shape.input, context)
            self.token_usage.record(output_total, shape.output, context)
        self._record_billing(ended, result, shape)
        for rollup in late.open_rollups(context):
            rollup.add(usage, result)

    def _record_billing(self, ended: _Ended, result: PriceResult | None, shape: Shape) -> None:
        call, usage = ended.call, ended.facts.usage
        assert usage is not None
        attribution = call.attribution
        billing = shape.billing(
            result.processing if result is not None else ended.processing,
            result.context_tier if result is not None else "base",
            usage.source,
            self.guard.metric_attributes(attribution) if attribution else _NONE,
        )
        # Tokens first: whatever happens to pricing, the usage is counted.
        self.billing_tokens.add_keys(
            [(billing.bucket(bucket), count) for bucket, count in usage.buckets()]
        )
        status = result.status if result is not None else sc.STATUS_UNPRICED
        if result is None or result.total is None:
            self.unpriced.add_keys([(billing.status(status), 1)])
        else:
            # One cost point per call (not per bucket): per-bucket cost is derived exactly
            # from the token points, which carry every attribute that changes the price.
            self.cost.add_keys([(billing.status(status, result.currency), float(result.total))])


_NONE: Mapping[str, str] = {}


class _Ended:
    """A call at its end: its facts, the error it ended with, and what follows from both."""

    __slots__ = ("call", "end_ns", "error", "error_type", "facts", "processing", "written")

    def __init__(
        self, call: Call, facts: ResponseFacts, error: BaseException | None, end_ns: int
    ) -> None:
        self.call = call
        self.facts = facts
        self.error = error
        self.end_ns = end_ns
        self.processing: Processing = facts.processing or call.request.processing
        self.written: dict[str, AttributeValue] = {}  # what was written on a span not ours
        # (type, message): what the call raised, else a failure the response reported.
        self.error_type: tuple[str, str] | None = (
            (type(error).__qualname__, str(error)) if error is not None else facts.error
        )


def _billing_attributes(
    ended: _Ended, result: PriceResult | None, late: _Late
) -> dict[str, AttributeValue]:
    """Our billing attributes of the span."""
    attrs: dict[str, AttributeValue] = {
        sc.BILLING_PRICING_STATUS: (result.status if result is not None else sc.STATUS_UNPRICED),
        sc.BILLING_PROCESSING: result.processing if result is not None else ended.processing,
        sc.BILLING_CONTEXT_TIER: result.context_tier if result is not None else "base",
    }
    if result is not None:
        attrs[sc.BILLING_CATALOG_VERSION] = result.catalog_version
        if result.price_id:
            attrs[sc.BILLING_PRICE_ID] = result.price_id
        if result.priced_model:
            attrs[sc.BILLING_PRICED_MODEL] = result.priced_model
        if result.total is not None:
            attrs[sc.GEN_AI_USAGE_COST_AMOUNT] = float(result.total)
            attrs[sc.GEN_AI_USAGE_COST_CURRENCY] = result.currency
            attrs[sc.GEN_AI_USAGE_COST_SOURCE] = sc.COST_SOURCE_LOCAL
            attrs[sc.BILLING_COST_DECIMAL] = late.decimal_str(result.total)
    return attrs


def _write_span(ended: _Ended, pending: dict[str, AttributeValue]) -> None:
    call = ended.call
    span = call.span
    if span is None or not span.is_recording():
        return
    if call.owns_span:
        span.set_attributes(pending)
    else:
        # The library's span: ours is not made, so it gets the request facts too. What the
        # library wrote itself stays (as when we write first and it writes last).
        attrs = call.start_attributes()
        attrs.update(pending)
        if call.peer_end is not None:
            # A peer's span: ours win (written again last, when the peer ends it).
            span.set_attributes(attrs)
            ended.written = attrs
        else:
            existing = getattr(span, "attributes", None) or {}
            span.set_attributes({k: v for k, v in attrs.items() if k not in existing})
        status = getattr(span, "status", None)
        if status is not None and status.status_code is not StatusCode.UNSET:
            return
    if ended.error_type is not None:
        span.set_status(Status(StatusCode.ERROR, ended.error_type[1][:200]))
    if ended.error is not None and call.owns_span:
        span.record_exception(ended.error, timestamp=ended.end_ns)
