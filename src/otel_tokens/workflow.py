"""Roll up the cost of an agent task: every model call inside, nested workflows included.

``workflow(name)`` (a context manager and a decorator, sync and async) opens a span; when it
ends the span carries the total tokens per bucket and the total cost of every model call
that finished inside it, counted once, and a ``gen_ai.billing.workflow.cost`` point is
recorded for the name. The workflow travels in the OpenTelemetry context, so calls made in
asyncio tasks, and in threads started with the context (OpenTelemetry's threading
instrumentation or ``contextvars.copy_context()``), are included. A call still streaming
when its workflow ends is not in the workflow's total (it is in its own span and metrics).
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable
from contextvars import ContextVar
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar, cast

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.metrics import MeterProvider, get_meter
from opentelemetry.trace import Span, TracerProvider

from . import semconv as sc
from .usage import TokenUsage

if TYPE_CHECKING:  # pricing loads the price catalog's data: not at start-up
    from .pricing import PriceResult

F = TypeVar("F", bound=Callable[..., Any])
_KEY = otel_context.create_key("otel_tokens.workflows")


class Rollup:
    """Totals of one open workflow; calls add to every workflow enclosing them."""

    __slots__ = ("calls", "costs", "lock", "name", "unpriced", "usage")

    def __init__(self, name: str) -> None:
        self.name = name
        self.usage = TokenUsage()
        self.costs: dict[str, Decimal] = {}
        self.calls = 0
        self.unpriced = 0
        self.lock = threading.Lock()

    def add(self, usage: TokenUsage, result: PriceResult | None) -> None:
        with self.lock:
            self.calls += 1
            self.usage = self.usage + usage
            if result is None or result.total is None:
                self.unpriced += 1
            else:
                self.costs[result.currency] = (
                    self.costs.get(result.currency, Decimal(0)) + result.total
                )


def open_rollups(context: Context | None = None) -> tuple[Rollup, ...]:
    """The workflows enclosing ``context`` (default: the current one), outermost first."""
    value = otel_context.get_value(_KEY, context)
    return value if isinstance(value, tuple) else ()


# The workflow blocks open in the current context, innermost last: (workflow, span, totals,
# context token). Kept per context, not on the instance, so that one workflow object entered
# by concurrent tasks or threads keeps their runs apart.
_OPEN: ContextVar[tuple[tuple[workflow, Span, Rollup, object], ...]] = ContextVar(
    "otel_tokens_workflow_open", default=()
)


class workflow:
    """An agent task whose span totals the tokens and cost of the model calls inside it."""

    def __init__(
        self,
        name: str,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self.name = name
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self._last: Rollup | None = None

    @property
    def rollup(self) -> Rollup:
        """The totals of the innermost open use of this workflow object in this context,
        else of its last run."""
        for owner, _, rollup, _ in reversed(_OPEN.get()):
            if owner is self:
                return rollup
        if self._last is None:
            raise LookupError(f"workflow {self.name!r} has not run")
        return self._last

    def __enter__(self) -> workflow:
        tracer = trace.get_tracer("otel_tokens", tracer_provider=self._tracer_provider)
        span = tracer.start_span(
            f"workflow {self.name}", attributes={sc.GEN_AI_WORKFLOW_NAME: self.name}
        )
        rollup = Rollup(self.name)
        ctx = trace.set_span_in_context(span)
        ctx = otel_context.set_value(_KEY, (*open_rollups(), rollup), ctx)
        token = otel_context.attach(ctx)
        _OPEN.set((*_OPEN.get(), (self, span, rollup, token)))
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        stack = _OPEN.get()
        mine = [i for i, entry in enumerate(stack) if entry[0] is self]
        if not mine:
            return
        i = mine[-1]
        _, span, rollup, token = stack[i]
        _OPEN.set(stack[:i] + stack[i + 1 :])
        self._last = rollup
        otel_context.detach(token)  # type: ignore[arg-type]
        with rollup.lock:
            usage, costs, calls, unpriced = (
                rollup.usage,
                dict(rollup.costs),
                rollup.calls,
                rollup.unpriced,
            )
        attrs: dict[str, Any] = {
            sc.BILLING_WORKFLOW_USAGE_PREFIX + bucket: count for bucket, count in usage.buckets()
        }
        attrs[sc.BILLING_WORKFLOW_CALLS] = calls
        attrs[sc.BILLING_WORKFLOW_UNPRICED_CALLS] = unpriced
        if len(costs) == 1:
            ((currency, total),) = costs.items()
            from .pricing import decimal_str

            attrs[sc.BILLING_WORKFLOW_COST_DECIMAL] = decimal_str(total)
            attrs[sc.BILLING_WORKFLOW_COST_CURRENCY] = currency
        span.set_attributes(attrs)
        if exc is not None:
            span.set_attribute(sc.ERROR_TYPE, type(exc).__qualname__)
            span.set_status(trace.Status(trace.StatusCode.ERROR, str(exc)[:200]))
        span.end()
        meter = get_meter("otel_tokens", meter_provider=self._meter_provider)
        histogram = meter.create_histogram(
            sc.METRIC_BILLING_WORKFLOW_COST,
            unit="{currency}",
            description="Total cost of the model calls of one workflow run.",
        )
        for currency, total in costs.items():
            histogram.record(
                float(total),
                {sc.GEN_AI_WORKFLOW_NAME: self.name, sc.GEN_AI_USAGE_COST_CURRENCY: currency},
            )

    async def __aenter__(self) -> workflow:
        return self.__enter__()

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.__exit__(exc_type, exc, tb)

    def __call__(self, func: F) -> F:
        name, tp, mp = self.name, self._tracer_provider, self._meter_provider
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with workflow(name, tracer_provider=tp, meter_provider=mp):
                    return await func(*args, **kwargs)

            return cast(F, async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with workflow(name, tracer_provider=tp, meter_provider=mp):
                return func(*args, **kwargs)

        return cast(F, wrapper)
