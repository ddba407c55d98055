"""Pre-flight checks, settlement, threshold events and gauges for a set of budgets."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_CEILING, Decimal
from typing import TYPE_CHECKING, Any

from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation, get_meter

from .. import semconv as sc
from ..pricing import Catalog, PriceResult, default_catalog
from ..usage import TokenUsage
from ._expect import current_block
from ._model import NANO, THRESHOLDS, Budget, BudgetExceeded, BudgetUnavailable, load_budgets
from ._report import account_usage
from ._store import Draw, Shortfall, Store, StoreError, open_store

if TYPE_CHECKING:
    from ..ledger import Ledger

_log = logging.getLogger("otel_tokens.budgets")
ENV_LEDGER = "OTEL_TOKENS_LEDGER"  # = otel_tokens.ledger.ENV_LEDGER, without importing it
ENV_BUDGETS = "OTEL_TOKENS_BUDGETS"
ENV_BUDGET_STORE = "OTEL_TOKENS_BUDGET_STORE"
DEFAULT_MAX_OUTPUT_TOKENS = 4096


def scope_values(
    attribution: Mapping[str, str], *, provider: str | None, model: str | None
) -> dict[str, str]:
    """The values a budget scope is matched against, by scope key."""
    values = {
        "tenant": attribution.get(sc.BILLING_TENANT_ID),
        "user": attribution.get(sc.BILLING_USER_ID),
        "feature": attribution.get(sc.BILLING_FEATURE),
        "provider": provider,
        "model": model,
    }
    for key, value in attribution.items():
        if key.startswith(sc.BILLING_TAG_PREFIX):
            values["tag." + key[len(sc.BILLING_TAG_PREFIX) :]] = value
    return {k: v for k, v in values.items() if v is not None}


def _nano(amount: Decimal) -> int:
    return int((amount * NANO).to_integral_value(rounding=ROUND_CEILING))


@dataclass(slots=True)
class Reservation:
    """What one call took from its budgets before it was sent; settled by its real usage."""

    manager: BudgetManager
    budgets: list[Budget]
    accounts: list[tuple[tuple[str, int], ...]]
    plan: list[list[int] | None]  # per budget: reserved takes, None when not reserved
    settled: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def settle(self, usage: TokenUsage | None, result: PriceResult | None) -> None:
        if self.settled:
            return
        self.settled = True
        try:
            self.manager._settle(self, usage, result)
        except Exception as exc:  # the store is down: usage is still in the ledger
            _log.warning("otel-tokens: could not settle budgets (%s)", exc)


class BudgetManager:
    """Applies budgets to calls: reserves before (enforce), settles after (all)."""

    def __init__(
        self,
        budgets: Sequence[Budget],
        store: Store | None = None,
        *,
        catalog: Catalog | None = None,
        default_max_output_tokens: int | None = None,
        meter_provider: MeterProvider | None = None,
        clock: Callable[[], datetime] | None = None,
        ledger: Ledger | str | None = None,
    ) -> None:
        self.budgets = list(budgets)
        self.store = store or open_store(None)
        # The ledger, when known, holds what was used before this store did (a restarted
        # process's memory store, a new Redis): accounts start from it (see `_seed`).
        self._ledger_source = ledger
        self._ledger: Ledger | None = None
        self._seeded: set[str] = set()
        self._seed_lock = threading.Lock()
        self._catalog = catalog
        self.default_max_output_tokens = default_max_output_tokens
        self.clock = clock or (lambda: datetime.now(UTC))
        meter = get_meter("otel_tokens.budgets", meter_provider=meter_provider)
        self._crossings = meter.create_counter(
            sc.METRIC_BUDGET_THRESHOLD_CROSSINGS,
            unit="{crossing}",
            description="Times a budget's use crossed 50, 80 or 100 percent of its limit.",
        )
        for name, callback, description in (
            (sc.METRIC_BUDGET_USED, self._observe_used, "Used amount of the current period."),
            (sc.METRIC_BUDGET_LIMIT, self._observe_limit, "Limit of the current period."),
            (
                sc.METRIC_BUDGET_SPEND_RATE,
                self._observe_rate,
                "Average use per hour so far in the current period.",
            ),
            (
                sc.METRIC_BUDGET_PROJECTED,
                self._observe_projected,
                "Use projected at the end of the current period at the current rate.",
            ),
        ):
            meter.create_observable_gauge(name, callbacks=[callback], description=description)
        meter.create_observable_gauge(
            sc.METRIC_BUDGET_RUNS_OUT_IN,
            callbacks=[self._observe_runs_out_in],
            unit="s",
            description="Time until the budget is used up at its average rate so far in the "
            "period; reported only when that is before the period (or a pool's credit) ends.",
        )

    @classmethod
    def from_env(cls, **kwargs: Any) -> BudgetManager | None:
        path = os.environ.get(ENV_BUDGETS)
        if not path:
            return None
        kwargs.setdefault("ledger", os.environ.get(ENV_LEDGER) or None)  # the exporter's
        return cls(load_budgets(path), open_store(os.environ.get(ENV_BUDGET_STORE)), **kwargs)

    @property
    def catalog(self) -> Catalog:
        return self._catalog or default_catalog()

    # --- accounts ------------------------------------------------------------------
    def accounts(self, budget: Budget, now: datetime) -> tuple[tuple[str, int], ...]:
        if budget.period == "pool":
            # Earliest expiry first; credit that never expires last.
            pairs = zip(budget.top_ups, budget.top_up_keys(), strict=True)
            active = sorted(
                ((t, key) for t, key in pairs if t.active(now)),
                key=lambda pair: (pair[0].expires is None, pair[0].expires or now, pair[0].at),
            )
            return tuple((key, budget.units(t.amount)) for t, key in active)
        _, _, window = budget.window(now)
        capacity = budget.units(budget.limit)
        previous = budget.previous_window(now) if budget.rollover else None
        if previous is not None:
            (used_before,) = self.store.used([f"{budget.name}:{previous}"])
            capacity += max(budget.units(budget.limit) - used_before, 0)
        return ((f"{budget.name}:{window}", capacity),)

    def matching(self, values: Mapping[str, str]) -> list[Budget]:
        return [b for b in self.budgets if b.matches(values)]

    # --- before the call ---------------------------------------------------------------
    def preflight(
        self,
        *,
        provider: str | None,
        model: str | None,
        attribution: Mapping[str, str],
        input_tokens: Callable[[], int],
        max_output_tokens: int | None,
    ) -> Reservation | None:
        """Reserve the call's maximum cost; raise `BudgetExceeded` if a budget cannot take it."""
        now = self.clock()
        budgets = [
            b
            for b in self.matching(scope_values(attribution, provider=provider, model=model))
            if b.in_effect(now)
        ]
        if not budgets:
            return None
        enforce = [b for b in budgets if b.mode == "enforce"]
        plan: list[list[int] | None] = [None] * len(budgets)
        try:
            accounts = [self.accounts(b, now) for b in budgets]
            self._seed(budgets, accounts, now)
        except StoreError as exc:
            self._store_down(enforce, exc)
            return Reservation(self, budgets, [() for _ in budgets], plan)
        if enforce:
            n_in = input_tokens()
            n_out = (
                self._worst_output(model, n_in) if max_output_tokens is None else max_output_tokens
            )
            # The first call of an `expect` block is checked for the whole block.
            block = current_block()
            whole = block is not None and block.claim()
            draws, which, for_block = [], [], []
            for i, budget in enumerate(budgets):
                if budget.mode != "enforce":
                    continue
                amount = self._estimate(budget, provider, model, n_in, n_out, now)
                declared = block.units(budget) if whole and block is not None else 0
                draws.append(Draw(accounts[i], max(amount, declared)))
                which.append(i)
                for_block.append(declared > amount)
            try:
                taken = self.store.reserve(draws)
            except Shortfall as short:
                budget = budgets[which[short.index]]
                raise BudgetExceeded(
                    budget.name,
                    draws[short.index].amount,
                    short.available,
                    budget.unit,
                    what="the calls of this block" if for_block[short.index] else "this call",
                ) from None
            except StoreError as exc:
                self._store_down(enforce, exc)
                return Reservation(self, budgets, accounts, plan)
            for i, takes in zip(which, taken, strict=True):
                plan[i] = takes
        return Reservation(self, budgets, accounts, plan)

    def _worst_output(self, model: str | None, n_in: int) -> int:
        """The most output a request that sets no limit can produce: ``default_max_output_tokens``
        when set; else pre-flight's worst case, the model's output limit within the room its
        context window leaves; else (a model whose limits are unknown) 4096."""
        if self.default_max_output_tokens is not None:
            return self.default_max_output_tokens
        from ..window import limits_of

        limits = limits_of(model)
        if limits is None:
            return DEFAULT_MAX_OUTPUT_TOKENS
        room = max(0, limits.context_window - n_in)
        return room if limits.max_output is None else min(limits.max_output, room)

    def _seed(
        self,
        budgets: Sequence[Budget],
        accounts: Sequence[tuple[tuple[str, int], ...]],
        now: datetime,
    ) -> None:
        """Start each account this manager has not seen yet from the ledger's usage, unless
        the store already holds it. Without this a prepaid pool was full again in every new
        process on the memory store (and on a new Redis), and calls it could not pay for
        were sent. The ledger lags by at most one metric export."""
        if self._ledger_source is None or all(
            key in self._seeded for a in accounts for key, _ in a
        ):
            return  # every call but a new account's first: no lock on the caller's thread
        with self._seed_lock:
            todo = [
                (b, a)
                for b, a in zip(budgets, accounts, strict=True)
                if any(key not in self._seeded for key, _ in a)
            ]
            if not todo:
                return
            keys = {key for _, a in todo for key, _ in a}
            try:
                ledger = self._open_ledger()
                since = min(b.window(now)[0] for b, _ in todo)
                found = account_usage([b for b, _ in todo], ledger.records(since=since), now)
            except Exception as exc:
                _log.warning(
                    "otel-tokens: cannot read the ledger for budget balances (%s); budgets "
                    "count from the store alone",
                    exc,
                )
                self._seeded |= keys
                return
            values = [
                (key, _units(budget, amount))
                for (budget, _), usage in zip(todo, found, strict=True)
                for key, amount in usage.items()
                if amount > 0
            ]
            if values:
                self.store.seed(values)  # StoreError: the store is down, tried again next call
            self._seeded |= keys

    def _open_ledger(self) -> Ledger:
        if self._ledger is None:
            if isinstance(self._ledger_source, str):
                from ..ledger import open_ledger  # only when a ledger is configured

                self._ledger = open_ledger(self._ledger_source)
            else:
                self._ledger = self._ledger_source
        assert self._ledger is not None  # _seed returns early without a ledger source
        return self._ledger

    def _store_down(self, enforce: Iterable[Budget], exc: Exception) -> None:
        for budget in enforce:
            if budget.fail_closed:
                raise BudgetUnavailable(budget.name, str(exc)) from exc
        _log.warning("otel-tokens: budget store unreachable (%s); failing open", exc)

    def _estimate(
        self,
        budget: Budget,
        provider: str | None,
        model: str | None,
        n_in: int,
        n_out: int,
        now: datetime,
    ) -> int:
        if budget.in_tokens:
            return n_in + n_out
        result = self.catalog.price(
            TokenUsage(input=n_in, output=n_out), model or "", provider=provider, at=now
        )
        if result.total is None:
            _log.warning(
                "otel-tokens: no price for %s, so budget %r cannot bound this call in advance",
                model,
                budget.name,
            )
            return 0
        return self._in_unit(budget, result) or 0

    def _in_unit(self, budget: Budget, result: PriceResult) -> int | None:
        if budget.in_tokens:
            return result.usage.input_total + result.usage.output_total
        if result.total is None or result.currency != budget.unit:
            return None
        return _nano(result.total)

    # --- after the call ----------------------------------------------------------------
    def _settle(
        self, reservation: Reservation, usage: TokenUsage | None, result: PriceResult | None
    ) -> None:
        refunds: list[tuple[str, int]] = []
        draws: list[Draw] = []
        crossings: list[tuple[Budget, tuple[tuple[str, int], ...], int]] = []
        for budget, accounts, takes in zip(
            reservation.budgets, reservation.accounts, reservation.plan, strict=True
        ):
            if not accounts:
                continue
            if usage is None:
                actual = 0
            elif budget.in_tokens:
                actual = usage.input_total + usage.output_total
            else:
                actual = (self._in_unit(budget, result) if result is not None else None) or 0
            # Keep of the reservation what was used (in account order) and give back only the
            # rest, in one atomic step: giving it all back and taking the usage again would
            # let another caller take the capacity in between, and this usage would then
            # overspend. Usage beyond the reservation (an estimate that fell short, or an
            # observed budget) is taken on top and still counts.
            extra = actual
            if takes is not None:
                for (key, _), take in zip(accounts, takes, strict=True):
                    keep = min(take, extra)
                    extra -= keep
                    if take > keep:
                        refunds.append((key, keep - take))
            if extra or takes is None:
                draws.append(Draw(accounts, extra))
            crossings.append((budget, accounts, actual))
        if refunds:
            self.store.add(refunds)
        if draws:
            self.store.reserve(draws, force=True)
        for budget, accounts, actual in crossings:
            self._check_thresholds(budget, accounts, actual)

    def _check_thresholds(
        self, budget: Budget, accounts: tuple[tuple[str, int], ...], actual: int
    ) -> None:
        capacity = sum(c for _, c in accounts)
        if not capacity or not actual:
            return
        used = sum(self.store.used([k for k, _ in accounts]))
        before, after = Decimal(used - actual) / capacity, Decimal(used) / capacity
        for threshold in THRESHOLDS:
            if before < threshold <= after:
                percent = int(threshold * 100)
                self._crossings.add(
                    1,
                    {sc.BILLING_BUDGET_NAME: budget.name, sc.BILLING_BUDGET_THRESHOLD: percent},
                )
                _log.warning(
                    "otel-tokens: budget %r reached %d%% of its limit (%s of %s %s)",
                    budget.name,
                    percent,
                    _human(budget, used),
                    _human(budget, capacity),
                    budget.unit,
                    extra={"budget": budget.name, "threshold": percent},
                )

    # --- gauges --------------------------------------------------------------------------
    def status(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """Each budget's current period: used, limit, rate per hour, projected end."""
        now = now or self.clock()
        rows = []
        for budget in self.budgets:
            accounts = self.accounts(budget, now)
            used = sum(self.store.used([k for k, _ in accounts]))
            limit = sum(c for _, c in accounts)
            start, end, window = budget.window(now)
            length = (end - start).total_seconds()
            # Past the end of a window the projection is what was used.
            elapsed = min(max((now - start).total_seconds(), 1.0), max(length, 1.0))
            rate = Decimal(used) * 3600 / Decimal(elapsed)
            projected = (
                Decimal(used) * Decimal(length) / Decimal(elapsed)
                if budget.period != "pool" and length < 10**9
                else Decimal(used)
            )
            rows.append(
                {
                    "budget": budget,
                    "window": window,
                    "used": _value(budget, used),
                    "limit": _value(budget, limit),
                    "remaining": _value(budget, limit - used),
                    "rate_per_hour": _value(budget, rate),
                    "projected": _value(budget, projected),
                    "runs_out_in": _runs_out_in(used, limit, elapsed, (end - now).total_seconds()),
                }
            )
        return rows

    def _gauge(self, key: str) -> Iterable[Observation]:
        try:
            for row in self.status():
                budget: Budget = row["budget"]
                if row[key] is None:  # runs_out_in: not before the period ends
                    continue
                yield Observation(
                    float(row[key]),
                    {sc.BILLING_BUDGET_NAME: budget.name, sc.BILLING_BUDGET_UNIT: budget.unit},
                )
        except StoreError:
            return

    def _observe_used(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._gauge("used")

    def _observe_limit(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._gauge("limit")

    def _observe_rate(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._gauge("rate_per_hour")

    def _observe_projected(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._gauge("projected")

    def _observe_runs_out_in(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._gauge("runs_out_in")


def _runs_out_in(used: int, limit: int, elapsed: float, left: float) -> Decimal | None:
    """Seconds until the budget is used up at the period's average rate so far: 0 when it
    is, None when it is not before its period (or a pool's credit) ends, or nothing is used.
    An alert on "runs out within N days" reads it; ``budgets --forecast`` gives the
    seasonal forecast from the ledger."""
    if used >= limit:
        return Decimal(0)
    if used <= 0:
        return None
    seconds = Decimal(limit - used) * Decimal(elapsed) / Decimal(used)
    return seconds if seconds < Decimal(left) else None


def _units(budget: Budget, amount: Decimal) -> int:
    """Store units of a used amount: tokens, or nano-units of the currency rounded up."""
    return int(amount) if budget.in_tokens else _nano(amount)


def _value(budget: Budget, units: int | Decimal) -> Decimal:
    return Decimal(units) if budget.in_tokens else Decimal(units) / NANO


def _human(budget: Budget, units: int) -> str:
    return f"{_value(budget, units):f}"
