"""A cost the provider (or a framework) reported beside our own exact price of the same usage:
OpenRouter's ``usage.cost``, LiteLLM's ``response_cost``.

It is a reconciliation signal, never an amount to bill: it goes on the span as
``gen_ai.billing.provider_cost.*`` (the span's ``gen_ai.usage.cost.*`` hold our price), and
the difference, reported minus ours, as the ``gen_ai.billing.cost.difference`` histogram
when both are in one currency. Nothing adds the two into one total.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from opentelemetry.metrics import Histogram, Meter
from opentelemetry.util.types import AttributeValue

from .. import semconv as sc
from ._adapter import Request


def reported_cost(value: Any) -> Decimal | None:
    """A reported cost as an exact ``Decimal`` (a JSON number as written: ``repr`` of the
    float), or None when it is not a finite, non-negative number."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        cost = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except (InvalidOperation, ValueError):
        return None
    return cost if cost.is_finite() and cost >= 0 else None


class Reconciler:
    """The difference histogram, and the span attributes of a reported cost."""

    __slots__ = ("difference",)

    def __init__(self, meter: Meter) -> None:
        self.difference: Histogram = meter.create_histogram(
            sc.METRIC_BILLING_COST_DIFFERENCE,
            unit="{currency}",
            description="Provider-reported cost minus the exact local price of the same usage.",
        )

    def reconcile(
        self,
        reported: tuple[Decimal, str],
        ours: tuple[Decimal | None, str | None],
        request: Request,
        response_model: str | None,
    ) -> dict[str, AttributeValue]:
        """The span attributes of ``reported`` (amount, currency); the difference to ``ours``
        (our exact total and its currency, None when unpriced) recorded by the call's
        provider, operation and models when the currencies agree."""
        from ..pricing import decimal_str

        cost, currency = reported
        total, our_currency = ours
        if total is not None and our_currency == currency:
            point: dict[str, AttributeValue] = {
                sc.GEN_AI_PROVIDER_NAME: request.provider,
                sc.GEN_AI_OPERATION_NAME: request.operation,
                sc.GEN_AI_USAGE_COST_CURRENCY: currency,
            }
            if request.model:
                point[sc.GEN_AI_REQUEST_MODEL] = request.model
            if response_model:
                point[sc.GEN_AI_RESPONSE_MODEL] = response_model
            self.difference.record(float(cost - total), point)
        return {
            sc.BILLING_PROVIDER_COST_DECIMAL: decimal_str(cost),
            sc.BILLING_PROVIDER_COST_CURRENCY: currency,
        }
