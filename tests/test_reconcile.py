"""``otel-tokens reconcile`` against a local server speaking OpenAI's organisation Usage and
Costs APIs and Anthropic's Admin API usage and cost reports (``UsageReportServer``), with
hand-made ledgers (SQLite and PostgreSQL) whose drift is known."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from otel_tokens import cli
from otel_tokens.ledger import open_ledger
from otel_tokens.records import CostRecord
from otel_tokens_fakes import UsageReportServer

KEY = "sk-admin-reconcile"
DAY1 = datetime(2026, 3, 1, tzinfo=UTC)
GPT = "gpt-4o-2024-08-06"
CLAUDE = "claude-sonnet-4-5-20250929"


def rec(day: int, bucket: str, quantity: int, cost: str | None, **kw: Any) -> CostRecord:
    """A usage record of an hour of DAY1 + ``day`` (cost None: unpriced)."""
    start = DAY1 + timedelta(days=day, hours=10)
    values: dict[str, Any] = {
        "stream_id": kw.pop("stream", "s1"),
        "period_start": start,
        "period_end": start + timedelta(hours=1),
        "provider": "openai",
        "model": GPT,
        "bucket": bucket,
        "quantity": quantity,
        "currency": "USD",
        "catalog_version": "test",
        "pricing_status": "priced" if cost is not None else "unpriced",
        "billed_cost": None if cost is None else Decimal(cost),
        "list_cost": None if cost is None else Decimal(cost),
    }
    values.update(kw)
    return CostRecord(**values)


# One day of gpt-4o: 1000 uncached input ($2.50/M), 200 cached ($1.25/M), 300 output of which
# 100 reasoning ($10/M): $0.0025 + $0.00025 + $0.002 + $0.001 = $0.00575.
OPENAI_LEDGER = [
    rec(0, "input", 1000, "0.0025"),
    rec(0, "cache_read", 200, "0.00025"),
    rec(0, "output", 200, "0.002"),
    rec(0, "reasoning", 100, "0.001"),
]


def openai_usage(input_tokens: int = 1200, output: int = 300) -> list[dict[str, Any]]:
    # The provider's view, split over two projects and two keys (summed when compared).
    return [
        {
            "model": GPT,
            "project_id": "proj_a",
            "api_key_id": "key_a",
            "input_tokens": input_tokens - 500,
            "input_cached_tokens": 200,
            "output_tokens": output - 100,
            "input_audio_tokens": 0,
            "output_audio_tokens": 0,
            "num_model_requests": 2,
        },
        {
            "model": GPT,
            "project_id": "proj_b",
            "api_key_id": "key_b",
            "input_tokens": 500,
            "input_cached_tokens": 0,
            "output_tokens": 100,
            "num_model_requests": 1,
        },
    ]


def openai_costs(*values: float) -> list[dict[str, Any]]:
    items = (
        "gpt-4o-2024-08-06, input",
        "gpt-4o-2024-08-06, cached input",
        "gpt-4o-2024-08-06, output",
    )
    return [
        {"project_id": "proj_a", "line_item": item, "amount": {"value": v, "currency": "usd"}}
        for item, v in zip(items, values, strict=False)
    ]


@pytest.fixture
def server() -> Iterator[UsageReportServer]:
    with UsageReportServer(admin_key=KEY) as s:
        yield s


def make_ledger(url: str, records: list[CostRecord]) -> str:
    ledger = open_ledger(url)
    try:
        with ledger.transaction() as tx:
            tx.insert(records)
    finally:
        ledger.close()
    return url


def run(
    capsys: pytest.CaptureFixture[str], *args: str, provider: str = "openai"
) -> tuple[int, str, str]:
    argv = ["reconcile", "--provider", provider, *args]
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def api(server: UsageReportServer, ledger: str, *more: str) -> tuple[str, ...]:
    return (
        "--ledger", ledger, "--base-url", server.url, "--admin-key", KEY,
        "--since", "2026-03-01", "--until", "2026-03-01", *more,
    )  # fmt: skip


def drift_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


# --- OpenAI ------------------------------------------------------------------------------


def test_exact_match_exits_0(
    server: UsageReportServer, ledger_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    server.openai_usage["2026-03-01"] = openai_usage()
    server.openai_costs["2026-03-01"] = openai_costs(0.0025, 0.00025, 0.003)
    ledger = make_ledger(ledger_url, OPENAI_LEDGER)
    out_csv = tmp_path / "drift.csv"
    code, out, err = run(capsys, *api(server, ledger, "--output", str(out_csv)))
    assert code == 0, err
    assert "agrees with the provider within 1%" in out
    rows = drift_rows(out_csv)
    # input, cache_read, output (reasoning folded in: the Usage API counts it as output), cost
    got = {(r["x_Measure"], r["x_TokenBucket"]): r for r in rows}
    assert set(got) == {("tokens", "input"), ("tokens", "cache_read"), ("tokens", "output"),
                        ("cost", "")}  # fmt: skip
    assert got[("tokens", "output")]["x_LedgerValue"] == "300"
    assert got[("tokens", "input")]["ConsumedQuantity"] == "1000"
    cost = got[("cost", "")]
    assert (cost["BilledCost"], cost["x_LedgerValue"], cost["x_Drift"]) == (
        "0.00575",
        "0.00575",
        "0",
    )
    assert cost["BillingCurrency"] == "USD" and cost["ProviderName"] == "OpenAI"
    assert cost["ChargePeriodStart"] == "2026-03-01T00:00:00Z"
    assert cost["ChargePeriodEnd"] == "2026-03-02T00:00:00Z"
    assert {r["x_Cause"] for r in rows} == {"agree"}
    assert {r["x_ExceedsThreshold"] for r in rows} == {"false"}
    # What was asked of the API: daily buckets grouped by model, project and key.
    usage = next(q for q in server.seen if q.path.endswith("/usage/completions"))
    assert usage.query["bucket_width"] == ["1d"]
    assert usage.query["group_by"] == ["model", "project_id", "api_key_id"]
    assert usage.query["start_time"] == [str(int(DAY1.timestamp()))]
    assert usage.query["end_time"] == [str(int((DAY1 + timedelta(days=1)).timestamp()))]
    assert usage.headers["authorization"] == f"Bearer {KEY}"


def test_lost_telemetry(
    server: UsageReportServer, ledger_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # The provider saw a call of 300 input and 50 output tokens the ledger never got.
    server.openai_usage["2026-03-01"] = openai_usage(input_tokens=1500, output=350)
    server.openai_costs["2026-03-01"] = openai_costs(0.00325, 0.00025, 0.0035)
    ledger = make_ledger(ledger_url, OPENAI_LEDGER)
    out_csv = tmp_path / "drift.csv"
    code, out, _ = run(capsys, *api(server, ledger, "--output", str(out_csv)))
    assert code == 6
    got = {(r["x_Measure"], r["x_TokenBucket"]): r for r in drift_rows(out_csv)}
    assert got[("tokens", "input")]["x_Drift"] == "-300"
    assert got[("tokens", "input")]["x_DriftPercent"] == "-23.0769"
    assert got[("tokens", "input")]["x_Cause"] == "ledger_below_provider"
    assert got[("tokens", "cache_read")]["x_Cause"] == "agree"
    assert got[("tokens", "output")]["x_Cause"] == "ledger_below_provider"
    # The cost drift is explained by the missing tokens, not by a price.
    assert got[("cost", "")]["x_Drift"] == "-0.00125"
    assert got[("cost", "")]["x_Cause"] == "ledger_below_provider"
    assert "telemetry lost" in got[("cost", "")]["x_CauseDetail"]
    assert "3 of 4 compared figures drift more than 1%" in out
    assert "2026-03-01 gpt-4o-2024-08-06 input: ledger 1000, provider 1300" in out


def test_price_difference(
    server: UsageReportServer, ledger_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Same tokens; the provider billed output at $12/M where our catalog said $10/M.
    server.openai_usage["2026-03-01"] = openai_usage()
    server.openai_costs["2026-03-01"] = openai_costs(0.0025, 0.00025, 0.0036)
    ledger = make_ledger(ledger_url, OPENAI_LEDGER)
    out_csv = tmp_path / "drift.csv"
    code, out, _ = run(capsys, *api(server, ledger, "--output", str(out_csv)))
    assert code == 6
    rows = drift_rows(out_csv)
    bad = [r for r in rows if r["x_ExceedsThreshold"] == "true"]
    assert [(r["x_Measure"], r["x_Cause"]) for r in bad] == [("cost", "price_difference")]
    assert bad[0]["x_Drift"] == "-0.0006"
    assert "a price difference" in out


def test_over_count(
    server: UsageReportServer, ledger_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # The ledger has the output twice (a second stream: double instrumentation, or counts
    # inflated): ledger above provider.
    server.openai_usage["2026-03-01"] = openai_usage()
    server.openai_costs["2026-03-01"] = openai_costs(0.0025, 0.00025, 0.003)
    ledger = make_ledger(ledger_url, [*OPENAI_LEDGER, rec(0, "output", 200, "0.002", stream="s2")])
    code, out, _ = run(capsys, *api(server, ledger))
    assert code == 6
    assert "output: ledger 500, provider 300, drift 200 (66.6667%): ledger above provider" in out
    assert "double counting" in out


def test_modalities_compared_as_the_usage_api_sums_them(
    server: UsageReportServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The Usage API's input_tokens count audio, image and cache-write input too, and its
    # output_tokens audio and image output: our finer buckets fold into them.
    records = [
        *OPENAI_LEDGER,
        rec(0, "input_audio", 50, "0.0002"),
        rec(0, "cache_write_5m", 30, "0.0001"),
        rec(0, "output_audio", 20, "0.0004"),
    ]
    ledger = make_ledger(f"sqlite:///{tmp_path / 'l.db'}", records)
    usage = openai_usage(input_tokens=1280, output=320)
    usage[0]["input_audio_tokens"] = 50  # a finer field, part of input_tokens: not added
    usage[0]["output_audio_tokens"] = 20
    server.openai_usage["2026-03-01"] = usage
    code, out, _ = run(capsys, *api(server, ledger, "--no-costs"))
    assert code == 0, out
    assert "(3 figures compared)" in out


def test_drift_under_threshold_passes(
    server: UsageReportServer, ledger_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    server.openai_usage["2026-03-01"] = openai_usage(input_tokens=1205)  # 0.5% more input
    ledger = make_ledger(ledger_url, OPENAI_LEDGER)
    code, out, _ = run(capsys, *api(server, ledger, "--no-costs"))
    assert code == 0, out
    assert "tokens only" in out
    code, out, _ = run(capsys, *api(server, ledger, "--no-costs", "--threshold", "0.1"))
    assert code == 6


def test_pagination_over_days(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with UsageReportServer(admin_key=KEY, page_size=2) as server:
        for day in range(5):
            server.openai_usage[(DAY1 + timedelta(days=day)).date().isoformat()] = openai_usage()
        ledger = make_ledger(
            f"sqlite:///{tmp_path / 'l.db'}",
            [rec(d, b, q, c) for d in range(5) for b, q, c in (
                ("input", 1000, "0.0025"), ("cache_read", 200, "0.00025"),
                ("output", 300, "0.003"))],
        )  # fmt: skip
        args = ["--ledger", ledger, "--base-url", server.url, "--admin-key", KEY]
        args += ["--since", "2026-03-01", "--until", "2026-03-05", "--no-costs"]
        code, out, err = run(capsys, *args)
        assert code == 0, out + err
        assert "(15 figures compared)" in out
        pages = [q for q in server.seen if q.path.endswith("/usage/completions")]
        assert len(pages) == 3  # 2 + 2 + 1 days
        assert "page" not in pages[0].query and all("page" in q.query for q in pages[1:])
        # A day missing from the ledger is found on the last page too.
        server.openai_usage["2026-03-05"] = openai_usage(input_tokens=2200)
        code, out, _ = run(capsys, *args)
        assert code == 6
        assert "2026-03-05 gpt-4o-2024-08-06 input: ledger 1000, provider 2000" in out


def test_report_from_exported_files(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    start = int(DAY1.timestamp())

    def page(results: list[dict[str, Any]], **more: Any) -> dict[str, Any]:
        bucket = {"object": "bucket", "start_time": start, "end_time": start + 86400}
        return {"object": "page", "data": [{**bucket, "results": results}], **more}

    usage = tmp_path / "usage.json"
    usage.write_text(json.dumps([page(openai_usage(), has_more=True, next_page="x"), page([])]))
    costs = tmp_path / "costs.json"
    costs.write_text(json.dumps(page(openai_costs(0.0025, 0.00025, 0.003))))
    ledger = make_ledger(f"sqlite:///{tmp_path / 'l.db'}", OPENAI_LEDGER)
    args = ["--ledger", ledger, "--since", "2026-03-01", "--until", "2026-03-01"]
    code, out, err = run(capsys, *args, "--report", str(usage), "--cost-report", str(costs))
    assert code == 0, out + err
    assert "(4 figures compared)" in out
    costs.write_text(
        '{"data": [{"start_time": 1772323200, "results": [{"amount": {"value": "x"}}]}]}'
    )
    code, _, err = run(capsys, *args, "--report", str(usage), "--cost-report", str(costs))
    assert code == 4
    assert "amount.value is not an amount: 'x'" in err


def test_unpriced_ledger_usage_is_never_cost_0(
    server: UsageReportServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.openai_usage["2026-03-01"] = openai_usage()
    server.openai_costs["2026-03-01"] = openai_costs(0.0025, 0.00025, 0.003)
    records = [*OPENAI_LEDGER[:3], rec(0, "reasoning", 100, None)]
    ledger = make_ledger(f"sqlite:///{tmp_path / 'l.db'}", records)
    code, out, _ = run(capsys, *api(server, ledger))
    assert code == 6
    assert "cost (all): ledger unpriced USD, provider 0.00575 USD" in out


# --- Anthropic ---------------------------------------------------------------------------


def arec(bucket: str, quantity: int, cost: str, **kw: Any) -> CostRecord:
    return rec(0, bucket, quantity, cost, provider="anthropic", model=CLAUDE, **kw)


# 2000 uncached input ($3/M), 1000 cache read ($0.30/M), 400 5-minute cache write
# ($3.75/M), 500 output incl. 100 thinking ($15/M), 2 web searches ($10/1000).
ANTHROPIC_LEDGER = [
    arec("input", 2000, "0.006"),
    arec("cache_read", 1000, "0.0003"),
    arec("cache_write_5m", 400, "0.0015"),
    arec("output", 400, "0.006"),
    arec("reasoning", 100, "0.0015"),
    arec("web_search", 2, "0.02"),
]


def anthropic_usage(uncached: int = 2000) -> list[dict[str, Any]]:
    return [
        {
            "model": CLAUDE,
            "workspace_id": "wrkspc_a",
            "api_key_id": "apikey_a",
            "service_tier": "standard",
            "context_window": "0-200k",
            "uncached_input_tokens": uncached,
            "cache_read_input_tokens": 1000,
            "cache_creation": {"ephemeral_5m_input_tokens": 400, "ephemeral_1h_input_tokens": 0},
            "output_tokens": 500,
            "server_tool_use": {"web_search_requests": 2},
        }
    ]


def anthropic_costs(output_cents: str = "0.75") -> list[dict[str, Any]]:
    def item(token_type: str | None, cents: str, cost_type: str = "tokens") -> dict[str, Any]:
        return {
            "currency": "USD",
            "amount": cents,
            "workspace_id": "wrkspc_a",
            "description": f"Claude Sonnet 4.5 Usage - {token_type or cost_type}",
            "cost_type": cost_type,
            "context_window": "0-200k" if token_type else None,
            "model": CLAUDE if token_type else None,
            "service_tier": "standard" if token_type else None,
            "token_type": token_type,
        }

    return [
        item("uncached_input_tokens", "0.6"),
        item("cache_read_input_tokens", "0.03"),
        item("cache_creation.ephemeral_5m_input_tokens", "0.15"),
        item("output_tokens", output_cents),
        item(None, "2", cost_type="web_search"),
    ]


def test_anthropic_exact_match(
    server: UsageReportServer, ledger_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    server.anthropic_usage["2026-03-01"] = anthropic_usage()
    server.anthropic_costs["2026-03-01"] = anthropic_costs()
    ledger = make_ledger(ledger_url, ANTHROPIC_LEDGER)
    out_csv = tmp_path / "drift.csv"
    code, out, err = run(
        capsys, *api(server, ledger, "--output", str(out_csv)), provider="anthropic"
    )
    assert code == 0, out + err
    rows = drift_rows(out_csv)
    got = {(r["x_Measure"], r["x_TokenBucket"], r["x_CostCovers"]): r for r in rows}
    assert set(got) == {
        ("tokens", "input", ""), ("tokens", "cache_read", ""), ("tokens", "cache_write_5m", ""),
        ("tokens", "output", ""), ("requests", "web_search", ""),
        ("cost", "", "tokens"), ("cost", "", "requests"),
    }  # fmt: skip
    # Cents in the report, dollars in the drift report: token costs per model, and the web
    # searches (no model in the cost report) on their own.
    assert got[("cost", "", "tokens")]["BilledCost"] == "0.0153"
    assert got[("cost", "", "tokens")]["x_Model"] == CLAUDE
    assert got[("cost", "", "requests")]["BilledCost"] == "0.02"
    assert got[("requests", "web_search", "")]["ConsumedUnit"] == "Requests"
    usage = next(q for q in server.seen if q.path.endswith("/usage_report/messages"))
    assert usage.query["group_by[]"] == ["model", "workspace_id", "api_key_id"]
    assert usage.query["starting_at"] == ["2026-03-01T00:00:00Z"]
    assert usage.headers["x-api-key"] == KEY
    cost = next(q for q in server.seen if q.path.endswith("/cost_report"))
    assert cost.query["group_by[]"] == ["workspace_id", "description"]


def test_anthropic_price_difference_and_lost_input(
    server: UsageReportServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.anthropic_usage["2026-03-01"] = anthropic_usage(uncached=2100)
    server.anthropic_costs["2026-03-01"] = anthropic_costs(output_cents="0.9")
    ledger = make_ledger(f"sqlite:///{tmp_path / 'l.db'}", ANTHROPIC_LEDGER)
    out_csv = tmp_path / "drift.csv"
    code, _, _ = run(capsys, *api(server, ledger, "--output", str(out_csv)), provider="anthropic")
    assert code == 6
    bad = {
        (r["x_Measure"], r["x_TokenBucket"]): r["x_Cause"]
        for r in drift_rows(out_csv)
        if r["x_ExceedsThreshold"] == "true"
    }
    # The model's token cost differs, and its tokens do too: the missing 100 input tokens
    # explain $0.0003 of the $0.0015 (at the ledger's $3/M); the rest is the output price.
    assert bad == {
        ("tokens", "input"): "ledger_below_provider",
        ("cost", ""): "ledger_below_provider+price_difference",
    }
    # Only the input missing, at our prices: no price difference.
    server.anthropic_costs["2026-03-01"] = [
        {**c, "amount": "0.63"} if c["token_type"] == "uncached_input_tokens" else c
        for c in anthropic_costs()
    ]
    code, out, _ = run(capsys, *api(server, ledger, "--output", str(out_csv)), provider="anthropic")
    assert code == 6
    causes = {
        r["x_Measure"]: r["x_Cause"]
        for r in drift_rows(out_csv)
        if r["x_ExceedsThreshold"] == "true"
    }
    assert causes == {"tokens": "ledger_below_provider", "cost": "ledger_below_provider"}
    assert "price" not in out


def test_anthropic_scope_tag_compares_per_workspace(
    server: UsageReportServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.anthropic_usage["2026-03-01"] = anthropic_usage()
    ledger = make_ledger(f"sqlite:///{tmp_path / 'l.db'}", ANTHROPIC_LEDGER)
    args = (*api(server, ledger, "--no-costs", "--scope-tag", "workspace"),)
    code, out, _ = run(capsys, *args, provider="anthropic")
    # Our records carry no workspace tag: all of it is in another scope than the report's.
    assert code == 6
    assert "2026-03-01 claude-sonnet-4-5-20250929 wrkspc_a input: ledger 0, provider 2000" in out
    tagged = [
        arec(r.bucket, r.quantity, str(r.billed_cost), tags={"workspace": "wrkspc_a"})
        for r in ANTHROPIC_LEDGER
    ]
    ledger = make_ledger(f"sqlite:///{tmp_path / 'tagged.db'}", tagged)
    code, out, _ = run(capsys, *api(server, ledger, "--no-costs", "--scope-tag", "workspace"),
                       provider="anthropic")  # fmt: skip
    assert code == 0, out


# --- bad input ---------------------------------------------------------------------------


def test_unauthorized_is_a_clear_error(
    server: UsageReportServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = make_ledger(f"sqlite:///{tmp_path / 'l.db'}", OPENAI_LEDGER)
    args = ["--ledger", ledger, "--base-url", server.url, "--since", "2026-03-01"]
    args += ["--until", "2026-03-01", "--admin-key", "sk-not-admin"]
    code, out, err = run(capsys, *args)
    assert (code, out) == (4, "")
    assert "HTTP 401" in err and "Incorrect API key provided" in err and "admin key" in err
    code, _, err = run(capsys, *args, provider="anthropic")
    assert code == 4 and "HTTP 401" in err and "invalid x-api-key" in err


def test_missing_key(
    server: UsageReportServer, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.delenv("OPENAI_ADMIN_KEY", raising=False)
    ledger = make_ledger(f"sqlite:///{tmp_path / 'l.db'}", OPENAI_LEDGER)
    args = ["--ledger", ledger, "--base-url", server.url, "--since", "2026-03-01"]
    args += ["--until", "2026-03-01"]
    code, _, err = run(capsys, *args)
    assert code == 4 and "give --admin-key or set OPENAI_ADMIN_KEY" in err
    monkeypatch.setenv("OPENAI_ADMIN_KEY", KEY)
    server.openai_usage["2026-03-01"] = openai_usage()
    code, _, err = run(capsys, *args, "--no-costs")
    assert code == 0, err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "2026-13-01", "--until", "2026-03-02"], "not an ISO 8601 instant or date"),
        (["--since", "2026-03-02", "--until", "2026-03-01"], "--since must be before --until"),
        (["--since", "2026-03-01T12:00:00Z", "--until", "2026-03-02"], "must be a UTC date"),
        (["--since", "2026-03-01", "--until", "2026-03-02", "--threshold", "-1"], "percentage"),
        (["--since", "2026-03-01", "--until", "2026-03-02", "--cost-report", "x.json"],
         "--cost-report needs --report"),
    ],
)  # fmt: skip
def test_bad_options_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, *args)
    assert code == 2
    assert message in err


def test_unknown_provider_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--since", "2026-03-01", "--until", "2026-03-01", provider="gemini")
    assert code == 2
    assert "invalid choice: 'gemini'" in err


def test_no_ledger_and_unreadable_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--since", "2026-03-01", "--until", "2026-03-01"]
    code, _, err = run(capsys, "--ledger", f"sqlite:///{tmp_path / 'none.db'}", *args)
    assert code == 4 and "no ledger at" in err
    assert not (tmp_path / "none.db").exists()
    ledger = make_ledger(f"sqlite:///{tmp_path / 'l.db'}", OPENAI_LEDGER)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, _, err = run(capsys, "--ledger", ledger, *args, "--report", str(bad))
    assert code == 4 and "not JSON" in err
    bad.write_text('{"data": [{"start_time": 1772323200, "results": [{"model": "m", '
                   '"input_tokens": -5}]}]}')  # fmt: skip
    code, _, err = run(capsys, "--ledger", ledger, *args, "--report", str(bad))
    assert code == 4 and "input_tokens is not a token count: -5" in err
    code, _, err = run(capsys, "--ledger", ledger, *args, "--base-url", "http://127.0.0.1:9",
                       "--admin-key", KEY)  # fmt: skip
    assert code == 4 and "cannot reach" in err


def test_installed_command_exit_code(server: UsageReportServer, tmp_path: Path) -> None:
    """The console script as a scheduled job runs it: exit 6 on drift, the CSV written."""
    server.openai_usage["2026-03-01"] = openai_usage(input_tokens=1500)
    ledger = make_ledger(f"sqlite:///{tmp_path / 'l.db'}", OPENAI_LEDGER)
    out_csv = tmp_path / "drift.csv"
    done = subprocess.run(
        [str(Path(sys.executable).parent / "otel-tokens"), "reconcile", "--provider", "openai",
         *api(server, ledger, "--no-costs", "--output", str(out_csv))],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 6, done.stderr
    assert "ledger_below_provider" in out_csv.read_text(encoding="utf-8")


def test_documented_options_and_exit_codes() -> None:
    """docs/reconcile.md lists every option of the command, and its exit codes are the
    command's."""
    from otel_tokens import _arguments

    doc = (Path(__file__).resolve().parents[1] / "docs" / "reconcile.md").read_text("utf-8")
    parser = cli._parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    options = {
        o
        for a in sub.choices["reconcile"]._actions  # type: ignore[union-attr]
        for o in a.option_strings
        if o.startswith("--") and o != "--help"
    }
    cells = [line.split(" | ")[0] for line in doc.splitlines() if line.startswith("| `--")]
    documented = {o for cell in cells for o in re.findall(r"`(--[a-z-]+)", cell)}
    assert documented == options
    codes = dict(re.findall(r"^\| `(\d)` \| (\S+)", doc, re.M))
    assert set(codes) == {
        "0",
        str(_arguments.EXIT_DRIFT),
        str(_arguments.EXIT_BAD_INPUT),
        str(_arguments.EXIT_USAGE),
    }


def test_currency_mismatch(
    server: UsageReportServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.openai_usage["2026-03-01"] = openai_usage()
    server.openai_costs["2026-03-01"] = openai_costs(0.0025, 0.00025, 0.003)
    records = [
        rec(0, r.bucket, r.quantity, str(r.billed_cost), currency="EUR") for r in OPENAI_LEDGER
    ]
    ledger = make_ledger(f"sqlite:///{tmp_path / 'l.db'}", records)
    out_csv = tmp_path / "drift.csv"
    code, out, _ = run(capsys, *api(server, ledger, "--output", str(out_csv)))
    assert code == 6
    cost = next(r for r in drift_rows(out_csv) if r["x_Measure"] == "cost")
    assert (cost["x_Cause"], cost["BillingCurrency"]) == ("currency_mismatch", "EUR/USD")
    assert "the ledger's currency is not the provider's" in out
