"""The collector's counters and their Prometheus text exposition (format 0.0.4).

Cost and token counters add up the cost records this process wrote since it started;
summed over replicas (and restarts, with ``increase()``) they give the ledger's totals.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ..metering import MAX_LABELLED_SERIES, LedgerCost, fold
from ..records import CostRecord

__all__ = [
    "CONTENT_TYPE",
    "COUNTS",
    "MAX_LABELLED_SERIES",
    "Snapshot",
    "Stats",
    "escape_label",
    "render",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_COST_LABELS = ("provider", "model", "bucket", "tenant", "feature", "currency")
_TOKEN_LABELS = ("provider", "model", "bucket", "tenant", "feature")
_UNPRICED_LABELS = ("provider", "model", "bucket")


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float | int | Decimal) -> str:
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


# The unlabelled counters of `Stats`, by attribute name.
COUNTS = (
    "points",
    "rejected",
    "unchanged",
    "records",
    "ledger_errors",
    "forward_errors",
    "overloaded",
)


@dataclass
class Snapshot:
    """The counters of `Stats` at one moment, as plain values: what `render` shows, and
    what worker processes add up (`add`) so that ``/metrics`` describes the whole collector.

    ``cost`` is keyed as `LedgerCost`'s totals (with currency and pricing status)."""

    cost: dict[tuple[str, ...], Decimal] = field(default_factory=dict)
    tokens: dict[tuple[str, ...], int] = field(default_factory=dict)
    unpriced: dict[tuple[str, ...], int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTS, 0))
    requests: dict[tuple[str, ...], int] = field(default_factory=dict)

    def add(self, other: Snapshot) -> None:
        """Add ``other``'s counters to these. Label sets are capped again (`fold`): each
        worker keeps at most the cap, their sum would not."""
        tables: tuple[tuple[dict[tuple[str, ...], Any], Mapping[tuple[str, ...], Any]], ...] = (
            (self.cost, other.cost),
            (self.tokens, other.tokens),
            (self.unpriced, other.unpriced),
        )
        for mine, theirs in tables:
            for key, value in theirs.items():
                folded = fold(mine, key)
                mine[folded] = mine.get(folded, 0) + value
        for name, n in other.counts.items():
            self.counts[name] = self.counts.get(name, 0) + n
        for rkey, n in other.requests.items():  # a closed set: transports, signals, codes
            self.requests[rkey] = self.requests.get(rkey, 0) + n


class Stats:
    """Thread-safe counters; `render` gives the ``/metrics`` page."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Cost by (provider, model, bucket, tenant, feature, currency, pricing status): the
        # totals of the ledger cost metric, which the collector forwards (`cost_metrics`).
        self.ledger_cost = LedgerCost()
        self.tokens: dict[tuple[str, ...], int] = {}
        self.unpriced: dict[tuple[str, ...], int] = {}
        self.points = 0
        self.rejected = 0
        self.unchanged = 0
        self.records = 0
        self.ledger_errors = 0
        self.forward_errors = 0
        self.overloaded = 0
        self.requests: dict[tuple[str, ...], int] = {}

    @property
    def cost(self) -> dict[tuple[str, ...], Decimal]:
        return self.ledger_cost.totals()

    def add_records(self, records: Iterable[CostRecord]) -> None:
        records = list(records)
        self.ledger_cost.add(records)
        with self._lock:
            for r in records:
                self.records += 1
                labels = (r.provider, r.model, r.bucket, r.tenant or "", r.feature or "")
                key = fold(self.tokens, labels)
                self.tokens[key] = self.tokens.get(key, 0) + r.quantity
                if r.billed_cost is None:
                    ukey = fold(self.unpriced, labels[:3])
                    self.unpriced[ukey] = self.unpriced.get(ukey, 0) + r.quantity

    def add_points(self, points: int, rejected: int, unchanged: int) -> None:
        with self._lock:
            self.points += points
            self.rejected += rejected
            self.unchanged += unchanged

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def request(self, transport: str, signal: str, code: str) -> None:
        key = (transport, signal, code)
        with self._lock:
            self.requests[key] = self.requests.get(key, 0) + 1

    def snapshot(self) -> Snapshot:
        """A copy of every counter."""
        cost = self.ledger_cost.totals()
        with self._lock:
            return Snapshot(
                cost=cost,
                tokens=dict(self.tokens),
                unpriced=dict(self.unpriced),
                counts={name: getattr(self, name) for name in COUNTS},
                requests=dict(self.requests),
            )

    def render(self, queue_depth: int, queue_capacity: int, ledger_up: bool) -> str:
        return render(self.snapshot(), queue_depth, queue_capacity, ledger_up)


def render(
    snapshot: Snapshot,
    queue_depth: int,
    queue_capacity: int,
    ledger_up: bool,
    workers: int | None = None,
) -> str:
    """The ``/metrics`` page (Prometheus text) of ``snapshot`` and the gauges given;
    ``workers``: the worker processes whose counters it sums (``--workers``), if any."""
    lines: list[str] = []

    def family(
        name: str,
        kind: str,
        help_text: str,
        labels: tuple[str, ...],
        samples: Mapping[Any, float | int | Decimal],
    ) -> None:
        lines.append(f"# HELP {name} {_escape_help(help_text)}")
        lines.append(f"# TYPE {name} {kind}")
        for key, value in sorted(samples.items()):
            if labels:
                pairs = ",".join(
                    f'{label}="{escape_label(v)}"' for label, v in zip(labels, key, strict=True)
                )
                lines.append(f"{name}{{{pairs}}} {_number(value)}")
            else:
                lines.append(f"{name} {_number(value)}")

    cost: dict[tuple[str, ...], Decimal] = {}
    for key, value in snapshot.cost.items():  # pricing status is not a label here
        cost[key[:-1]] = cost.get(key[:-1], Decimal(0)) + value
    family(
        "otel_tokens_cost_total",
        "counter",
        "Cost of the cost records written by this collector since it started.",
        _COST_LABELS,
        cost,
    )
    family(
        "otel_tokens_tokens_total",
        "counter",
        "Tokens (requests for the web_search bucket) in the cost records written since start.",
        _TOKEN_LABELS,
        snapshot.tokens,
    )
    family(
        "otel_tokens_unpriced_tokens_total",
        "counter",
        "Tokens in cost records written without a price (unpriced or "
        "variant_unavailable) since start.",
        _UNPRICED_LABELS,
        snapshot.unpriced,
    )
    counts = snapshot.counts
    scalars: list[tuple[str, str, int]] = [
        (
            "otel_tokens_ingest_points_total",
            "gen_ai.billing.tokens data points received.",
            counts["points"],
        ),
        (
            "otel_tokens_ingest_rejected_points_total",
            "Data points rejected (reported to clients as OTLP partial success).",
            counts["rejected"],
        ),
        (
            "otel_tokens_ingest_unchanged_points_total",
            "Token points that billed nothing new (duplicates, retries, out of order).",
            counts["unchanged"],
        ),
        (
            "otel_tokens_ingest_records_total",
            "Cost records written to the ledger.",
            counts["records"],
        ),
        (
            "otel_tokens_ingest_ledger_errors_total",
            "Batches refused (retryable) because the ledger failed.",
            counts["ledger_errors"],
        ),
        (
            "otel_tokens_ingest_forward_errors_total",
            "Failed forwards to the upstream endpoint.",
            counts["forward_errors"],
        ),
        (
            "otel_tokens_ingest_overloaded_total",
            "Batches refused (retryable) because the queue was full.",
            counts["overloaded"],
        ),
    ]
    for name, help_text, count in scalars:
        family(name, "counter", help_text, (), {(): count})
    family(
        "otel_tokens_ingest_requests_total",
        "counter",
        "OTLP export requests answered, by transport, signal and status code "
        "(HTTP status or gRPC code name).",
        ("transport", "signal", "code"),
        snapshot.requests,
    )
    family(
        "otel_tokens_ingest_queue_depth",
        "gauge",
        "Batches in flight (admitted, not yet answered).",
        (),
        {(): queue_depth},
    )
    family(
        "otel_tokens_ingest_queue_capacity",
        "gauge",
        "Batches allowed in flight (--max-queue); beyond it requests get 503/UNAVAILABLE.",
        (),
        {(): queue_capacity},
    )
    family(
        "otel_tokens_ledger_up",
        "gauge",
        "1 if the ledger answered its last transaction, else 0.",
        (),
        {(): 1 if ledger_up else 0},
    )
    if workers is not None:
        family(
            "otel_tokens_collector_workers",
            "gauge",
            "Worker processes whose counters this page sums (--workers).",
            (),
            {(): workers},
        )
    return "\n".join(lines) + "\n"
