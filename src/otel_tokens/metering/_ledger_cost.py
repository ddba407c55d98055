"""``gen_ai.billing.ledger.cost``: the cost of the cost records written, counted as they are
written, for the in-process exporter and the collector alike.

Totals are exact `Decimal` sums (a float running sum drifts: 0.1 + 0.1 + 0.1 is not 0.3),
turned into a float only in the data point, and their label sets are capped (`fold`), so
memory and the exported series stay bounded whatever the cardinality the records carry.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, ClassVar

from .. import semconv as sc
from ..records import CostRecord

# The attributes of a point, in the order of its key; an empty value is left out.
ATTRIBUTES = (
    sc.GEN_AI_PROVIDER_NAME,
    sc.GEN_AI_RESPONSE_MODEL,
    sc.BILLING_TOKEN_BUCKET,
    sc.BILLING_TENANT_ID,
    sc.BILLING_FEATURE,
    sc.GEN_AI_USAGE_COST_CURRENCY,
    sc.BILLING_PRICING_STATUS,
)

# Label sets kept per labelled counter. Beyond it a new label set is counted under its
# provider and model with tenant and feature "other" (at most _FOLD_ROOM such series more),
# then with every open label "other": only the bucket (a closed set), currency and pricing
# status stay, so a table never holds more than about MAX_LABELLED_SERIES + _FOLD_ROOM.
MAX_LABELLED_SERIES = 10_000
_FOLD_ROOM = 1_000
OTHER = "other"


def fold(table: Mapping[tuple[str, ...], Any], key: tuple[str, ...]) -> tuple[str, ...]:
    """The key to count ``key`` under in ``table``: (provider, model, bucket, [tenant,
    feature,] closed labels...)."""
    if key in table or len(table) < MAX_LABELLED_SERIES:
        return key
    provider, model, bucket, *rest = key
    if len(rest) < 2:  # no tenant and feature: (provider, model, bucket)
        return (OTHER, OTHER, bucket, *rest)
    closed = tuple(rest[2:])
    fewer = (provider, model, bucket, OTHER, OTHER, *closed)
    if fewer in table or len(table) < MAX_LABELLED_SERIES + _FOLD_ROOM:
        return fewer
    return (OTHER, OTHER, bucket, OTHER, OTHER, *closed)


class LedgerCost:
    """Running cost of priced cost records by `ATTRIBUTES`; thread-safe."""

    # The metric's name, description and unit, for the data model of each exporter.
    NAME: ClassVar[str] = sc.METRIC_BILLING_LEDGER_COST
    DESCRIPTION: ClassVar[str] = "Cost of the cost records written to the ledger (cumulative)."
    UNIT: ClassVar[str] = "{currency}"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: dict[tuple[str, ...], Decimal] = {}

    def add(self, records: Iterable[CostRecord]) -> None:
        """Count the priced ones of ``records`` (an unpriced record has no cost to add)."""
        with self._lock:
            for r in records:
                if r.billed_cost is None:
                    continue
                key = fold(
                    self._totals,
                    (
                        r.provider,
                        r.model,
                        r.bucket,
                        r.tenant or "",
                        r.feature or "",
                        r.currency,
                        r.pricing_status,
                    ),
                )
                self._totals[key] = self._totals.get(key, Decimal(0)) + r.billed_cost

    def totals(self) -> dict[tuple[str, ...], Decimal]:
        """A copy of the totals, by key (values in `ATTRIBUTES` order)."""
        with self._lock:
            return dict(self._totals)

    def points(self) -> list[tuple[dict[str, str], Decimal]]:
        """(attributes, total) of each series, in key order."""
        return [(attributes(key), total) for key, total in sorted(self.totals().items())]


def attributes(key: tuple[str, ...]) -> dict[str, str]:
    """The point attributes of a totals key: its non-empty values under `ATTRIBUTES`."""
    return {name: value for name, value in zip(ATTRIBUTES, key, strict=True) if value}
