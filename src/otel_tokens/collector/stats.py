"""The collector's counters and their Prometheus text exposition (format 0.0.4).

Cost and token counters add up the cost records this process wrote since it started;
summed over replicas (and restarts, with ``increase()``) they give the ledger's totals.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from ..records import CostRecord

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


# Label sets kept per labelled counter, so that memory and the /metrics page stay bounded
# whatever the cardinality clients send. Beyond it a new label set is counted under its
# provider and model with tenant and feature "other" (at most _FOLD_ROOM such series more),
# then with every open label "other": only the bucket (a closed set), currency and pricing
# status stay, so a family never holds more than about MAX_LABELLED_SERIES + _FOLD_ROOM.
MAX_LABELLED_SERIES = 10_000
_FOLD_ROOM = 1_000
OTHER = "other"


def _fold(table: Mapping[tuple[str, ...], Any], key: tuple[str, ...]) -> tuple[str, ...]:
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


class Stats:
    """Thread-safe counters; `render` gives the ``/metrics`` page."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (provider, model, bucket, tenant, feature, currency, pricing status) -> cost
        self.cost: dict[tuple[str, ...], Decimal] = {}
        self.tokens: dict[tuple[str, ...], int] = {}
        self.unpriced: dict[tuple[str, ...], int] = {}
        self.points = 0
        self.rejected = 0
        self.unchanged = 0
        self.records = 0
        self.ledger_errors = 0
        self.forward_errors = 0
        self.overloaded = 0
        self.requests: dict[tuple[str, str, str], int] = {}

    def add_records(self, records: Iterable[CostRecord]) -> None:
        with self._lock:
            for r in records:
                self.records += 1
                labels = (r.provider, r.model, r.bucket, r.tenant or "", r.feature or "")
                key = _fold(self.tokens, labels)
                self.tokens[key] = self.tokens.get(key, 0) + r.quantity
                if r.billed_cost is None:
                    ukey = _fold(self.unpriced, labels[:3])
                    self.unpriced[ukey] = self.unpriced.get(ukey, 0) + r.quantity
                else:
                    ckey = _fold(self.cost, (*labels, r.currency, r.pricing_status))
                    self.cost[ckey] = self.cost.get(ckey, Decimal(0)) + r.billed_cost

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

    def cost_snapshot(self) -> dict[tuple[str, ...], Decimal]:
        with self._lock:
            return dict(self.cost)

    def render(self, queue_depth: int, queue_capacity: int, ledger_up: bool) -> str:
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

        with self._lock:
            cost: dict[tuple[str, ...], Decimal] = {}
            for key, value in self.cost.items():
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
                "Tokens (requests for the web_search bucket) in the cost records written "
                "since start.",
                _TOKEN_LABELS,
                self.tokens,
            )
            family(
                "otel_tokens_unpriced_tokens_total",
                "counter",
                "Tokens in cost records written without a price (unpriced or "
                "variant_unavailable) since start.",
                _UNPRICED_LABELS,
                self.unpriced,
            )
            scalars: list[tuple[str, str, str, int]] = [
                (
                    "otel_tokens_ingest_points_total",
                    "counter",
                    "gen_ai.billing.tokens data points received.",
                    self.points,
                ),
                (
                    "otel_tokens_ingest_rejected_points_total",
                    "counter",
                    "Data points rejected (reported to clients as OTLP partial success).",
                    self.rejected,
                ),
                (
                    "otel_tokens_ingest_unchanged_points_total",
                    "counter",
                    "Token points that billed nothing new (duplicates, retries, out of order).",
                    self.unchanged,
                ),
                (
                    "otel_tokens_ingest_records_total",
                    "counter",
                    "Cost records written to the ledger.",
                    self.records,
                ),
                (
                    "otel_tokens_ingest_ledger_errors_total",
                    "counter",
                    "Batches refused (retryable) because the ledger failed.",
                    self.ledger_errors,
                ),
                (
                    "otel_tokens_ingest_forward_errors_total",
                    "counter",
                    "Failed forwards to the upstream endpoint.",
                    self.forward_errors,
                ),
                (
                    "otel_tokens_ingest_overloaded_total",
                    "counter",
                    "Batches refused (retryable) because the queue was full.",
                    self.overloaded,
                ),
            ]
            for name, kind, help_text, count in scalars:
                family(name, kind, help_text, (), {(): count})
            requests = {(t, s, c): n for (t, s, c), n in self.requests.items()}
        family(
            "otel_tokens_ingest_requests_total",
            "counter",
            "OTLP export requests answered, by transport, signal and status code "
            "(HTTP status or gRPC code name).",
            ("transport", "signal", "code"),
            requests,
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
        return "\n".join(lines) + "\n"
