"""Budget forecasts from the ledger: projected use at the end of the period and the instant
a budget or prepaid pool is expected to run out, by the reporting package's method."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from ..records import CostRecord
from ..reporting import Backtest, DailyRates, ForecastMethod, forecast
from ._model import Budget
from ._report import BudgetStatus, _amount, _matches, budget_status

# A pool whose credit never expires is searched this far ahead for the day it runs out.
POOL_HORIZON = timedelta(days=366)


@dataclass(frozen=True, slots=True)
class BudgetForecast:
    """``status`` is exact (from the ledger); the rest are estimates.

    ``projected``: use at the end of the period (None for pools, which have none, or without
    a full day of history); ``runs_out``: when the expected use reaches the limit (the
    remaining credit of a pool), None when not before the period ends (a pool: its credit
    expires, or a year from now); ``rates``: the expected use per weekday."""

    status: BudgetStatus
    projected: Decimal | None
    runs_out: datetime | None
    rates: DailyRates | None
    backtest: Backtest


def budget_forecast(
    budgets: Sequence[Budget],
    records: Iterable[CostRecord],
    now: datetime | None = None,
    method: ForecastMethod | None = None,
) -> list[BudgetForecast]:
    """Forecast each budget from the history of what its scope used (records up to ``now``)."""
    now = now or datetime.now(UTC)
    method = method or ForecastMethod()
    records = [r for r in records if r.period_end <= now]
    statuses = budget_status(budgets, records, now)
    out = []
    for budget, status in zip(budgets, statuses, strict=True):
        uses = []
        for record in records:
            if _matches(budget, record):
                amount = _amount(budget, record)
                if amount is not None:
                    uses.append((record.period_end, amount))
        pool = budget.period == "pool"
        until = min(status.end, now + POOL_HORIZON) if pool else status.end
        f = forecast(uses, now, status.start, until, method)
        if f.rates is None:
            out.append(BudgetForecast(status, None, None, None, f.backtest))
            continue
        # The period's use is the budget's own (its window, or a pool's active top-ups),
        # exact; the rest of the period is expected.
        projected = None if pool else status.spent + f.rates.expected(now, until)
        runs_out = f.rates.runs_out(now, status.remaining, until)
        out.append(BudgetForecast(status, projected, runs_out, f.rates, f.backtest))
    return out
