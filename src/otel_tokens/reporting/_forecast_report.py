"""``report --forecast``: per group and currency, what was spent this period (exact), what
the rest of the period is expected to add (an estimate), and the method's backtested error."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from .. import semconv as sc
from ..records import CostRecord
from ._common import display_url, money, utc
from ._forecast import Forecast, ForecastMethod, forecast
from ._grouping import GROUP_KEYS

# Grouping by time makes no sense for a forecast over a period.
FORECAST_KEYS = tuple(k for k in GROUP_KEYS if k not in ("day", "hour", "month"))


def month_of(at: datetime) -> tuple[datetime, datetime]:
    """The UTC calendar month containing ``at`` (``at`` at midnight on the 1st: the month
    that ends there, whose usage it closes)."""
    t = at.astimezone(UTC)
    if (t.day, t.hour, t.minute, t.second, t.microsecond) == (1, 0, 0, 0, 0):
        t = t.replace(month=t.month - 1 or 12, year=t.year - (t.month == 1))
    start = datetime(t.year, t.month, 1, tzinfo=UTC)
    end = datetime(t.year + (t.month == 12), t.month % 12 + 1, 1, tzinfo=UTC)
    return start, end


@dataclass(frozen=True, slots=True)
class ForecastLine:
    key: tuple[str | None, ...]
    currency: str
    cost: Forecast  # billed cost of priced records in ``currency``
    tokens: Forecast  # every token (priced or not) of records in ``currency``
    unpriced_records: int  # in the period so far: cost left out of ``cost``


@dataclass(frozen=True, slots=True)
class ForecastReport:
    by: tuple[str, ...]
    at: datetime
    period_start: datetime
    period_end: datetime
    method: ForecastMethod
    lines: tuple[ForecastLine, ...]


def build_forecast(
    records: Iterable[CostRecord],
    by: Sequence[str],
    *,
    at: datetime,
    period_start: datetime,
    period_end: datetime,
    method: ForecastMethod | None = None,
) -> ForecastReport:
    """Forecast each group (``by`` keys and currency) from all its records up to ``at``."""
    method = method or ForecastMethod()
    by = tuple(dict.fromkeys(by))
    bad = [k for k in by if k not in FORECAST_KEYS]
    if bad:
        raise ValueError(
            f"cannot forecast by {', '.join(bad)}; use some of {', '.join(FORECAST_KEYS)}"
        )
    getters = [GROUP_KEYS[k] for k in by]
    costs: dict[tuple[tuple[str | None, ...], str], list[tuple[datetime, Decimal]]] = {}
    tokens: dict[tuple[tuple[str | None, ...], str], list[tuple[datetime, Decimal]]] = {}
    unpriced: dict[tuple[tuple[str | None, ...], str], int] = {}
    for record in records:
        if record.period_end > at:
            continue
        group = (tuple(get(record) for get in getters), record.currency)
        costs.setdefault(group, [])
        tokens.setdefault(group, [])
        if record.bucket not in sc.REQUEST_BUCKETS:
            tokens[group].append((record.period_end, Decimal(record.quantity)))
        if record.billed_cost is not None:
            costs[group].append((record.period_end, record.billed_cost))
        elif period_start < record.period_end:
            unpriced[group] = unpriced.get(group, 0) + 1
    lines = [
        ForecastLine(
            key,
            currency,
            forecast(costs[key, currency], at, period_start, period_end, method),
            forecast(tokens[key, currency], at, period_start, period_end, method),
            unpriced.get((key, currency), 0),
        )
        for key, currency in sorted(
            costs, key=lambda g: (tuple((v is None, v or "") for v in g[0]), g[1])
        )
    ]
    return ForecastReport(by, at, period_start, period_end, method, tuple(lines))


def _estimate(value: Decimal | None, places: str) -> str | None:
    # Estimates are shown rounded; they claim no precision they do not have.
    return None if value is None else money(value.quantize(Decimal(places)))


def _series(f: Forecast, places: str, exact: bool) -> dict[str, Any]:
    return {
        "spent": money(f.spent) if exact else str(f.spent),
        "expected_rest": _estimate(f.expected_rest, places),
        "projected": _estimate(f.projected, places),
        "history_days": None if f.rates is None else f.rates.history_days,
        "seasonal": None if f.rates is None else f.rates.seasonal,
        "backtest_mape_percent": None if f.backtest.mape is None else str(f.backtest.mape),
        "backtest_cutoffs": f.backtest.cutoffs,
    }


def forecast_json(report: ForecastReport, ledger: str | None = None) -> dict[str, Any]:
    return {
        "ledger": None if ledger is None else display_url(ledger),
        "by": list(report.by),
        "at": utc(report.at),
        "period": {"start": utc(report.period_start), "end": utc(report.period_end)},
        "method": report.method.describe(),
        "estimate": "expected_rest and projected are forecasts, not billed amounts",
        "rows": [
            {
                **dict(zip(report.by, line.key, strict=True)),
                "currency": line.currency,
                "cost": _series(line.cost, "1e-6", exact=True),
                "tokens": _series(line.tokens, "1", exact=False),
                "unpriced_records": line.unpriced_records,
            }
            for line in report.lines
        ],
    }


def forecast_table(report: ForecastReport, ledger: str) -> str:
    def mape(f: Forecast) -> str:
        return "-" if f.backtest.mape is None else f"{f.backtest.mape}% ({f.backtest.cutoffs})"

    header = (
        *report.by,
        "currency",
        "spent",
        "forecast",
        "cost MAPE",
        "tokens",
        "tokens forecast",
        "tokens MAPE",
    )
    rows = [header]
    for line in report.lines:
        rows.append(
            (
                *("-" if v is None else v for v in line.key),
                line.currency,
                money(line.cost.spent) or "-",
                _estimate(line.cost.projected, "1e-6") or "-",
                mape(line.cost),
                str(line.tokens.spent),
                _estimate(line.tokens.projected, "1") or "-",
                mape(line.tokens),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    out = [
        f"Forecast to {utc(report.period_end)} from {utc(report.at)} "
        f"(period from {utc(report.period_start)}), ledger {display_url(ledger)}",
        "spent: billed, exact; forecast: spent + expected rest of the period, an ESTIMATE "
        "(not billed); MAPE: backtest error (cut-offs)",
        f"method: {report.method.describe()}",
        "",
    ]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    unpriced = sum(line.unpriced_records for line in report.lines)
    if unpriced:
        out.append(f"unpriced records this period: {unpriced} (no cost; not in spent or forecast)")
    return "\n".join(out)
