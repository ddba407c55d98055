"""Forecasts (``report --forecast``, ``budgets --forecast``) over hand-made ledgers of known
history, SQLite and PostgreSQL: the projection arithmetic and the backtest error, exactly.

The main ledger: tenant acme, March 2026 (March 1 is a Sunday), one record a day at noon:
10.5 USD and 10,500 tokens on weekdays, 2.25 USD and 2,250 tokens on Saturdays and Sundays,
from March 1 to March 28, and 1.125 USD / 1,125 tokens in the morning of Sunday March 29.
The cut-off is March 29, 12:00 UTC.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from otel_tokens import cli
from otel_tokens.budgets import Budget, TopUp, budget_forecast
from otel_tokens.ledger import open_ledger
from otel_tokens.records import CostRecord
from otel_tokens.reporting import (
    ForecastMethod,
    backtest,
    build_forecast,
    daily_totals,
    fit,
    forecast,
)

AT = datetime(2026, 3, 29, 12, tzinfo=UTC)
MARCH = (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))


def rec(end: datetime, cost: str | None, tokens: int, **overrides: Any) -> CostRecord:
    values: dict[str, Any] = {
        "stream_id": f"s-{end.isoformat()}-{overrides.get('model', 'gpt-4o')}",
        "period_start": end - timedelta(minutes=1),
        "period_end": end,
        "provider": "openai",
        "model": "gpt-4o",
        "bucket": "input",
        "quantity": tokens,
        "currency": "USD",
        "catalog_version": "genai-prices@0.2.3",
        "pricing_status": "priced" if cost is not None else "unpriced",
        "price_id": "genai-prices:openai/gpt-4o" if cost is not None else None,
        "billed_cost": None if cost is None else Decimal(cost),
        "list_cost": None if cost is None else Decimal(cost),
        "tenant": "acme",
        "service_name": "chat-api",
    }
    values.update(overrides)
    return CostRecord(**values)


def march() -> list[CostRecord]:
    out = []
    for i in range(28):
        day = date(2026, 3, 1) + timedelta(days=i)
        weekend = day.weekday() >= 5
        noon = datetime(day.year, day.month, day.day, 12, 1, tzinfo=UTC)
        out.append(rec(noon, "2.25" if weekend else "10.5", 2250 if weekend else 10500))
    out.append(rec(datetime(2026, 3, 29, 6, tzinfo=UTC), "1.125", 1125))
    return out


def fill(url: str, records: list[CostRecord]) -> None:
    ledger = open_ledger(url)
    try:
        with ledger.transaction() as tx:
            assert len(tx.insert(records)) == len(records)
    finally:
        ledger.close()


def march_mape() -> Decimal:
    """The backtest by hand: cut-offs March 8 to 22 (at least 7 days of history, 7 days
    known after). From March 15 (14 days) the weekday means repeat the week exactly: no
    error. Before, the forecast is 7 x the mean of the n days since March 1 (a Sunday),
    against 57 recorded every week."""
    week = [Fraction(2.25)] + [Fraction(10.5)] * 5 + [Fraction(2.25)]  # Sunday first
    errors = []
    for n in range(7, 22):
        if n >= 14:
            errors.append(Fraction(0))
            continue
        history = sum(week[i % 7] for i in range(n))
        errors.append(abs(57 - 7 * history / n) / 57)
    value = sum(errors) / len(errors) * 100
    return Decimal(round(value * 100)) / 100


def test_hand_backtest_figure() -> None:
    # The absolute errors of n = 8..13 days: 5.15625 + 2.75 + 0.825 + 0.75 + 2.0625 + 3.1730...
    assert march_mape() == Decimal("1.72")


# --- the method -----------------------------------------------------------------------------


def test_seasonal_rates_projection_and_backtest() -> None:
    uses = [(r.period_end, r.billed_cost) for r in march() if r.billed_cost is not None]
    f = forecast(uses, AT, *MARCH, ForecastMethod())
    assert f.spent == Decimal("229.125")  # 4 x (5 x 10.5 + 2 x 2.25) + 1.125, exact
    assert f.rates is not None and f.rates.seasonal and f.rates.history_days == 28
    assert f.rates.by_weekday == (Decimal("10.5"),) * 5 + (Decimal("2.25"),) * 2
    # Half of Sunday 29 (1.125), Monday 30 and Tuesday 31 (10.5 each).
    assert f.expected_rest == Decimal("22.125")
    assert f.projected == Decimal("251.25")
    assert f.backtest.cutoffs == 15 and f.backtest.horizon_days == 7
    assert f.backtest.mape == march_mape() == Decimal("1.72")


def test_short_history_uses_the_plain_mean() -> None:
    daily = {date(2026, 3, 2) + timedelta(days=i): Decimal(i + 1) for i in range(5)}  # 1..5
    rates = fit(daily, date(2026, 3, 7), ForecastMethod())
    assert rates is not None and not rates.seasonal and rates.history_days == 5
    assert rates.by_weekday == (Decimal(3),) * 7
    assert fit(daily, date(2026, 3, 2), ForecastMethod()) is None  # no full day before


def test_backtest_error_of_a_step() -> None:
    """21 days of 10, then 7 days of 20: the forecast at day 21 says 70, 140 happened (50%);
    at day 20 it says 70, 10 + 6 x 20 = 130 happened (60/130)."""
    first = date(2026, 3, 1)
    daily = {first + timedelta(days=i): Decimal(10 if i < 21 else 20) for i in range(28)}
    until = first + timedelta(days=28)
    one = backtest(daily, until, ForecastMethod(backtest_cutoffs=1))
    assert (one.mape, one.cutoffs) == (Decimal("50.00"), 1)
    two = backtest(daily, until, ForecastMethod(backtest_cutoffs=2))
    # (1/2 + 6/13) / 2 = 0.480769... -> 48.08 %
    assert (two.mape, two.cutoffs) == (Decimal("48.08"), 2)
    # Adjustments (credits) can make a week negative: 70 forecast, -70 recorded, 200 % off.
    credit = {d: (v if v == 10 else Decimal(-10)) for d, v in daily.items()}
    assert backtest(credit, until, ForecastMethod(backtest_cutoffs=1)).mape == Decimal("200.00")
    # Nothing to score: fewer than 7 days before the only cut-off.
    assert backtest(daily, first + timedelta(days=13), ForecastMethod()).mape is None


def test_daily_totals_put_midnight_ends_in_the_day_before() -> None:
    totals = daily_totals(
        [
            (datetime(2026, 3, 2, tzinfo=UTC), Decimal("0.1")),
            (datetime(2026, 3, 2, 0, 0, 1, tzinfo=UTC), Decimal("0.2")),
        ]
    )
    assert totals == {date(2026, 3, 1): Decimal("0.1"), date(2026, 3, 2): Decimal("0.2")}


def test_runs_out_instant() -> None:
    rates = fit({date(2026, 3, 1): Decimal(24)}, date(2026, 3, 2), ForecastMethod())
    assert rates is not None  # 24 a day: 1 an hour
    start = datetime(2026, 3, 2, 6, tzinfo=UTC)
    assert rates.runs_out(start, Decimal(30), MARCH[1]) == datetime(2026, 3, 3, 12, tzinfo=UTC)
    assert rates.runs_out(start, Decimal(0), MARCH[1]) == start  # already exhausted
    assert rates.runs_out(start, Decimal(30), datetime(2026, 3, 3, tzinfo=UTC)) is None


def test_method_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="window_days"):
        ForecastMethod(window_days=0)


# --- report --forecast --------------------------------------------------------------------


def test_build_forecast_groups_and_keeps_unpriced_apart() -> None:
    records = [
        *march(),
        rec(datetime(2026, 3, 10, 9, tzinfo=UTC), None, 777, model="in-house"),
        rec(datetime(2026, 3, 30, tzinfo=UTC), "99", 99),  # after the cut-off: ignored
    ]
    report = build_forecast(records, ["model"], at=AT, period_start=MARCH[0], period_end=MARCH[1])
    by_model = {line.key: line for line in report.lines}
    gpt = by_model["gpt-4o",]
    assert gpt.cost.spent == Decimal("229.125") and gpt.cost.projected == Decimal("251.25")
    assert gpt.tokens.spent == 229125 and gpt.tokens.projected == 251250
    assert gpt.tokens.backtest.mape == Decimal("1.72")
    own = by_model["in-house",]
    assert own.unpriced_records == 1 and own.cost.spent == 0 and own.cost.projected is None
    assert own.tokens.spent == 777
    with pytest.raises(ValueError, match="cannot forecast by day"):
        build_forecast(records, ["day"], at=AT, period_start=MARCH[0], period_end=MARCH[1])


def test_report_forecast_command(
    ledger_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(ledger_url, march())
    argv = ["report", "--ledger", ledger_url, "--forecast", "--by", "tenant"]
    assert cli.main([*argv, "--until", "2026-03-29T12:00:00Z", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["period"] == {"start": "2026-03-01T00:00:00Z", "end": "2026-04-01T00:00:00Z"}
    assert out["method"].startswith("trailing 28-day window of UTC daily totals with day-of-week")
    assert out["rows"] == [
        {
            "tenant": "acme",
            "currency": "USD",
            "cost": {
                "spent": "229.125",
                "expected_rest": "22.125",
                "projected": "251.25",
                "history_days": 28,
                "seasonal": True,
                "backtest_mape_percent": "1.72",
                "backtest_cutoffs": 15,
            },
            "tokens": {
                "spent": "229125",
                "expected_rest": "22125",
                "projected": "251250",
                "history_days": 28,
                "seasonal": True,
                "backtest_mape_percent": "1.72",
                "backtest_cutoffs": 15,
            },
            "unpriced_records": 0,
        }
    ]
    assert cli.main([*argv, "--until", "2026-03-29T12:00:00Z"]) == 0
    table = capsys.readouterr().out
    assert "ESTIMATE" in table and "method: trailing 28-day window" in table
    assert "acme    USD       229.125  251.25" in table
    # A period given by hand: to the end of Monday.
    to_monday = ["--until", "2026-03-29T12:00:00Z", "--forecast-to", "2026-03-30"]
    assert cli.main([*argv, *to_monday, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"][0]["cost"]["projected"] == "240.75"


def test_report_forecast_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    fill(url, march())
    base = ["report", "--ledger", url, "--forecast", "--until", "2026-03-29T12:00:00Z"]
    assert cli.main([*base, "--by", "day"]) == 2
    assert "not by time" in capsys.readouterr().err
    assert cli.main([*base, "--format", "csv"]) == 2
    assert cli.main([*base, "--forecast-to", "2026-03-01"]) == 2
    assert cli.main(["report", "--ledger", url, "--forecast-to", "2026-04-01"]) == 2


# --- budgets --forecast ---------------------------------------------------------------------

BUDGETS = [
    Budget("acme-monthly", limit=Decimal(240), scope={"tenant": "acme"}),
    Budget("acme-daily", limit=Decimal(100), period="daily", scope={"tenant": "acme"}),
    Budget(
        "acme-pool",
        unit="tokens",
        period="pool",
        scope={"tenant": "acme"},
        top_ups=(TopUp(Decimal(260000), datetime(2026, 3, 1, tzinfo=UTC)),),
    ),
    Budget(
        "acme-expiring",
        unit="tokens",
        period="pool",
        scope={"tenant": "acme"},
        top_ups=(
            TopUp(
                Decimal(300000),
                datetime(2026, 3, 1, tzinfo=UTC),
                datetime(2026, 4, 1, tzinfo=UTC),
            ),
        ),
    ),
    Budget("globex", limit=Decimal(5), scope={"tenant": "globex"}),
]


def test_budget_forecast_runs_out() -> None:
    rows = {r.status.budget.name: r for r in budget_forecast(BUDGETS, march(), AT)}
    monthly = rows["acme-monthly"]
    assert monthly.status.spent == Decimal("229.125")  # exact
    assert monthly.projected == Decimal("251.25")
    # 10.875 left: half of Sunday takes 1.125, then 9.75 of Monday's 10.5 (80,228.57 s).
    assert monthly.runs_out == datetime(2026, 3, 30, 22, 17, 9, tzinfo=UTC)
    assert monthly.backtest.mape == Decimal("1.72")
    daily = rows["acme-daily"]
    assert daily.status.spent == Decimal("1.125") and daily.projected == Decimal("2.25")
    assert daily.runs_out is None  # not today
    # 30,875 tokens: 1,125 + 10,500 + 10,500, then 8,750 of Wednesday's 10,500 (20 h).
    pool = rows["acme-pool"]
    assert pool.projected is None
    assert pool.runs_out == datetime(2026, 4, 1, 20, tzinfo=UTC)
    assert rows["acme-expiring"].runs_out is None  # its credit expires first
    globex = rows["globex"]
    assert (globex.projected, globex.runs_out, globex.backtest.mape) == (None, None, None)


def test_budgets_forecast_command(
    ledger_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(ledger_url, march())
    config = tmp_path / "budgets.yaml"
    config.write_text(
        "budgets:\n"
        "  - {name: acme-monthly, scope: {tenant: acme}, limit: '240'}\n"
        "  - {name: acme-pool, scope: {tenant: acme}, unit: tokens, period: pool,\n"
        "     top_ups: [{amount: 260000, at: 2026-03-01}]}\n",
        encoding="utf-8",
    )
    argv = ["budgets", "--ledger", ledger_url, "--budgets", str(config), "--forecast"]
    assert cli.main([*argv, "--at", "2026-03-29T12:00:00Z", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "day-of-week seasonality" in out["method"]
    assert out["budgets"] == [
        {
            "budget": "acme-monthly",
            "unit": "USD",
            "mode": "observe",
            "window": "2026-03",
            "spent": "229.125",
            "limit": "240",
            "remaining": "10.875",
            "projected": "251.25",
            "runs_out": "2026-03-30T22:17:09Z",
            "history_days": 28,
            "backtest_mape_percent": "1.72",
            "backtest_cutoffs": 15,
        },
        {
            "budget": "acme-pool",
            "unit": "tokens",
            "mode": "observe",
            "window": "pool",
            "spent": "229125",
            "limit": "260000",
            "remaining": "30875",
            "projected": None,
            "runs_out": "2026-04-01T20:00:00Z",
            "history_days": 28,
            "backtest_mape_percent": "1.72",
            "backtest_cutoffs": 15,
        },
    ]
    assert cli.main([*argv, "--at", "2026-03-29T12:00:00Z"]) == 0
    table = capsys.readouterr().out
    assert "ESTIMATES" in table and "2026-03-30T22:17:09Z" in table and "1.72% (15)" in table
