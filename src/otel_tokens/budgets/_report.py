"""Budget status from the ledger: what each budget has spent this period, exactly."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from ..records import CostRecord
from ._model import Budget


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    budget: Budget
    window: str
    start: datetime
    end: datetime
    spent: Decimal
    limit: Decimal
    projected: Decimal | None

    @property
    def remaining(self) -> Decimal:
        return self.limit - self.spent


def _values(record: CostRecord) -> dict[str, str]:
    values = {
        "tenant": record.tenant,
        "user": record.user_id,
        "feature": record.feature,
        "model": record.model,
        "provider": record.provider,
    }
    values.update({f"tag.{k}": v for k, v in record.tags.items()})
    return {k: v for k, v in values.items() if v is not None}


def budget_status(
    budgets: Sequence[Budget], records: Iterable[CostRecord], now: datetime | None = None
) -> list[BudgetStatus]:
    """Spent, remaining and projected end-of-period spend of each budget, from cost records.

    Token budgets count tokens (requests are not tokens); currency budgets count billed
    cost in their currency. A pool counts everything since its first top-up against its
    top-ups active now.
    """
    now = now or datetime.now(UTC)
    windows = [b.window(now) for b in budgets]
    spent = [Decimal(0)] * len(budgets)
    for record in records:
        values = _values(record)
        for i, budget in enumerate(budgets):
            start, end, _ = windows[i]
            if not (start < record.period_end <= end) or not budget.matches(values):
                continue
            if budget.in_tokens:
                if record.bucket != "web_search":
                    spent[i] += record.quantity
            elif record.billed_cost is not None and record.currency == budget.unit:
                spent[i] += record.billed_cost
    rows = []
    for budget, (start, end, window), used in zip(budgets, windows, spent, strict=True):
        if budget.period == "pool":
            limit = sum((t.amount for t in budget.top_ups if t.active(now)), Decimal(0))
            projected = None
        else:
            limit = budget.limit
            elapsed = Decimal((now - start).total_seconds())
            length = Decimal((end - start).total_seconds())
            projected = used * length / elapsed if elapsed > 0 else None
        rows.append(BudgetStatus(budget, window, start, end, used, limit, projected))
    return rows
