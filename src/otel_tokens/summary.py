"""A span exporter that prints a readable cost summary when the process ends.

Select it under ``opentelemetry-instrument`` with ``OTEL_TRACES_EXPORTER=otel_tokens_summary``
(or combine: ``otlp,otel_tokens_summary``). It reads the billing attributes our
instrumentation puts on each call's span, whichever scope made the span.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import IO, Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from . import semconv as sc
from .pricing import decimal_str


@dataclass(frozen=True, slots=True)
class CallSummary:
    """One metered call, as read back from its span."""

    name: str
    provider: str
    model: str
    status: str
    usage_source: str
    tokens: dict[str, int]
    cost: Decimal | None
    currency: str | None
    error: str | None

    @classmethod
    def from_span(cls, span: ReadableSpan) -> CallSummary | None:
        attrs: Any = span.attributes or {}
        status = attrs.get(sc.BILLING_PRICING_STATUS)
        error = attrs.get(sc.ERROR_TYPE)
        if status is None and error is None:
            return None
        if status is None and attrs.get(sc.GEN_AI_OPERATION_NAME) is None:
            return None
        tokens = {
            key[len(sc.BILLING_USAGE_PREFIX) :]: int(value)
            for key, value in attrs.items()
            if key.startswith(sc.BILLING_USAGE_PREFIX)
        }
        cost = attrs.get(sc.BILLING_COST_DECIMAL)
        return cls(
            name=span.name,
            provider=str(attrs.get(sc.GEN_AI_PROVIDER_NAME, "?")),
            model=str(
                attrs.get(sc.GEN_AI_RESPONSE_MODEL) or attrs.get(sc.GEN_AI_REQUEST_MODEL, "?")
            ),
            status=str(status or "error"),
            usage_source=str(attrs.get(sc.BILLING_USAGE_SOURCE, "-")),
            tokens=tokens,
            cost=Decimal(cost) if cost is not None else None,
            currency=attrs.get(sc.GEN_AI_USAGE_COST_CURRENCY),
            error=str(error) if error else None,
        )


class CostSummaryExporter(SpanExporter):
    """Collects metered calls and prints a table of tokens and exact cost at shutdown."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self._out = out
        self._calls: list[CallSummary] = []
        self._lock = threading.Lock()
        self._printed = False

    @property
    def calls(self) -> list[CallSummary]:
        with self._lock:
            return list(self._calls)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        found = [c for c in (CallSummary.from_span(s) for s in spans) if c is not None]
        with self._lock:
            self._calls.extend(found)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            if self._printed:
                return
            self._printed = True
        out = self._out or sys.stderr
        out.write(render(self.calls) + "\n")
        out.flush()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


# A cost of tokens counted locally is an estimate; one counted without a tokenizer is a
# rougher one, and the table says which.
_SOURCE_NOTES = {
    sc.USAGE_SOURCE_ESTIMATED: "estimated",
    sc.USAGE_SOURCE_ESTIMATED_HEURISTIC: "estimated (4 chars/token)",
}


def render(calls: Sequence[CallSummary]) -> str:
    if not calls:
        return "otel-tokens: no metered LLM calls."
    header = ("call", "model", "input", "cached", "cache write", "output", "reasoning", "cost", "")
    rows: list[tuple[str, ...]] = []
    totals: dict[str, Decimal] = {}
    unpriced = 0
    for c in calls:
        t = c.tokens
        uncached = t.get("input", 0) + t.get("input_audio", 0) + t.get("input_image", 0)
        out = t.get("output", 0) + t.get("output_audio", 0) + t.get("output_image", 0)
        if c.error:
            cost, note = "-", f"error: {c.error}"
        elif c.cost is None:
            cost, note = "-", c.status
            unpriced += 1
        else:
            cost = f"{decimal_str(c.cost)} {c.currency}"
            note = _SOURCE_NOTES.get(c.usage_source, "")
            totals[c.currency or "?"] = totals.get(c.currency or "?", Decimal(0)) + c.cost
        rows.append(
            (
                c.name,
                c.model,
                f"{uncached:,}",
                f"{t.get('cache_read', 0):,}",
                f"{t.get('cache_write_5m', 0) + t.get('cache_write_1h', 0):,}",
                f"{out:,}",
                f"{t.get('reasoning', 0):,}",
                cost,
                note,
            )
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    right = {2, 3, 4, 5, 6, 7}

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(
            cell.rjust(w) if i in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    lines = ["", "otel-tokens cost summary", line(header), line(tuple("-" * w for w in widths))]
    lines += [line(r) for r in rows]
    total = ", ".join(f"{decimal_str(v)} {k}" for k, v in sorted(totals.items())) or "-"
    lines.append(f"total: {total} over {len(calls)} call(s)")
    if unpriced:
        lines.append(
            f"{unpriced} call(s) unpriced: add their prices to a price file (docs/pricing.md)."
        )
    return "\n".join(lines)
