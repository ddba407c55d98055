"""Budgets and prepaid token pools: config, windows, enforcement, settlement, thresholds,
gauges, pools, rollover, scopes, concurrency (threads on the in-process store, processes on
Redis), store outages and the ``otel-tokens budgets`` report.

The `BudgetManager` is driven here as the instrumentation drives it (``preflight`` before the
request, ``Reservation.settle`` after); tests/instrumentation/test_budgets_e2e.py does it
through the real ``openai`` client.

Currency amounts use genai-prices' gpt-4o-mini prices (USD per 1M tokens: input 0.15,
output 0.6), so 1000 input + 500 output tokens cost exactly 0.00045 USD.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import os
import random
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from _processes import run
from _services import REDIS_URL
from _telemetry import metric_points
from otel_tokens import semconv as sc
from otel_tokens.budgets import (
    ENV_BUDGET_STORE,
    ENV_BUDGETS,
    Budget,
    BudgetConfigError,
    BudgetExceeded,
    BudgetManager,
    BudgetUnavailable,
    MemoryStore,
    RedisStore,
    Reservation,
    StoreError,
    TopUp,
    budget_status,
    budgets_from_config,
    expect,
    load_budgets,
    open_store,
    scope_values,
)
from otel_tokens.budgets._manager import _nano
from otel_tokens.cli import main
from otel_tokens.ledger import SQLiteLedger
from otel_tokens.pricing import Catalog, PriceResult
from otel_tokens.records import CostRecord
from otel_tokens.usage import TokenUsage

D = Decimal
NOW = datetime(2026, 11, 11, 0, 0, tzinfo=UTC)  # 10 days into a 30-day month
MODEL = "gpt-4o-mini"
CATALOG = Catalog()  # genai-prices only, whatever OTEL_TOKENS_PRICES says
DOWN_URL = "redis://127.0.0.1:1/0"  # nothing listens there


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


class Clock:
    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class Metrics:
    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader])

    def points(self, name: str) -> list[Any]:
        return metric_points(self.reader, name)

    def by_budget(self, name: str) -> dict[str, float]:
        return {p.attributes[sc.BILLING_BUDGET_NAME]: p.value for p in self.points(name)}


def manager(
    *budgets: Budget,
    store: Any = None,
    clock: Callable[[], datetime] | None = None,
    metrics: Metrics | None = None,
    **kwargs: Any,
) -> BudgetManager:
    return BudgetManager(
        budgets,
        store if store is not None else MemoryStore(),
        catalog=CATALOG,
        clock=clock or Clock(),
        meter_provider=(metrics or Metrics()).provider,
        **kwargs,
    )


def tokens(name: str = "b", limit: int = 1000, **kw: Any) -> Budget:
    kw.setdefault("mode", "enforce")
    return Budget(name, limit=D(limit), unit="tokens", **kw)


def preflight(
    m: BudgetManager,
    *,
    n_in: int = 100,
    max_out: int | None = 100,
    model: str | None = MODEL,
    provider: str | None = "openai",
    tenant: str | None = "acme",
    user: str | None = None,
    feature: str | None = None,
    **tags: str,
) -> Reservation | None:
    attribution = {
        k: v
        for k, v in {
            sc.BILLING_TENANT_ID: tenant,
            sc.BILLING_USER_ID: user,
            sc.BILLING_FEATURE: feature,
        }.items()
        if v is not None
    }
    attribution.update({sc.BILLING_TAG_PREFIX + k: v for k, v in tags.items()})
    return m.preflight(
        provider=provider,
        model=model,
        attribution=attribution,
        input_tokens=lambda: n_in,
        max_output_tokens=max_out,
    )


def price(usage: TokenUsage, model: str = MODEL) -> PriceResult:
    return CATALOG.price(usage, model, provider="openai", at=NOW)


def settle(reservation: Reservation | None, usage: TokenUsage | None) -> None:
    assert reservation is not None
    reservation.settle(usage, None if usage is None else price(usage))


def call(m: BudgetManager, usage: TokenUsage, **kw: Any) -> None:
    """A whole call: preflight, then settle with the real usage."""
    settle(preflight(m, **kw), usage)


def used(m: BudgetManager, budget: Budget) -> int:
    """Store units used in the budget's current accounts (tokens, or nano-currency)."""
    return sum(m.store.used([k for k, _ in m.accounts(budget, m.clock())]))


def remaining(m: BudgetManager, budget: Budget) -> Decimal:
    (row,) = [r for r in m.status() if r["budget"] is budget]
    value: Decimal = row["remaining"]
    return value


# --- configuration -------------------------------------------------------------------------------
README_CONFIG = """
budgets:
  - name: acme-monthly
    scope: {tenant: acme}            # tenant, user, feature, model, provider, tag.<key>
    limit: "500"                     # a decimal amount of `unit`
    unit: USD                        # a currency, or `tokens`
    period: monthly                  # daily, monthly, fixed (with start/end), pool
    mode: enforce                    # observe (default) or enforce
    rollover: true                   # unused balance of the previous period carries over
    start: 2026-11-01                # with rollover: the first period it counts from
    on_store_error: open             # open (default) or closed, when Redis is unreachable
  - name: globex-prepaid
    scope: {tenant: globex}
    unit: tokens
    period: pool                     # a prepaid pool: top-ups, each with an expiry
    mode: enforce
    top_ups:
      - {amount: 5000000, at: 2026-11-01, expires: 2027-02-01}
      - {amount: 1000000, at: 2026-11-20}
  - name: launch
    limit: 0.25
    period: fixed
    start: 2026-11-01T09:00:00+01:00
    end: 2026-11-08
    scope: {feature: launch, tag.plan: pro, model: gpt-4o-mini, provider: openai, user: u-1}
    on_store_error: closed
"""


def test_readme_config_parses(tmp_path: Path) -> None:
    path = tmp_path / "budgets.yaml"
    path.write_text(README_CONFIG)
    acme, globex, launch = load_budgets(path)
    assert acme == Budget(
        "acme-monthly",
        limit=D("500"),
        unit="USD",
        period="monthly",
        scope={"tenant": "acme"},
        mode="enforce",
        rollover=True,
        start=utc(2026, 11, 1),
    )
    assert not acme.fail_closed
    assert globex.in_tokens
    assert globex.period == "pool"
    assert globex.top_ups == (
        TopUp(D(5_000_000), utc(2026, 11, 1), utc(2027, 2, 1)),
        TopUp(D(1_000_000), utc(2026, 11, 20)),
    )
    assert launch.mode == "observe"  # the default
    assert launch.unit == "USD"  # the default
    assert launch.limit == D("0.25")
    assert launch.start == datetime.fromisoformat("2026-11-01T09:00:00+01:00")
    assert launch.end == utc(2026, 11, 8)
    assert launch.fail_closed
    assert dict(launch.scope) == {
        "feature": "launch",
        "tag.plan": "pro",
        "model": "gpt-4o-mini",
        "provider": "openai",
        "user": "u-1",
    }


def test_config_as_a_bare_list_and_empty_files(tmp_path: Path) -> None:
    (budget,) = budgets_from_config([{"name": "x", "limit": 5, "unit": "tokens"}])
    assert budget == Budget("x", limit=D(5), unit="tokens")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_budgets(empty) == []
    assert budgets_from_config({"budgets": []}) == []


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("budgets: {name: x}", r"budgets\.yaml: 'budgets' must be a list"),
        ("budgets: [{limit: 5}]", r"budgets\.yaml\[0\]: each budget needs a 'name'"),
        ("budgets: [x]", r"\[0\]: each budget needs a 'name'"),
        ("budgets: [{name: x, limit: 5, unit: usd}]", r"\[0\]: budget 'x': unit must be"),
        ("budgets: [{name: x, limit: 5, unit: dollars}]", "unit must be a currency or 'tokens'"),
        ("budgets: [{name: x}]", r"\[0\]: budget 'x': limit must be positive"),
        ("budgets: [{name: x, limit: -1}]", "limit must be positive"),
        ("budgets: [{name: x, limit: abc}]", r"\[0\]\.limit: not a decimal amount: 'abc'"),
        ("budgets: [{name: x, limit: .nan}]", "not a decimal amount"),
        ("budgets: [{name: x, limit: 5, period: weekly}]", "period must be daily, monthly"),
        ("budgets: [{name: x, limit: 5, mode: block}]", "mode must be observe or enforce"),
        ("budgets: [{name: x, limit: 5, mdoe: enforce}]", r"unknown key\(s\) \['mdoe'\]"),
        ("budgets: [{name: x, limit: 5, period: fixed}]", "a fixed window needs start and end"),
        (
            "budgets: [{name: x, limit: 5, period: fixed, start: 2026-11-02, end: 2026-11-01}]",
            "end must be after start",
        ),
        ("budgets: [{name: x, limit: 5, start: 'soon'}]", r"\[0\]\.start: not an ISO 8601"),
        ("budgets: [{name: x, period: pool}]", "a pool needs at least one top-up"),
        ("budgets: [{name: x, period: pool, top_ups: [{at: 2026-01-01}]}]", "needs an 'amount'"),
        (
            "budgets: [{name: x, period: pool, top_ups: [{amount: 0}]}]",
            r"top_ups\[0\]\.amount: must be positive",
        ),
        (
            "budgets: [{name: x, period: pool, top_ups: [{amount: 5, expires: nope}]}]",
            r"top_ups\[0\]\.expires: not an ISO 8601",
        ),
        (
            "budgets: [{name: x, period: pool, top_ups: [{amount: 5, at: 2026-02-01, "
            "expires: 2026-01-01}]}]",
            "expires must be after at",
        ),
        (
            "budgets: [{name: x, period: pool, top_ups: [{amount: 5, expiry: 2027-01-01}]}]",
            r"unknown key\(s\) \['expiry'\]",
        ),
        ("budgets: [{name: x, period: pool, top_ups: {amount: 5}}]", "top_ups: must be a list"),
        ("budgets: [{name: x, limit: 5, scope: [tenant]}]", r"scope: must be a mapping"),
        ("budgets: [{name: x, limit: 5, scope: {team: a}}]", r"unknown scope key\(s\) \['team'\]"),
        ("budgets: [{name: x, limit: 5, rollover: 'no'}]", "rollover: must be true or false"),
        ("budgets: [{name: x, limit: 5, on_store_error: close}]", "must be open or closed"),
        ("budgets: [{name: x, limit: 5}, {name: x, limit: 6}]", "duplicate budget name 'x'"),
    ],
)
def test_config_errors_are_clear(tmp_path: Path, config: str, message: str) -> None:
    path = tmp_path / "budgets.yaml"
    path.write_text(config)
    with pytest.raises(BudgetConfigError, match=message) as info:
        load_budgets(path)
    assert str(path) in str(info.value)  # says which file


def test_unreadable_or_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(BudgetConfigError, match=r"cannot read budgets from .*missing\.yaml"):
        load_budgets(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("budgets: [unclosed\n")
    with pytest.raises(BudgetConfigError, match=r"cannot read budgets from .*bad\.yaml"):
        load_budgets(bad)


def test_budget_validation_in_code() -> None:
    with pytest.raises(BudgetConfigError, match="mode must be"):
        Budget("x", limit=D(1), mode="block")  # type: ignore[arg-type]
    with pytest.raises(BudgetConfigError, match="period must be"):
        Budget("x", limit=D(1), period="weekly")  # type: ignore[arg-type]
    with pytest.raises(BudgetConfigError, match="unknown scope key"):
        Budget("x", limit=D(1), scope={"customer": "a"})
    Budget("x", limit=D(1), scope={"tag.anything": "a"})  # tags are free


def test_manager_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_BUDGETS, raising=False)
    assert BudgetManager.from_env() is None
    path = tmp_path / "b.yaml"
    path.write_text(README_CONFIG)
    monkeypatch.setenv(ENV_BUDGETS, str(path))
    monkeypatch.delenv(ENV_BUDGET_STORE, raising=False)
    m = BudgetManager.from_env(catalog=CATALOG)
    assert m is not None
    assert [b.name for b in m.budgets] == ["acme-monthly", "globex-prepaid", "launch"]
    assert isinstance(m.store, MemoryStore)
    monkeypatch.setenv(ENV_BUDGET_STORE, REDIS_URL)
    m = BudgetManager.from_env(catalog=CATALOG)
    assert m is not None and isinstance(m.store, RedisStore)


def test_open_store() -> None:
    assert isinstance(open_store(None), MemoryStore)
    assert isinstance(open_store("memory"), MemoryStore)
    assert isinstance(open_store(REDIS_URL), RedisStore)
    with pytest.raises(ValueError, match="unsupported budget store 'mysql://x'"):
        open_store("mysql://x")


# --- windows -------------------------------------------------------------------------------------
def test_daily_window() -> None:
    b = tokens(period="daily")
    at = utc(2026, 3, 1, 23, 59, 59)
    assert b.window(at) == (utc(2026, 3, 1), utc(2026, 3, 2), "2026-03-01")
    assert b.previous_window(at) == "2026-02-28"
    assert b.previous_window(utc(2024, 3, 1)) == "2024-02-29"


def test_monthly_window() -> None:
    b = tokens(period="monthly")
    assert b.window(utc(2026, 11, 30, 23)) == (utc(2026, 11, 1), utc(2026, 12, 1), "2026-11")
    assert b.window(utc(2026, 12, 31)) == (utc(2026, 12, 1), utc(2027, 1, 1), "2026-12")
    assert b.window(utc(2028, 2, 10))[1] == utc(2028, 3, 1)  # leap year
    assert b.previous_window(utc(2027, 1, 15)) == "2026-12"
    assert b.previous_window(utc(2026, 3, 31)) == "2026-02"


def test_fixed_and_pool_windows() -> None:
    fixed = tokens(period="fixed", start=utc(2026, 11, 1), end=utc(2026, 11, 8))
    assert fixed.window(NOW) == (utc(2026, 11, 1), utc(2026, 11, 8), "fixed")
    assert fixed.previous_window(NOW) is None
    expiring = tokens(
        period="pool",
        top_ups=(
            TopUp(D(5), utc(2026, 11, 1), utc(2027, 2, 1)),
            TopUp(D(5), utc(2026, 10, 1), utc(2027, 1, 1)),
        ),
    )
    assert expiring.window(NOW) == (utc(2026, 10, 1), utc(2027, 2, 1), "pool")
    # Credit that never expires keeps the pool open for ever.
    forever = tokens(
        period="pool",
        top_ups=(TopUp(D(5), utc(2026, 11, 1), utc(2027, 2, 1)), TopUp(D(5), utc(2026, 11, 20))),
    )
    start, end, _ = forever.window(NOW)
    assert start == utc(2026, 11, 1)
    assert end.year == 9999


def test_daily_budget_resets_at_midnight_utc() -> None:
    clock = Clock(utc(2026, 11, 11, 23, 0))
    b = tokens(limit=1000, period="daily")
    m = manager(b, clock=clock)
    call(m, TokenUsage(input=700, output=200))
    with pytest.raises(BudgetExceeded):
        preflight(m, n_in=50, max_out=100)  # 150 > 100 left
    clock.advance(hours=1)
    assert remaining(m, b) == 1000
    call(m, TokenUsage(input=50, output=100), n_in=50, max_out=100)
    assert remaining(m, b) == 850


def test_monthly_budget_resets_with_the_month() -> None:
    clock = Clock(utc(2026, 11, 30, 12))
    b = tokens(limit=500, period="monthly")
    m = manager(b, clock=clock)
    call(m, TokenUsage(input=300, output=150), n_in=300, max_out=150)
    with pytest.raises(BudgetExceeded):
        preflight(m, n_in=100, max_out=100)
    clock.now = utc(2026, 12, 1)
    call(m, TokenUsage(input=100, output=100))
    assert remaining(m, b) == 300


def test_fixed_window_applies_only_inside_it() -> None:
    clock = Clock(utc(2026, 10, 31, 23, 59))
    b = tokens(limit=300, period="fixed", start=utc(2026, 11, 1), end=utc(2026, 11, 8))
    m = manager(b, clock=clock)
    assert preflight(m, n_in=10_000) is None  # before the window: not limited, not counted
    clock.now = utc(2026, 11, 1)
    call(m, TokenUsage(input=100, output=100))
    with pytest.raises(BudgetExceeded):
        preflight(m, n_in=100, max_out=100)
    clock.now = utc(2026, 11, 7, 23, 59)
    with pytest.raises(BudgetExceeded):
        preflight(m, n_in=100, max_out=100)
    clock.now = utc(2026, 11, 8)  # the end is exclusive
    assert preflight(m, n_in=100_000) is None
    assert m.store.used(["b:fixed"]) == [200]


# --- enforce mode --------------------------------------------------------------------------------
def test_enforce_raises_before_the_call_with_a_clear_message() -> None:
    b = tokens("acme-daily", limit=1000)
    m = manager(b)
    call(m, TokenUsage(input=500, output=300), n_in=500, max_out=300)
    with pytest.raises(BudgetExceeded) as info:
        preflight(m, n_in=150, max_out=100)
    exc = info.value
    assert (exc.budget, exc.needed, exc.available, exc.unit) == ("acme-daily", 250, 200, "tokens")
    assert str(exc) == (
        "budget 'acme-daily' would be exceeded: this call may use up to 250 tokens "
        "and 200 tokens remain"
    )
    assert used(m, b) == 800  # nothing was reserved by the refused call


# --- a block of calls: budgets.expect -------------------------------------------------------
def test_a_block_its_budget_cannot_pay_for_is_refused_at_its_first_call() -> None:
    """A workflow of three calls whose pool can pay for its first call but not for all of
    them used to send and bill the first call, then be refused at a later one."""
    b = tokens("globex-prepaid", limit=800)
    m = manager(b)
    call(m, TokenUsage(input=300, output=108), n_in=300, max_out=200)  # 392 left
    with expect(tokens=1_360), pytest.raises(BudgetExceeded) as info:
        preflight(m, n_in=33, max_out=200)  # would fit alone (233 <= 392)
    assert (info.value.needed, info.value.available) == (1_360, 392)
    assert str(info.value) == (
        "budget 'globex-prepaid' would be exceeded: the calls of this block may use up to "
        "1,360 tokens and 392 tokens remain"
    )
    assert used(m, b) == 408  # nothing reserved, nothing sent


def test_a_block_that_fits_reserves_its_maximum_at_the_first_call_only() -> None:
    b = tokens(limit=2_000)
    m = manager(b)
    with expect(tokens=1_000):
        first = preflight(m, n_in=20, max_out=200)
        assert first is not None and first.plan == [[1_000]]  # the block's maximum, held
        settle(first, TokenUsage(input=20, output=150))
        assert used(m, b) == 170  # settled to the real usage
        second = preflight(m, n_in=400, max_out=400)
        assert second is not None and second.plan == [[800]]  # its own maximum
        settle(second, TokenUsage(input=400, output=300))
    assert used(m, b) == 870
    outside = preflight(m, n_in=10, max_out=10)
    assert outside is not None and outside.plan == [[20]]


def test_a_block_larger_than_its_first_call_only_where_it_declares_a_maximum() -> None:
    """``tokens`` bounds token budgets, ``cost`` currency budgets (in their currency); a
    call's own larger maximum still wins."""
    tok = tokens("tok", limit=10_000)
    usd = Budget("usd", limit=D("1"), unit="USD", mode="enforce")
    m = manager(tok, usd)
    own = _nano(price(TokenUsage(input=100, output=100)).total or D(0))
    with expect(tokens=50):
        r = preflight(m, n_in=100, max_out=100)
    assert r is not None and r.plan == [[200], [own]]
    settle(r, None)
    with expect(cost="0.25"):
        r = preflight(m, n_in=100, max_out=100)
    assert r is not None and r.plan == [[200], [250_000_000]]
    settle(r, None)
    with expect(tokens=20_000, cost="0.25"), pytest.raises(BudgetExceeded) as info:
        preflight(m, n_in=100, max_out=100)
    assert info.value.budget == "tok"


def test_expect_checks_its_arguments() -> None:
    for bad in ({"tokens": -1}, {"tokens": 1.5}, {"cost": "NaN"}, {"cost": "-0.01"}):
        with pytest.raises(ValueError):
            expect(**bad)  # type: ignore[arg-type]


def test_enforce_uses_the_default_max_output_when_the_request_sets_none() -> None:
    b = tokens(limit=5000)
    m = manager(b)
    with pytest.raises(BudgetExceeded) as info:  # a model whose output limit is unknown
        preflight(m, n_in=1000, max_out=None, model="my-own-model")
    assert info.value.needed == 1000 + 4096
    small = manager(tokens(limit=5000), default_max_output_tokens=512)
    reservation = preflight(small, n_in=1000, max_out=None)
    assert reservation is not None
    assert reservation.plan == [[1512]]


def test_enforce_reserves_preflights_worst_case_when_the_request_sets_none() -> None:
    """Not a fixed guess: the model's output limit (gpt-4o-mini: 16384), within the room its
    context window (128000) leaves after the input."""
    m = manager(tokens(limit=10**6))
    reservation = preflight(m, n_in=1000, max_out=None)
    assert reservation is not None
    assert reservation.plan == [[1000 + 16_384]]
    nearly_full = preflight(m, n_in=120_000, max_out=None)
    assert nearly_full is not None
    assert nearly_full.plan == [[128_000]]  # only 8000 tokens of room are left for output


def test_reservation_is_settled_to_the_actual_usage() -> None:
    b = tokens(limit=10_000)
    m = manager(b)
    reservation = preflight(m, n_in=1200, max_out=2000)
    assert reservation is not None
    assert used(m, b) == 3200  # the maximum is held while the call runs
    assert remaining(m, b) == 6800
    settle(reservation, TokenUsage(input=1000, cache_read=200, output=150, reasoning=50))
    assert used(m, b) == 1400  # input_total + output_total, exactly
    assert remaining(m, b) == 8600
    settle(reservation, TokenUsage(input=1000))  # settled once only
    assert used(m, b) == 1400


def test_a_call_without_usage_releases_its_reservation() -> None:
    b = tokens(limit=10_000)
    m = manager(b)
    settle(preflight(m, n_in=1200, max_out=2000), None)
    assert used(m, b) == 0


def test_usage_beyond_the_estimate_still_counts() -> None:
    b = tokens(limit=1000)
    m = manager(b)
    call(m, TokenUsage(input=900, output=600), n_in=100, max_out=100)
    assert used(m, b) == 1500
    assert remaining(m, b) == -500
    with pytest.raises(BudgetExceeded) as info:
        preflight(m, n_in=1, max_out=1)
    assert info.value.available == 0


def test_currency_budget_reserves_the_priced_maximum_and_settles_exactly() -> None:
    b = Budget("usd", limit=D("0.001"), unit="USD", mode="enforce")
    m = manager(b)
    reservation = preflight(m, n_in=1000, max_out=500)
    assert reservation is not None
    # 1000 x 0.15 + 500 x 0.6 per 1M tokens = 0.00045 USD, held in nano-dollars.
    assert used(m, b) == 450_000
    settle(reservation, TokenUsage(input=1000, output=100))
    assert used(m, b) == 210_000  # 0.00015 + 0.00006
    assert remaining(m, b) == D("0.00079")
    with pytest.raises(BudgetExceeded) as info:
        preflight(m, n_in=2000, max_out=1000)  # 0.0009 > 0.00079
    assert info.value.unit == "USD"
    assert str(info.value) == (
        "budget 'usd' would be exceeded: this call may use up to 0.0009 USD and 0.00079 USD remain"
    )


def test_currency_amounts_are_rounded_up_to_the_nano_unit() -> None:
    assert _nano(D("0.0000000001")) == 1
    assert _nano(D("0.000000002")) == 2
    assert _nano(D("0.0000000020000001")) == 3
    b = Budget("usd", limit=D(1), unit="USD")
    m = manager(b)
    reservation = preflight(m)
    assert reservation is not None
    tiny = PriceResult(
        status="priced",
        usage=TokenUsage(input=1),
        model="m",
        provider=None,
        currency="USD",
        catalog_version="test",
        total=D("0.00000000012"),
    )
    reservation.settle(TokenUsage(input=1), tiny)
    assert used(m, b) == 1


def test_a_currency_budget_ignores_costs_in_other_currencies() -> None:
    b = Budget("eur", limit=D(1), unit="EUR")
    m = manager(b)
    call(m, TokenUsage(input=1000))  # priced in USD
    assert used(m, b) == 0


def test_unpriced_model_cannot_be_bounded_in_advance(caplog: pytest.LogCaptureFixture) -> None:
    b = Budget("usd", limit=D("0.001"), unit="USD", mode="enforce")
    m = manager(b)
    with caplog.at_level(logging.WARNING, logger="otel_tokens.budgets"):
        reservation = preflight(m, model="no-such-model", n_in=10**6)
    assert reservation is not None
    assert "no price for no-such-model" in caplog.text
    assert used(m, b) == 0


def test_token_and_currency_budgets_on_one_call() -> None:
    t = tokens("tok", limit=10_000)
    c = Budget("usd", limit=D(1), unit="USD", mode="enforce")
    m = manager(t, c)
    call(m, TokenUsage(input=1000, output=500), n_in=1000, max_out=1000)
    assert used(m, t) == 1500
    assert used(m, c) == 450_000
    assert remaining(m, c) == D("0.99955")


def test_reservation_is_all_or_nothing_across_budgets() -> None:
    roomy = tokens("roomy", limit=10_000)
    tight = tokens("tight", limit=100)
    m = manager(roomy, tight)
    with pytest.raises(BudgetExceeded) as info:
        preflight(m, n_in=100, max_out=100)
    assert info.value.budget == "tight"
    assert used(m, roomy) == 0


def test_input_tokens_are_counted_only_when_a_budget_enforces() -> None:
    counted: list[int] = []

    def count() -> int:
        counted.append(1)
        return 10

    m = manager(tokens(mode="observe"))
    reservation = m.preflight(
        provider="openai",
        model=MODEL,
        attribution={sc.BILLING_TENANT_ID: "acme"},
        input_tokens=count,
        max_output_tokens=None,
    )
    assert reservation is not None
    assert counted == []
    assert (
        manager(tokens(scope={"tenant": "globex"})).preflight(
            provider="openai",
            model=MODEL,
            attribution={sc.BILLING_TENANT_ID: "acme"},
            input_tokens=count,
            max_output_tokens=None,
        )
        is None
    )
    assert counted == []


# --- observe mode, thresholds and gauges ---------------------------------------------------------
def _threshold_logs(caplog: pytest.LogCaptureFixture) -> list[int]:
    return [
        r.threshold  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "otel_tokens.budgets" and hasattr(r, "threshold")
    ]


def _crossings(metrics: Metrics) -> dict[tuple[str, int], float]:
    return {
        (
            p.attributes[sc.BILLING_BUDGET_NAME],
            p.attributes[sc.BILLING_BUDGET_THRESHOLD],
        ): p.value
        for p in metrics.points(sc.METRIC_BUDGET_THRESHOLD_CROSSINGS)
    }


def test_observe_never_blocks_and_logs_each_threshold_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()
    b = tokens("watch", limit=100, mode="observe")
    m = manager(b, metrics=metrics)
    caplog.set_level(logging.WARNING, logger="otel_tokens.budgets")
    for _ in range(6):  # 30, 60, 90, 120, 150, 180 of 100
        reservation = preflight(m, n_in=10**6, max_out=10**6)  # never refused
        assert reservation is not None
        assert reservation.plan == [None]  # nothing reserved in observe mode
        settle(reservation, TokenUsage(input=20, output=10))
    assert used(m, b) == 180
    assert _threshold_logs(caplog) == [50, 80, 100]
    messages = [r.getMessage() for r in caplog.records if hasattr(r, "threshold")]
    assert messages == [
        "otel-tokens: budget 'watch' reached 50% of its limit (60 of 100 tokens)",
        "otel-tokens: budget 'watch' reached 80% of its limit (90 of 100 tokens)",
        "otel-tokens: budget 'watch' reached 100% of its limit (120 of 100 tokens)",
    ]
    assert _crossings(metrics) == {("watch", 50): 1, ("watch", 80): 1, ("watch", 100): 1}


def test_one_call_can_cross_every_threshold(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    b = Budget("usd", limit=D("0.0001"), unit="USD")
    m = manager(b, metrics=metrics)
    caplog.set_level(logging.WARNING, logger="otel_tokens.budgets")
    call(m, TokenUsage(input=1000))  # 0.00015 USD: 150%
    assert _threshold_logs(caplog) == [50, 80, 100]
    assert "(0.00015 of 0.0001 USD)" in caplog.records[-1].getMessage()
    assert _crossings(metrics) == {("usd", 50): 1, ("usd", 80): 1, ("usd", 100): 1}


def test_thresholds_are_crossed_again_in_a_new_period(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock(utc(2026, 11, 11, 12))
    metrics = Metrics()
    m = manager(tokens(limit=100, mode="observe", period="daily"), clock=clock, metrics=metrics)
    caplog.set_level(logging.WARNING, logger="otel_tokens.budgets")
    call(m, TokenUsage(input=55))
    call(m, TokenUsage(input=1))  # still above 50: nothing new
    clock.advance(days=1)
    call(m, TokenUsage(input=55))
    assert _threshold_logs(caplog) == [50, 50]
    assert _crossings(metrics) == {("b", 50): 2}


def test_enforce_mode_also_reports_thresholds(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    m = manager(tokens(limit=1000), metrics=metrics)
    caplog.set_level(logging.WARNING, logger="otel_tokens.budgets")
    call(m, TokenUsage(input=400, output=100), n_in=400, max_out=400)  # 50%
    call(m, TokenUsage(input=300, output=50), n_in=300, max_out=200)  # 85%
    assert _threshold_logs(caplog) == [50, 80]
    assert _crossings(metrics) == {("b", 50): 1, ("b", 80): 1}


def test_gauges_follow_each_budget() -> None:
    metrics = Metrics()
    t = tokens("tok", limit=1000, mode="observe")
    c = Budget("usd", limit=D(2), unit="USD")
    pool = tokens(
        "pool",
        period="pool",
        top_ups=(TopUp(D(300), utc(2026, 11, 1)), TopUp(D(200), utc(2026, 11, 6))),
    )
    m = manager(t, c, pool, metrics=metrics)
    call(m, TokenUsage(input=200, output=40), n_in=200, max_out=40)  # 240 tokens, 0.000054 USD
    # NOW is 10 days (240 h) into a 30-day month; the pool opened 10 days ago.
    assert metrics.by_budget(sc.METRIC_BUDGET_USED) == {
        "tok": 240.0,
        "usd": pytest.approx(0.000054),
        "pool": 240.0,
    }
    assert metrics.by_budget(sc.METRIC_BUDGET_LIMIT) == {"tok": 1000, "usd": 2, "pool": 500}
    rate = metrics.by_budget(sc.METRIC_BUDGET_SPEND_RATE)
    assert rate == {"tok": 1.0, "usd": pytest.approx(0.000054 / 240), "pool": 1.0}
    assert metrics.by_budget(sc.METRIC_BUDGET_PROJECTED) == {
        "tok": 720.0,  # 240 over 10 of 30 days
        "usd": pytest.approx(0.000162),
        "pool": 240.0,  # a pool has no end: what is used
    }
    units = {
        p.attributes[sc.BILLING_BUDGET_NAME]: p.attributes[sc.BILLING_BUDGET_UNIT]
        for p in metrics.points(sc.METRIC_BUDGET_USED)
    }
    assert units == {"tok": "tokens", "usd": "USD", "pool": "tokens"}


def test_runs_out_in_gauge() -> None:
    """240 tokens in the 240 hours of the month so far: 1 an hour. 60 left of 300 run out in
    60 h, before the month ends (20 days left); 760 left of 1000 would take past its end (no
    point); a pool has no period end; a used-up budget reports 0; an unused one nothing."""
    metrics = Metrics()
    soon = tokens("soon", limit=300, mode="observe")
    late = tokens("late", limit=1000, mode="observe")
    pool = tokens("pool", period="pool", top_ups=(TopUp(D(500), utc(2026, 11, 1)),))
    gone = tokens("gone", limit=200, mode="observe")
    idle = tokens("idle", limit=100, mode="observe", scope={"tenant": "nobody"})
    m = manager(soon, late, pool, gone, idle, metrics=metrics)
    call(m, TokenUsage(input=200, output=40), n_in=200, max_out=40)
    assert metrics.by_budget(sc.METRIC_BUDGET_RUNS_OUT_IN) == {
        "soon": 60 * 3600,
        "pool": 260 * 3600,
        "gone": 0,
    }
    (metric,) = [
        m
        for rm in metrics.reader.get_metrics_data().resource_metrics  # type: ignore[union-attr]
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == sc.METRIC_BUDGET_RUNS_OUT_IN
    ]
    assert metric.unit == "s"


def test_status_rows_are_exact() -> None:
    c = Budget("usd", limit=D(2), unit="USD")
    m = manager(c)
    call(m, TokenUsage(input=200, output=40))
    (row,) = m.status()
    assert row["window"] == "2026-11"
    assert row["used"] == D("0.000054")
    assert row["limit"] == D(2)
    assert row["remaining"] == D("1.999946")
    assert row["projected"] == D("0.000162")


def test_projection_after_a_fixed_window_is_what_was_used() -> None:
    clock = Clock(utc(2026, 11, 4))
    b = tokens(period="fixed", start=utc(2026, 11, 1), end=utc(2026, 11, 8), mode="observe")
    m = manager(b, clock=clock)
    call(m, TokenUsage(input=300))
    assert m.status()[0]["projected"] == 700
    clock.now = utc(2026, 12, 1)
    assert m.status()[0]["projected"] == 300


# --- prepaid pools -------------------------------------------------------------------------------
A = TopUp(D(100), utc(2026, 10, 1), utc(2026, 12, 1))
B = TopUp(D(100), utc(2026, 9, 1), utc(2027, 1, 1))
C = TopUp(D(100), utc(2026, 8, 1))  # never expires


def pool(*top_ups: TopUp, **kw: Any) -> Budget:
    return Budget("pool", unit="tokens", period="pool", mode="enforce", top_ups=top_ups, **kw)


def top_up_used(m: BudgetManager, b: Budget) -> list[int]:
    return m.store.used(b.top_up_keys())


def test_pool_draws_on_the_earliest_expiry_first() -> None:
    b = pool(C, B, A)  # declared in any order
    m = manager(b)
    assert [c for _, c in m.accounts(b, NOW)] == [100, 100, 100]
    assert [k for k, _ in m.accounts(b, NOW)] == [
        b.top_up_keys()[2],
        b.top_up_keys()[1],
        b.top_up_keys()[0],
    ]
    call(m, TokenUsage(input=120, output=30), n_in=120, max_out=30)
    assert top_up_used(m, b) == [0, 50, 100]  # C, B, A: A first, then B
    call(m, TokenUsage(input=100), n_in=100, max_out=0)
    assert top_up_used(m, b) == [50, 100, 100]
    assert remaining(m, b) == 50
    with pytest.raises(BudgetExceeded) as info:
        preflight(m, n_in=40, max_out=20)
    assert (info.value.needed, info.value.available) == (60, 50)


def test_a_reservation_spans_top_ups_and_settles_back_in_order() -> None:
    b = pool(A, B)
    m = manager(b)
    reservation = preflight(m, n_in=120, max_out=30)
    assert reservation is not None
    assert top_up_used(m, b) == [100, 50]
    settle(reservation, TokenUsage(input=60, output=10))
    assert top_up_used(m, b) == [70, 0]


def test_an_expired_top_up_is_not_usable() -> None:
    clock = Clock()
    b = pool(A, B)
    m = manager(b, clock=clock)
    call(m, TokenUsage(input=40), n_in=40, max_out=0)
    assert remaining(m, b) == 160
    clock.now = A.expires  # type: ignore[assignment]
    # A's 60 unused tokens are gone; only B is left.
    assert [k for k, _ in m.accounts(b, clock.now)] == [b.top_up_keys()[1]]
    assert remaining(m, b) == 100
    with pytest.raises(BudgetExceeded) as info:
        preflight(m, n_in=101, max_out=0)
    assert info.value.available == 100
    call(m, TokenUsage(input=100), n_in=100, max_out=0)
    assert top_up_used(m, b) == [40, 100]


def test_a_top_up_is_usable_only_from_its_time() -> None:
    clock = Clock(utc(2026, 11, 1))
    later = TopUp(D(500), utc(2026, 11, 20))
    b = pool(A, later)
    m = manager(b, clock=clock)
    with pytest.raises(BudgetExceeded) as info:
        preflight(m, n_in=200, max_out=0)
    assert info.value.available == 100
    clock.now = utc(2026, 11, 20)
    call(m, TokenUsage(input=200), n_in=200, max_out=0)
    assert top_up_used(m, b) == [100, 100]


def test_a_pool_without_active_credit_refuses_every_call() -> None:
    clock = Clock(utc(2027, 6, 1))
    b = pool(A, B)
    m = manager(b, clock=clock)
    with pytest.raises(BudgetExceeded) as info:
        preflight(m, n_in=1, max_out=1)
    assert info.value.available == 0
    assert remaining(m, b) == 0


def test_identical_top_ups_are_separate_credit() -> None:
    twice = TopUp(D(100), utc(2026, 11, 1))
    b = pool(twice, twice)
    assert len(set(b.top_up_keys())) == 2
    m = manager(b)
    assert remaining(m, b) == 200
    call(m, TokenUsage(input=150), n_in=150, max_out=0)
    assert top_up_used(m, b) == [100, 50]
    assert remaining(m, b) == 50
    call(m, TokenUsage(input=50), n_in=50, max_out=0)
    assert remaining(m, b) == 0


def test_a_currency_pool() -> None:
    b = Budget(
        "credits",
        unit="USD",
        period="pool",
        mode="enforce",
        top_ups=(TopUp(D("0.0005"), utc(2026, 11, 1), utc(2026, 12, 1)), TopUp(D("1"), NOW)),
    )
    m = manager(b)
    call(m, TokenUsage(input=1000, output=1000), n_in=1000, max_out=1000)  # 0.00075 USD
    assert top_up_used(m, b) == [500_000, 250_000]
    assert remaining(m, b) == D("1.0005") - D("0.00075")


# --- rollover ------------------------------------------------------------------------------------
def test_rollover_carries_the_unused_balance_of_the_previous_period() -> None:
    clock = Clock(utc(2026, 10, 20))
    b = tokens(limit=100, rollover=True, start=utc(2026, 10, 1))
    plain = tokens("plain", limit=100, mode="observe")
    m = manager(b, plain, clock=clock)
    call(m, TokenUsage(input=30), n_in=30, max_out=0)
    clock.now = utc(2026, 11, 2)
    assert remaining(m, b) == 170  # 100 + the 70 left in October
    assert remaining(m, plain) == 100
    call(m, TokenUsage(input=150), n_in=150, max_out=0)
    with pytest.raises(BudgetExceeded) as info:
        preflight(m, n_in=21, max_out=0)
    assert info.value.available == 20
    # The carry-over is one period deep: December gets November's unused balance only,
    # and November overspent its own limit, so nothing carries.
    clock.now = utc(2026, 12, 5)
    assert remaining(m, b) == 100


def test_daily_rollover() -> None:
    clock = Clock(utc(2026, 11, 10, 18))
    b = tokens(limit=100, period="daily", rollover=True, start=utc(2026, 11, 10))
    m = manager(b, clock=clock)
    call(m, TokenUsage(input=10), n_in=10, max_out=0)
    clock.advance(days=1)
    assert remaining(m, b) == 190
    clock.advance(days=2)  # the day before had no use at all
    assert remaining(m, b) == 200


def test_rollover_does_not_carry_from_before_the_budget_started() -> None:
    clock = Clock(utc(2026, 11, 2))
    b = tokens(limit=100, rollover=True, start=utc(2026, 11, 1))
    m = manager(b, clock=clock)
    assert remaining(m, b) == 100  # October is before the budget: no carry-over
    clock.now = utc(2026, 12, 2)
    assert remaining(m, b) == 200  # November's unused 100 carries


def test_rollover_needs_a_start() -> None:
    with pytest.raises(BudgetConfigError, match="rollover needs 'start'"):
        tokens(limit=100, rollover=True)


# --- scopes ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("scope", "matching", "other"),
    [
        ({"tenant": "acme"}, {"tenant": "acme"}, {"tenant": "globex"}),
        ({"user": "u-1"}, {"user": "u-1"}, {"user": "u-2"}),
        ({"feature": "chat"}, {"feature": "chat"}, {"feature": "search"}),
        ({"model": "gpt-4o-mini"}, {"model": "gpt-4o-mini"}, {"model": "gpt-4o"}),
        ({"provider": "openai"}, {"provider": "openai"}, {"provider": "azure.ai.openai"}),
        ({"tag.plan": "pro"}, {"plan": "pro"}, {"plan": "free"}),
        (
            {"tenant": "acme", "feature": "chat"},
            {"tenant": "acme", "feature": "chat"},
            {"tenant": "acme", "feature": "search"},
        ),
        ({}, {"tenant": "anyone"}, None),
    ],
)
def test_scopes(scope: dict[str, str], matching: dict[str, str], other: Any) -> None:
    b = tokens(limit=100, scope=scope)
    m = manager(b)
    base: dict[str, Any] = {"tenant": None}
    with pytest.raises(BudgetExceeded):
        preflight(m, n_in=200, **{**base, **matching})
    if other is not None:
        assert preflight(m, n_in=200, **{**base, **other}) is None
    assert used(m, b) == 0


def test_scope_values() -> None:
    attribution = {
        sc.BILLING_TENANT_ID: "acme",
        sc.BILLING_USER_ID: "u-1",
        sc.BILLING_FEATURE: "chat",
        sc.BILLING_TAG_PREFIX + "plan": "pro",
        "unrelated": "x",
    }
    assert scope_values(attribution, provider="openai", model=MODEL) == {
        "tenant": "acme",
        "user": "u-1",
        "feature": "chat",
        "provider": "openai",
        "model": MODEL,
        "tag.plan": "pro",
    }
    assert scope_values({}, provider=None, model=None) == {}


def test_only_matching_budgets_are_charged() -> None:
    acme = tokens("acme", limit=1000, scope={"tenant": "acme"}, mode="observe")
    globex = tokens("globex", limit=1000, scope={"tenant": "globex"}, mode="observe")
    everyone = tokens("all", limit=1000, mode="observe")
    m = manager(acme, globex, everyone)
    call(m, TokenUsage(input=10), tenant="acme")
    call(m, TokenUsage(input=20), tenant="globex")
    call(m, TokenUsage(input=40), tenant=None)
    assert (used(m, acme), used(m, globex), used(m, everyone)) == (10, 20, 70)


# --- concurrency ---------------------------------------------------------------------------------
def _draw_until_refused(
    m: BudgetManager, rng: random.Random, calls: int, estimate: tuple[int, int]
) -> tuple[int, int]:
    """Make up to ``calls`` calls whose usage never exceeds their estimate; (used, refused)."""
    spent = refused = 0
    n_in, max_out = estimate
    for _ in range(calls):
        try:
            reservation = preflight(m, n_in=n_in, max_out=max_out, tenant="acme")
        except BudgetExceeded:
            refused += 1
            continue
        usage = TokenUsage(input=n_in, output=rng.randint(0, max_out))
        time.sleep(rng.random() / 2000)
        settle(reservation, usage)
        spent += usage.input + usage.output
    return spent, refused


def test_sixteen_threads_on_one_memory_pool_never_overspend() -> None:
    b = pool(TopUp(D(30_000), utc(2026, 10, 1), utc(2026, 12, 1)), TopUp(D(20_000), NOW))
    m = manager(b)
    capacity = 50_000
    barrier = threading.Barrier(16)
    results: list[tuple[int, int]] = []
    lock = threading.Lock()
    peaks: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peaks.append(sum(top_up_used(m, b)))

    def run(seed: int) -> None:
        barrier.wait()
        result = _draw_until_refused(m, random.Random(seed), 60, (100, 200))
        with lock:
            results.append(result)

    watcher = threading.Thread(target=watch)
    watcher.start()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    watcher.join()
    spent = sum(s for s, _ in results)
    refused = sum(r for _, r in results)
    assert refused > 0  # the pool ran dry: 16 x 60 calls may use up to 288,000 tokens
    assert sum(top_up_used(m, b)) == spent  # exact: the sum of the actual usage
    assert spent <= capacity
    # Reservations plus settled usage never exceeded the credit at any moment.
    assert max(peaks) <= capacity
    assert capacity - spent < 300 * 16  # what is left is less than the calls in flight held
    assert top_up_used(m, b)[0] == 30_000  # the expiring top-up went first


class _Intruding(MemoryStore):
    """Runs another caller's code right after each settlement's ``add``."""

    def __init__(self) -> None:
        super().__init__()
        self.hook: Callable[[], None] | None = None

    def add(self, deltas: Any) -> None:
        super().add(deltas)
        hook, self.hook = self.hook, None
        if hook is not None:
            hook()


def test_settlement_frees_only_the_unused_part_of_a_reservation() -> None:
    """Another caller reserving while a call settles gets only what that call did not use:
    usage within the estimates never overspends."""
    store = _Intruding()
    b = tokens(limit=600)
    m = manager(b, store=store)
    first = preflight(m, n_in=100, max_out=200)
    second = preflight(m, n_in=100, max_out=200)
    assert used(m, b) == 600
    intruder: list[Reservation | None] = []

    def intrude() -> None:
        with pytest.raises(BudgetExceeded) as info:
            intruder.append(preflight(m, n_in=100, max_out=200))
        assert info.value.available == 50

    store.hook = intrude
    settle(first, TokenUsage(input=100, output=150))  # 250 of its 300
    assert intruder == []
    assert used(m, b) == 550
    settle(second, TokenUsage(input=100, output=200))
    assert used(m, b) == 550


# Processes: a worker must be importable by the spawned interpreter, so it is module-level.
def _redis_pool(prefix: str) -> tuple[BudgetManager, Budget]:
    b = pool(TopUp(D(30_000), utc(2026, 10, 1), utc(2026, 12, 1)), TopUp(D(20_000), NOW))
    return manager(b, store=RedisStore(REDIS_URL, prefix=prefix)), b


def _redis_worker(prefix: str, seed: int, barrier: Any, results: Any) -> None:
    m, _ = _redis_pool(prefix)
    barrier.wait()
    results.put(_draw_until_refused(m, random.Random(seed), 80, (100, 200)))


def test_four_processes_on_one_redis_pool_never_overspend(redis_prefix: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(5)
    results = ctx.Queue()
    workers = [
        ctx.Process(target=_redis_worker, args=(redis_prefix, seed, barrier, results))
        for seed in range(4)
    ]
    for w in workers:
        w.start()
    m, b = _redis_pool(redis_prefix)
    capacity = 50_000
    barrier.wait(timeout=60)
    peaks = []
    while any(w.is_alive() for w in workers) and len(peaks) < 100_000:
        peaks.append(sum(top_up_used(m, b)))
        time.sleep(0.001)
    outcomes = [results.get(timeout=60) for _ in workers]
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0
    spent = sum(s for s, _ in outcomes)
    assert sum(r for _, r in outcomes) > 0  # 4 x 80 calls may use up to 96,000 tokens
    assert sum(top_up_used(m, b)) == spent  # exact
    assert spent <= capacity
    assert max(peaks) <= capacity
    assert capacity - spent < 300 * 4
    assert top_up_used(m, b)[0] == 30_000


def test_redis_store_basics(redis_prefix: str) -> None:
    store = RedisStore(REDIS_URL, prefix=redis_prefix)
    b = tokens(limit=1000)
    m = manager(b, store=store)
    call(m, TokenUsage(input=400, output=100), n_in=400, max_out=400)
    assert store.used(["b:2026-11", "b:2026-10"]) == [500, 0]
    assert store.used([]) == []
    with pytest.raises(BudgetExceeded) as info:
        preflight(m, n_in=600, max_out=0)
    assert info.value.available == 500
    # Another manager (another process) sees the same balance.
    other = manager(b, store=RedisStore(REDIS_URL, prefix=redis_prefix))
    assert remaining(other, b) == 500
    # Keys share one hash tag (Redis Cluster) and the prefix keeps tests apart.
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    keys = {k.decode() for k in client.scan_iter(match="{" + redis_prefix + "}:*")}
    client.close()
    assert keys == {"{" + redis_prefix + "}:budget:b:2026-11"}


# --- the store is down ---------------------------------------------------------------------------
def test_redis_down_fails_open_by_default(caplog: pytest.LogCaptureFixture) -> None:
    b = tokens(limit=10)
    m = manager(b, store=RedisStore(DOWN_URL))
    caplog.set_level(logging.WARNING, logger="otel_tokens.budgets")
    reservation = preflight(m, n_in=10**6)  # would be refused if the store answered
    assert reservation is not None
    assert "budget store unreachable" in caplog.text
    assert "failing open" in caplog.text
    caplog.clear()
    settle(reservation, TokenUsage(input=5))  # never raises
    assert "could not settle budgets" in caplog.text


def test_redis_down_fails_closed_when_configured() -> None:
    (b,) = budgets_from_config(
        [{"name": "strict", "limit": 10, "unit": "tokens", "mode": "enforce",
          "on_store_error": "closed"}]
    )  # fmt: skip
    m = manager(b, store=RedisStore(DOWN_URL))
    with pytest.raises(BudgetUnavailable) as info:
        preflight(m)
    assert isinstance(info.value, BudgetExceeded)
    assert info.value.budget == "strict"
    assert "budget 'strict' cannot be checked" in str(info.value)
    assert "failing closed" in str(info.value)


def test_redis_down_with_rollover_fails_closed_before_reserving() -> None:
    b = tokens(limit=10, rollover=True, fail_closed=True, start=utc(2026, 1, 1))
    m = manager(b, store=RedisStore(DOWN_URL))
    with pytest.raises(BudgetUnavailable):
        preflight(m)


def test_redis_down_observe_only_and_gauges(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    b = tokens(limit=10, mode="observe", fail_closed=True)  # fail_closed is for enforcement
    m = manager(b, store=RedisStore(DOWN_URL), metrics=metrics)
    reservation = preflight(m)
    assert reservation is not None
    caplog.set_level(logging.WARNING, logger="otel_tokens.budgets")
    settle(reservation, TokenUsage(input=5))
    assert "could not settle budgets" in caplog.text
    assert metrics.points(sc.METRIC_BUDGET_USED) == []  # no gauge values, no error
    with pytest.raises(StoreError):
        m.status()


# --- the report from the ledger ------------------------------------------------------------------
def record(
    at: datetime,
    quantity: int,
    *,
    bucket: str = "input",
    tenant: str | None = "acme",
    cost: str | None = None,
    currency: str = "USD",
    model: str = "gpt-4o-mini-2024-07-18",
    price_id: str | None = "genai-prices:openai/gpt-4o-mini",
    **tags: str,
) -> CostRecord:
    return CostRecord(
        stream_id=uuid.uuid4().hex,
        period_start=at - timedelta(minutes=1),
        period_end=at,
        provider="openai",
        model=model,
        bucket=bucket,
        quantity=quantity,
        currency=currency,
        catalog_version="test",
        pricing_status="priced" if cost is not None else "unpriced",
        price_id=price_id,
        billed_cost=None if cost is None else D(cost),
        tenant=tenant,
        tags=tags,
    )


LEDGER_RECORDS = [
    record(utc(2026, 10, 31, 23, 59), 10_000, cost="0.0015"),  # last month
    record(utc(2026, 11, 1, 0, 0), 5_000, cost="0.00075"),  # the first instant belongs to Oct
    record(utc(2026, 11, 1, 0, 1), 1_000, cost="0.00015"),
    record(utc(2026, 11, 5), 2_000, bucket="output", cost="0.0012", plan="pro"),
    record(utc(2026, 11, 10, 12), 3, bucket="web_search", cost="0.03"),  # requests, not tokens
    # Unpriced: its tokens count, its cost cannot.
    record(utc(2026, 11, 10, 13), 7_000, cost=None, model="gpt-4o-mini", price_id=None),
    record(utc(2026, 11, 10, 14), 4_000, cost="0.0006", currency="EUR"),
    record(utc(2026, 11, 10, 15), 400, tenant="globex", cost="0.00006"),
    record(utc(2026, 11, 10, 15, 10), 600, tenant="globex", cost="0.00009"),
    record(utc(2026, 11, 11, 0, 1), 999, cost="1"),  # after NOW
]

REPORT_BUDGETS = """
budgets:
  - {name: acme-usd, scope: {tenant: acme}, limit: "0.01", unit: USD, mode: enforce}
  - {name: acme-tokens, scope: {tenant: acme}, limit: 50000, unit: tokens}
  - {name: acme-pro, scope: {tenant: acme, tag.plan: pro}, limit: 10000, unit: tokens}
  - {name: mini, scope: {model: gpt-4o-mini}, limit: 100000, unit: tokens}
  - {name: acme-today, scope: {tenant: acme}, limit: 1000, unit: tokens, period: daily}
  - name: globex-pool
    scope: {tenant: globex}
    unit: tokens
    period: pool
    top_ups:
      - {amount: 700, at: 2026-11-01, expires: 2026-11-10T15:30:00Z}
      - {amount: 5000, at: 2026-11-01}
"""


@pytest.fixture
def ledger_file(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.db"
    ledger = SQLiteLedger(str(path))
    with ledger.transaction() as tx:
        assert len(tx.insert(LEDGER_RECORDS)) == len(LEDGER_RECORDS)
    ledger.close()
    return path


def _report_budgets(tmp_path: Path) -> Path:
    path = tmp_path / "budgets.yaml"
    path.write_text(REPORT_BUDGETS)
    return path


EXPECTED = {
    # acme, (Nov 1 00:00, Nov 11 00:00]: billed USD cost, web searches included.
    "acme-usd": {"spent": "0.03135", "limit": "0.01", "remaining": "-0.02135",
                 "projected": "0.09405", "window": "2026-11", "unit": "USD", "mode": "enforce"},
    # Tokens whatever their price or currency; requests are not tokens.
    "acme-tokens": {"spent": "14000", "limit": "50000", "remaining": "36000",
                    "projected": "42000", "window": "2026-11", "unit": "tokens",
                    "mode": "observe"},
    "acme-pro": {"spent": "2000", "limit": "10000", "remaining": "8000", "projected": "6000",
                 "window": "2026-11", "unit": "tokens", "mode": "observe"},
    # The model scope matches records of the served snapshot through their price id.
    "mini": {"spent": "15000", "limit": "100000", "remaining": "85000", "projected": "45000",
             "window": "2026-11", "unit": "tokens", "mode": "observe"},
    # The day that starts at NOW: nothing yet, no projection.
    "acme-today": {"spent": "0", "limit": "1000", "remaining": "1000", "projected": None,
                   "window": "2026-11-11", "unit": "tokens", "mode": "observe"},
    # 400 then 600 tokens: 700 of the expiring top-up, 300 of the other; only the latter is
    # active now.
    "globex-pool": {"spent": "300", "limit": "5000", "remaining": "4700", "projected": None,
                    "window": "pool", "unit": "tokens", "mode": "observe"},
}  # fmt: skip


def test_budget_status_from_records(tmp_path: Path) -> None:
    budgets = load_budgets(_report_budgets(tmp_path))
    rows = {r.budget.name: r for r in budget_status(budgets, LEDGER_RECORDS, NOW)}
    assert set(rows) == set(EXPECTED)
    for name, expected in EXPECTED.items():
        row = rows[name]
        assert row.spent == D(expected["spent"]), name
        assert row.limit == D(expected["limit"]), name
        assert row.remaining == D(expected["remaining"]), name
        projected = expected["projected"]
        assert row.projected == (None if projected is None else D(projected)), name
        assert row.window == expected["window"]
    assert rows["acme-usd"].start == utc(2026, 11, 1)
    assert rows["acme-usd"].end == utc(2026, 12, 1)


def test_budget_status_after_a_fixed_window_projects_what_was_spent() -> None:
    b = tokens(period="fixed", start=utc(2026, 11, 1), end=utc(2026, 11, 8))
    (row,) = budget_status([b], [record(utc(2026, 11, 2), 500)], utc(2026, 12, 1))
    assert row.spent == 500
    assert row.projected == 500


def _budgets_json_args(tmp_path: Path, ledger_file: Path, at: str) -> list[str]:
    """``otel-tokens budgets --json`` over ``ledger_file`` and the budgets of the report."""
    budgets = str(_report_budgets(tmp_path))
    return [
        "budgets",
        "--ledger",
        f"sqlite:///{ledger_file}",
        "--budgets",
        budgets,
        "--at",
        at,
        "--json",
    ]


def test_cli_budgets_json(tmp_path: Path, ledger_file: Path, capsys: Any) -> None:
    code = main(_budgets_json_args(tmp_path, ledger_file, "2026-11-11T00:00:00Z"))
    out = capsys.readouterr().out
    assert code == 0
    rows = {r.pop("budget"): r for r in json.loads(out)}
    assert rows == EXPECTED


def test_cli_budgets_table(
    tmp_path: Path, ledger_file: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_BUDGETS, str(_report_budgets(tmp_path)))
    monkeypatch.setenv("OTEL_TOKENS_LEDGER", f"sqlite:///{ledger_file}")
    assert main(["budgets", "--at", "2026-11-11T00:00:00Z"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "budget",
        "mode",
        "period",
        "spent",
        "limit",
        "remaining",
        "projected",
        "unit",
    ]
    table = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert table["acme-usd"] == ["enforce", "2026-11", "0.03135", "0.01", "-0.02135", "0.09405",
                                 "USD"]  # fmt: skip
    assert table["acme-tokens"] == ["observe", "2026-11", "14000", "50000", "36000", "42000",
                                    "tokens"]  # fmt: skip
    assert table["globex-pool"] == ["observe", "pool", "300", "5000", "4700", "-", "tokens"]


def test_cli_budgets_errors(tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_BUDGETS, raising=False)
    assert main(["budgets", "--ledger", f"sqlite:///{tmp_path / 'l.db'}"]) == 4
    assert "give --budgets FILE or set OTEL_TOKENS_BUDGETS" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("budgets: [{name: x, limit: 5, unit: dollars}]")
    assert main(["budgets", "--budgets", str(bad), "--ledger", "sqlite:///x.db"]) == 4
    err = capsys.readouterr().err
    assert "bad.yaml[0]: budget 'x': unit must be a currency or 'tokens'" in err
    good = _report_budgets(tmp_path)
    assert main(["budgets", "--budgets", str(good), "--ledger", "mysql://nope"]) == 4
    assert "unsupported ledger URL" in capsys.readouterr().err


def test_cli_budgets_command_line(tmp_path: Path, ledger_file: Path) -> None:
    """The installed ``otel-tokens`` command, as an operator runs it."""
    exe = Path(sys.executable).with_name("otel-tokens")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "otel_tokens.cli"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_TOKENS_")}
    done = run(
        [*command, *_budgets_json_args(tmp_path, ledger_file, "2026-11-11T00:00:00+00:00")],
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert {r.pop("budget"): r for r in json.loads(done.stdout)} == EXPECTED


# --- balances start from the ledger -------------------------------------------------------------
def _ledger_budgets(tmp_path: Path, name: str) -> Budget:
    (budget,) = [b for b in load_budgets(_report_budgets(tmp_path)) if b.name == name]
    return dataclasses.replace(budget, mode="enforce")


def test_a_new_process_starts_a_pool_from_the_ledger(tmp_path: Path, ledger_file: Path) -> None:
    """A new memory store (each new process) used to hold every pool full again, so calls
    the pool could not pay for any more were sent ("816 used of 800")."""
    pool_budget = _ledger_budgets(tmp_path, "globex-pool")
    m = manager(pool_budget, ledger=f"sqlite:///{ledger_file}")
    # The ledger: 400 then 600 tokens, drawn on the 700 top-up (expired now) first: 300 of
    # the 5,000 top-up are used, 4,700 remain.
    with pytest.raises(BudgetExceeded) as info:
        preflight(m, n_in=4_000, max_out=701, tenant="globex")
    assert info.value.available == 4_700
    assert remaining(m, pool_budget) == 4_700
    reservation = preflight(m, n_in=4_000, max_out=700, tenant="globex")
    assert reservation is not None and reservation.plan == [[4_700]]


def test_a_period_budget_starts_from_the_ledger_and_a_held_account_is_kept(
    tmp_path: Path, ledger_file: Path
) -> None:
    monthly = tokens("acme-tokens", limit=20_000, scope={"tenant": "acme"})
    url = f"sqlite:///{ledger_file}"
    m = manager(monthly, ledger=url)
    with pytest.raises(BudgetExceeded) as info:  # the ledger: 14,000 of November's tokens
        preflight(m, n_in=5_000, max_out=1_001)
    assert info.value.available == 6_000
    # A store that already holds the account (another process's Redis, this process) is
    # the live balance: the ledger, which lags it, never overwrites it.
    store = MemoryStore()
    store.add([("acme-tokens:2026-11", 100)])
    held = manager(monthly, store=store, ledger=url)
    assert preflight(held, n_in=10_000, max_out=9_900) is not None
    assert store.used(["acme-tokens:2026-11"]) == [20_000]


def test_currency_budgets_start_from_the_ledger_in_nano_units(
    tmp_path: Path, ledger_file: Path
) -> None:
    usd = _ledger_budgets(tmp_path, "acme-usd")
    m = manager(usd, ledger=f"sqlite:///{ledger_file}")
    assert used(m, usd) == 0  # nothing read before the first call
    with pytest.raises(BudgetExceeded):
        preflight(m, n_in=1, max_out=1)
    assert used(m, usd) == _nano(D("0.03135"))  # billed USD in November, exactly


def test_a_new_redis_starts_from_the_ledger(
    tmp_path: Path, ledger_file: Path, redis_prefix: str
) -> None:
    pool_budget = _ledger_budgets(tmp_path, "globex-pool")
    first = manager(
        pool_budget,
        store=RedisStore(REDIS_URL, prefix=redis_prefix),
        ledger=f"sqlite:///{ledger_file}",
    )
    settle(preflight(first, n_in=100, max_out=0, tenant="globex"), TokenUsage(input=100))
    assert remaining(first, pool_budget) == 4_600
    # A second process on the same Redis: the store holds the account, the ledger (which
    # does not have the 100 yet) changes nothing.
    second = manager(
        pool_budget,
        store=RedisStore(REDIS_URL, prefix=redis_prefix),
        ledger=f"sqlite:///{ledger_file}",
    )
    assert preflight(second, n_in=1, max_out=0, tenant="globex") is not None
    assert remaining(second, pool_budget) == 4_599


def test_an_unreadable_ledger_is_logged_and_budgets_count_from_the_store(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    not_a_db = tmp_path / "ledger.db"
    not_a_db.write_text("not sqlite")
    m = manager(tokens(limit=1_000), ledger=f"sqlite:///{not_a_db}")
    with caplog.at_level(logging.WARNING, logger="otel_tokens.budgets"):
        assert preflight(m, n_in=10, max_out=10) is not None
        assert preflight(m, n_in=10, max_out=10) is not None
    assert caplog.text.count("cannot read the ledger") == 1


def test_manager_from_env_reads_the_ledger_of_otel_tokens_ledger(
    tmp_path: Path, ledger_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "b.yaml"
    config.write_text(
        "budgets:\n  - {name: acme-tokens, scope: {tenant: acme}, limit: 20000, unit: tokens,"
        " mode: enforce}\n"
    )
    monkeypatch.setenv(ENV_BUDGETS, str(config))
    monkeypatch.delenv(ENV_BUDGET_STORE, raising=False)
    monkeypatch.setenv("OTEL_TOKENS_LEDGER", f"sqlite:///{ledger_file}")
    m = BudgetManager.from_env(catalog=CATALOG, clock=Clock())
    assert m is not None
    with pytest.raises(BudgetExceeded):
        preflight(m, n_in=5_000, max_out=1_001)
