"""Budget status from the ledger: what each budget has spent this period, exactly."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from .. import semconv as sc
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


def _price_model(price_id: str | None) -> str | None:
    """The catalog's model name in a price id (``genai-prices:openai/gpt-4o-mini@...``)."""
    if not price_id or ":" not in price_id:
        return None
    _, _, rest = price_id.partition(":")
    _, slash, model = rest.partition("/")
    if not slash:
        return None
    for mark in "@#~":
        model = model.split(mark, 1)[0]
    return model or None


def _matches(budget: Budget, record: CostRecord) -> bool:
    values = {
        "tenant": record.tenant,
        "user": record.user_id,
        "feature": record.feature,
        "provider": record.provider,
    }
    values.update({f"tag.{k}": v for k, v in record.tags.items()})
    for key, wanted in budget.scope.items():
        if key == "model":
            # Live budgets match the requested model (``gpt-4o-mini``); records carry the
            # model served (``gpt-4o-mini-2024-07-18``) and the price id of its catalog
            # entry (``genai-prices:openai/gpt-4o-mini``): either name matches.
            if wanted not in (record.model, _price_model(record.price_id)):
                return False
        elif values.get(key) != wanted:
            return False
    return True


def _amount(budget: Budget, record: CostRecord) -> Decimal | None:
    if budget.in_tokens:
        return None if record.bucket in sc.REQUEST_BUCKETS else Decimal(record.quantity)
    if record.billed_cost is not None and record.currency == budget.unit:
        return record.billed_cost
    return None


def _pool_used_by_top_up(budget: Budget, uses: list[tuple[datetime, Decimal]]) -> list[Decimal]:
    """Used of each top-up, replaying each use on the top-ups active then, earliest expiry
    first, as the live budget store draws them."""
    top_ups = budget.top_ups
    used = [Decimal(0)] * len(top_ups)
    for at, amount in sorted(uses, key=lambda u: u[0]):
        active = sorted(
            (i for i, t in enumerate(top_ups) if t.active(at)),
            key=lambda i: (top_ups[i].expires is None, top_ups[i].expires or at, top_ups[i].at),
        )
        if not active:  # no credit then: such a call was refused or not counted
            continue
        remaining = amount
        for i in active:
            take = min(max(top_ups[i].amount - used[i], Decimal(0)), remaining)
            used[i] += take
            remaining -= take
        used[active[-1]] += remaining  # beyond the credit: still counted
    return used


def _uses(
    budgets: Sequence[Budget], records: Iterable[CostRecord], now: datetime
) -> tuple[list[Decimal], list[list[tuple[datetime, Decimal]]]]:
    """Per budget: spent in its current window, and (pools) each use with its time."""
    windows = [b.window(now) for b in budgets]
    spent = [Decimal(0)] * len(budgets)
    pool_uses: list[list[tuple[datetime, Decimal]]] = [[] for _ in budgets]
    for record in records:
        for i, budget in enumerate(budgets):
            start, end, _ = windows[i]
            # Up to ``now``: a report for an instant in the past ignores later records.
            if not (start < record.period_end <= min(end, now)) or not _matches(budget, record):
                continue
            amount = _amount(budget, record)
            if amount is None:
                continue
            if budget.period == "pool":
                pool_uses[i].append((record.period_end, amount))
            else:
                spent[i] += amount
    return spent, pool_uses


def account_usage(
    budgets: Sequence[Budget], records: Iterable[CostRecord], now: datetime
) -> list[dict[str, Decimal]]:
    """Per budget, what the ledger says is used of each of its live accounts at ``now`` (the
    keys the budget store uses: the current window, or each active top-up of a pool)."""
    spent, pool_uses = _uses(budgets, records, now)
    result = []
    for budget, total, uses in zip(budgets, spent, pool_uses, strict=True):
        if budget.period == "pool":
            by_top_up = _pool_used_by_top_up(budget, uses)
            result.append(
                {
                    key: used
                    for key, used, top_up in zip(
                        budget.top_up_keys(), by_top_up, budget.top_ups, strict=True
                    )
                    if top_up.active(now)
                }
            )
        else:
            result.append({f"{budget.name}:{budget.window(now)[2]}": total})
    return result


def budget_status(
    budgets: Sequence[Budget], records: Iterable[CostRecord], now: datetime | None = None
) -> list[BudgetStatus]:
    """Spent, remaining and projected end-of-period spend of each budget, from cost records.

    Token budgets count tokens (requests are not tokens); currency budgets count billed
    cost in their currency. A pool replays its use since its first top-up on the top-ups
    active at each use (earliest expiry first) and shows what is used of the top-ups
    active now.
    """
    now = now or datetime.now(UTC)
    windows = [b.window(now) for b in budgets]
    spent, pool_uses = _uses(budgets, records, now)
    rows = []
    for i, (budget, (start, end, window)) in enumerate(zip(budgets, windows, strict=True)):
        projected: Decimal | None
        if budget.period == "pool":
            limit = sum((t.amount for t in budget.top_ups if t.active(now)), Decimal(0))
            by_top_up = _pool_used_by_top_up(budget, pool_uses[i])
            used = sum(
                (u for u, t in zip(by_top_up, budget.top_ups, strict=True) if t.active(now)),
                Decimal(0),
            )
            projected = None
        else:
            limit, used = budget.limit, spent[i]
            length = Decimal((end - start).total_seconds())
            elapsed = min(Decimal((now - start).total_seconds()), length)
            projected = used * length / elapsed if elapsed > 0 else None
        rows.append(BudgetStatus(budget, window, start, end, used, limit, projected))
    return rows
