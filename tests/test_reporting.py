"""``otel-tokens report`` and ``otel-tokens export`` over SQLite and PostgreSQL ledgers.

Ledgers are made by inserting CostRecords through ``ledger.transaction()``; outputs are checked
against semconv/schemas/cost-record.schema.json, and money is compared as exact Decimals.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from referencing import Registry, Resource

from otel_tokens import reporting
from otel_tokens.ledger import open_ledger
from otel_tokens.records import CostRecord
from otel_tokens.reporting._common import display_url
from otel_tokens.reporting._stripe import _stripe_timestamp

ROOT = Path(__file__).resolve().parents[1]
SCHEMA: dict[str, Any] = json.loads(
    (ROOT / "semconv" / "schemas" / "cost-record.schema.json").read_text(encoding="utf-8")
)
_REGISTRY: Registry[Any] = Registry().with_resource(SCHEMA["$id"], Resource.from_contents(SCHEMA))
RECORD_VALIDATOR = jsonschema.Draft202012Validator(
    SCHEMA, registry=_REGISTRY, format_checker=jsonschema.FormatChecker()
)
EVENT_VALIDATOR = jsonschema.Draft202012Validator(
    {"$ref": SCHEMA["$id"] + "#/$defs/CloudEvent"},
    registry=_REGISTRY,
    format_checker=jsonschema.FormatChecker(),
)
SHIM = (
    "import sys, argparse; from otel_tokens import reporting; "
    "p = argparse.ArgumentParser(prog='otel-tokens'); "
    "s = p.add_subparsers(dest='command', required=True); reporting.add_parsers(s); "
    "a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))"
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def rec(**overrides: Any) -> CostRecord:
    values: dict[str, Any] = {
        "stream_id": "stream-a",
        "period_start": T0,
        "period_end": at(1),
        "provider": "openai",
        "model": "gpt-4o",
        "bucket": "input",
        "quantity": 1000,
        "currency": "USD",
        "catalog_version": "genai-prices@0.2.3",
        "pricing_status": "priced",
        "price_id": "genai-prices:openai/gpt-4o",
        "billed_cost": Decimal("0.0025"),
        "list_cost": Decimal("0.0025"),
        "tenant": "acme",
        "service_name": "chat-api",
    }
    values.update(overrides)
    return CostRecord(**values)


def sample_records() -> list[CostRecord]:
    """Two days, two tenants and no tenant, two currencies, unpriced lines, a request bucket."""
    return [
        rec(stream_id="a", tags={"cost-center": "cc-7"}, feature="search", user_id="u1"),
        rec(stream_id="a", bucket="output", quantity=200, billed_cost=Decimal("0.002"),
            list_cost=Decimal("0.002"), feature="search", user_id="u1"),
        rec(stream_id="b", quantity=3, billed_cost=Decimal("0.0000081"),
            list_cost=Decimal("0.0000081"), processing="batch"),
        # Ends exactly at midnight: its usage is in March 1.
        rec(stream_id="c", period_start=datetime(2026, 3, 1, 23, 59, tzinfo=UTC),
            period_end=datetime(2026, 3, 2, tzinfo=UTC), tenant="globex",
            billed_cost=Decimal("0.0012"), list_cost=Decimal("0.0025")),
        rec(stream_id="d", period_start=datetime(2026, 3, 2, 8, tzinfo=UTC),
            period_end=datetime(2026, 3, 2, 8, 1, tzinfo=UTC), tenant="globex",
            provider="anthropic", model="claude-sonnet-4", currency="EUR",
            price_id="contract:anthropic/claude-sonnet-4", billed_cost=Decimal("0.0123456789"),
            list_cost=None, quantity=4115),
        rec(stream_id="e", period_start=datetime(2026, 3, 2, 9, tzinfo=UTC),
            period_end=datetime(2026, 3, 2, 9, 0, 30, tzinfo=UTC), bucket="web_search",
            quantity=2, billed_cost=Decimal("0.02"), list_cost=Decimal("0.02")),
        rec(stream_id="f", tenant=None, period_end=at(2), quantity=10,
            billed_cost=Decimal("0.000025"), list_cost=Decimal("0.000025")),
        rec(stream_id="g", model="in-house-llm", provider="custom", pricing_status="unpriced",
            price_id=None, billed_cost=None, list_cost=None, quantity=777, tenant="globex"),
        rec(stream_id="h", pricing_status="variant_unavailable", billed_cost=None,
            list_cost=None, quantity=55, processing="flex", period_end=at(3)),
    ]  # fmt: skip


def fill(url: str, records: Sequence[CostRecord]) -> None:
    ledger = open_ledger(url)
    try:
        with ledger.transaction() as tx:
            assert len(tx.insert(records)) == len(records)
    finally:
        ledger.close()


def ledger_records(url: str) -> list[CostRecord]:
    ledger = open_ledger(url)
    try:
        return list(ledger.records())
    finally:
        ledger.close()


@pytest.fixture
def sample_url(ledger_url: str) -> str:
    fill(ledger_url, sample_records())
    return ledger_url


@pytest.fixture
def sqlite_sample(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'sample.db'}"
    fill(url, sample_records())
    return url


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the commands in-process, as cli.py wires them: (exit code, stdout, stderr)."""
    parser = argparse.ArgumentParser(prog="otel-tokens")
    sub = parser.add_subparsers(dest="command", required=True)
    reporting.add_parsers(sub)
    try:
        args = parser.parse_args(list(argv))
        code = int(args.func(args))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def exact_sum(values: Sequence[Decimal | None]) -> Decimal:
    total = Decimal(0)
    for v in values:
        if v is not None:
            total = total.fma(1, v)  # fma is exact here, independent of the report's context
    return total


# --------------------------------------------------------------------------- report


def test_report_by_model_sums_exactly(sample_url: str) -> None:
    records = ledger_records(sample_url)
    report = reporting.build_report(records)
    assert report.by == ("model",)
    assert report.records == len(sample_records())
    usd = report.total("USD")
    eur = report.total("EUR")
    assert usd is not None and eur is not None
    priced_usd = [r for r in records if r.currency == "USD" and r.billed_cost is not None]
    assert usd.billed_cost == exact_sum([r.billed_cost for r in priced_usd])
    assert usd.billed_cost == Decimal("0.0257331")
    assert usd.list_cost == Decimal("0.0270331")
    assert usd.tokens == 1000 + 200 + 3 + 1000 + 10
    assert usd.requests == 2
    assert (usd.unpriced_records, usd.unpriced_tokens) == (2, 777 + 55)
    assert eur.billed_cost == Decimal("0.0123456789")
    assert eur.list_cost is None and eur.no_list_price == 1
    by_model = {(line.key, line.currency): line for line in report.lines}
    custom = by_model[("in-house-llm",), "USD"]
    assert custom.billed_cost is None and custom.list_cost is None  # never 0
    assert (custom.unpriced_records, custom.unpriced_tokens) == (1, 777)
    gpt = by_model[("gpt-4o",), "USD"]
    assert gpt.billed_cost == Decimal("0.0257331")
    assert gpt.unpriced_tokens == 55  # variant_unavailable: gpt-4o flex has no price


def test_report_json_and_csv_are_exact(sample_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "report", "--ledger", sample_url, "--format", "json")
    assert code == 0
    data = json.loads(out)
    totals = {t["currency"]: t for t in data["totals"]}
    assert totals["USD"]["billed_cost"] == "0.0257331"
    assert totals["EUR"]["billed_cost"] == "0.0123456789"
    assert totals["EUR"]["list_cost"] is None
    rows = {(r["model"], r["currency"]): r for r in data["rows"]}
    assert rows["in-house-llm", "USD"]["billed_cost"] is None
    assert rows["in-house-llm", "USD"]["unpriced_tokens"] == 777
    assert data["by"] == ["model"] and data["since"] is None

    code, out, _ = cli(
        capsys, "report", "--ledger", sample_url, "--by", "currency,tenant", "--format", "csv"
    )
    assert code == 0
    parsed = list(csv.DictReader(io.StringIO(out)))
    assert list(parsed[0])[:2] == ["currency", "tenant"]  # currency not repeated
    total = sum(
        Decimal(r["billed_cost"]) for r in parsed if r["currency"] == "USD" and r["billed_cost"]
    )
    assert total == Decimal("0.0257331")
    no_tenant = [r for r in parsed if r["tenant"] == ""]
    assert no_tenant and all(r["currency"] == "USD" for r in no_tenant)


def test_ten_thousand_small_amounts_sum_exactly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tiny = Decimal("0.0000001")
    records = [
        rec(stream_id=f"s{i}", quantity=1, billed_cost=tiny, list_cost=tiny, tenant=f"t{i % 7}")
        for i in range(10_000)
    ]
    assert sum(float(tiny) for _ in records) != 0.001  # what floats would have printed
    url = f"sqlite:///{tmp_path / 'tiny.db'}"
    fill(url, records)
    report = reporting.build_report(ledger_records(url), ["tenant"])
    total = report.total("USD")
    assert total is not None
    assert total.billed_cost == Decimal("0.001") and total.list_cost == Decimal("0.001")
    assert sum((line.billed_cost or Decimal(0) for line in report.lines), Decimal(0)) == Decimal(
        "0.001"
    )

    code, out, _ = cli(capsys, "report", "--ledger", url, "--format", "json")
    assert code == 0
    assert json.loads(out)["totals"] == [
        {
            "currency": "USD",
            "records": 10_000,
            "tokens": 10_000,
            "requests": 0,
            "billed_cost": "0.001",
            "list_cost": "0.001",
            "no_list_price_records": 0,
            "unpriced_records": 0,
            "unpriced_tokens": 0,
            "unpriced_requests": 0,
        }
    ]
    code, out, _ = cli(capsys, "report", "--ledger", url)
    assert code == 0 and " 0.001 " in out + " "

    # The FOCUS rows add up to the same exact total.
    target = tmp_path / "tiny.csv"
    code, _, _ = cli(
        capsys, "export", "--ledger", url, "--format", "focus", "--output", str(target)
    )
    assert code == 0
    with target.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 10_000
    assert sum((Decimal(r["BilledCost"]) for r in rows), Decimal(0)) == Decimal("0.001")

    # And the Stripe cost-micros values: 10,000 x 0.1 micro = 1,000 micros, none lost.
    code, out, _ = cli(
        capsys, "export", "--ledger", url, "--format", "stripe", "--stripe-value", "cost-micros"
    )
    assert code == 0
    per_customer: dict[str, int] = {}
    for line in out.splitlines():
        event = json.loads(line)
        customer = event["payload"]["stripe_customer_id"]
        per_customer[customer] = per_customer.get(customer, 0) + int(event["payload"]["value"])
    assert len(per_customer) == 7
    for i in range(7):  # t0..t3: 1429 records, 142.9 micros; t4..t6: 1428, 142.8
        assert per_customer[f"t{i}"] == 143


def test_table_shows_full_precision_and_unpriced_apart(
    sample_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, "report", "--ledger", sample_url, "--by", "model")
    assert code == 0 and err == ""
    assert "Cost by model" in out
    assert "0.0257331" in out and "0.0123456789" in out and "0.0270331" in out
    assert "unpriced tokens" in out and "requests" in out
    custom = next(line for line in out.splitlines() if "in-house-llm" in line)
    cells = custom.split()
    assert cells[:2] == ["in-house-llm", "USD"] and "777" in cells
    assert cells.count("-") == 2  # billed and list cost: no cost, never 0
    assert "0.0" not in custom
    totals = [line for line in out.splitlines() if line.strip().startswith("total")]
    assert len(totals) == 2  # one per currency
    assert "EUR" in totals[0] and "0.0123456789" in totals[0]
    assert "USD" in totals[1] and "0.0257331" in totals[1]
    assert "2 unpriced record(s)" in out
    assert "not in the cost totals" in out


def test_table_without_rich_is_plain_text(
    sqlite_sample: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    report = reporting.build_report(ledger_records(sqlite_sample), ["tenant", "day"])
    rich_text = reporting.format_table(report, sqlite_sample)
    for name in [m for m in sys.modules if m == "rich" or m.startswith("rich.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "rich", None)
    code, out, _ = cli(capsys, "report", "--ledger", sqlite_sample, "--by", "tenant,day")
    assert code == 0
    assert out.rstrip("\n") == reporting.format_table(report, sqlite_sample, plain=True)
    assert out.splitlines()[1].split() == [
        "tenant", "day", "currency", "records", "tokens", "requests", "billed", "cost",
        "list", "cost", "unpriced", "tokens",
    ]  # fmt: skip
    assert all(ord(c) < 128 for c in out)
    for amount in ("0.0123456789", "0.0257331", "0.0045081"):
        assert amount in rich_text and amount in out


def test_by_tenant_day(sqlite_sample: str) -> None:
    report = reporting.build_report(ledger_records(sqlite_sample), ["tenant", "day"])
    lines = {(line.key, line.currency): line for line in report.lines}
    assert sorted(lines, key=str) == sorted(
        [
            (("acme", "2026-03-01"), "USD"),
            (("acme", "2026-03-02"), "USD"),
            (("globex", "2026-03-01"), "USD"),
            (("globex", "2026-03-02"), "EUR"),
            ((None, "2026-03-01"), "USD"),
        ],
        key=str,
    )
    # The record ending exactly at 2026-03-02T00:00Z is in March 1.
    assert lines[("globex", "2026-03-01"), "USD"].billed_cost == Decimal("0.0012")
    assert lines[("globex", "2026-03-01"), "USD"].unpriced_tokens == 777
    assert lines[("acme", "2026-03-01"), "USD"].billed_cost == Decimal("0.0045081")
    assert lines[("acme", "2026-03-02"), "USD"].requests == 2
    assert report.lines[-1].key[0] is None  # no tenant sorts last


@pytest.mark.parametrize("key", list(reporting.GROUP_KEYS))
def test_every_key_groups_without_losing_money(key: str) -> None:
    records = sample_records()
    report = reporting.build_report(records, [key])
    for currency in ("USD", "EUR"):
        parts = [line.billed_cost for line in report.lines if line.currency == currency]
        total = report.total(currency)
        assert total is not None and exact_sum(parts) == total.billed_cost
    assert sum(line.records for line in report.lines) == len(records)
    labels = {line.key[0] for line in report.lines}
    expected = {
        "hour": {"2026-03-01T12:00Z", "2026-03-01T23:00Z", "2026-03-02T08:00Z",
                 "2026-03-02T09:00Z"},
        "month": {"2026-03"},
        "status": {"priced", "unpriced", "variant_unavailable"},
        "user": {"u1", None},
        "feature": {"search", None},
        "processing": {"standard", "batch", "flex"},
        "service": {"chat-api"},
    }  # fmt: skip
    if key in expected:
        assert labels == expected[key]


def test_unknown_key_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown report key"):
        reporting.build_report([], ["tenant", "colour"])


@pytest.mark.parametrize(
    ("since", "until", "streams"),
    [
        (None, None, "abcdefgh"),
        ("2026-03-02", None, "de"),  # the midnight record (c) is March 1's
        (None, "2026-03-01", "abcfgh"),  # a date --until takes its whole day
        ("2026-03-01T12:01:00Z", "2026-03-02T00:00:00Z", "cfh"),  # (since, until]
        ("2026-03-01T13:01:00+01:00", "2026-03-02T09:01:00+01:00", "cdfh"),  # offsets
        ("2026-03-02T08:01:00Z", "2026-03-02T09:00:30Z", "e"),
        ("2026-03-03", None, ""),
    ],
)
def test_since_until(sample_url: str, since: str | None, until: str | None, streams: str) -> None:
    args = argparse.Namespace(since=None, until=None)
    if since:
        args.since = reporting.parse_instant(since)
    if until:
        args.until = reporting.parse_instant(until, end_of_day=True)
    ledger = open_ledger(sample_url)
    try:
        got = list(ledger.records(args.since, args.until))
    finally:
        ledger.close()
    assert "".join(sorted({r.stream_id for r in got})) == streams
    report = reporting.build_report(got, ["tenant"], since=args.since, until=args.until)
    assert report.records == len(got)


def test_report_filters_through_the_cli(
    sqlite_sample: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(
        capsys,
        "report",
        "--ledger",
        sqlite_sample,
        "--format",
        "json",
        "--since",
        "2026-03-02",
        "--until",
        "2026-03-02",
    )
    assert code == 0
    data = json.loads(out)
    assert (data["since"], data["until"]) == ("2026-03-02T00:00:00Z", "2026-03-03T00:00:00Z")
    assert {t["currency"]: t["billed_cost"] for t in data["totals"]} == {
        "EUR": "0.0123456789",
        "USD": "0.02",
    }
    code, out, _ = cli(capsys, "report", "--ledger", sqlite_sample, "--since", "2026-03-02")
    assert "with ChargePeriodEnd in (2026-03-02T00:00:00Z, +inf]" in out


def test_parse_instant() -> None:
    assert reporting.parse_instant("2026-03-01") == datetime(2026, 3, 1, tzinfo=UTC)
    assert reporting.parse_instant("2026-03-01", end_of_day=True) == datetime(
        2026, 3, 2, tzinfo=UTC
    )
    assert reporting.parse_instant("2026-03-01T12:00:00+02:00") == datetime(
        2026, 3, 1, 10, tzinfo=UTC
    )
    assert reporting.parse_instant("2026-03-01T12:00:00.5Z", end_of_day=True) == datetime(
        2026, 3, 1, 12, 0, 0, 500_000, tzinfo=UTC
    )
    with pytest.raises(ValueError, match="no UTC offset"):
        reporting.parse_instant("2026-03-01T12:00:00")
    with pytest.raises(ValueError, match="not an ISO 8601"):
        reporting.parse_instant("last tuesday")


def test_empty_ledger(ledger_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    open_ledger(ledger_url).close()  # migrated, no records
    code, out, err = cli(capsys, "report", "--ledger", ledger_url)
    assert code == 0 and out == ""
    assert "no cost records in ledger" in err
    code, out, err = cli(capsys, "report", "--ledger", ledger_url, "--format", "json")
    assert code == 0 and json.loads(out)["rows"] == [] and "no cost records" in err
    code, out, err = cli(capsys, "export", "--ledger", ledger_url, "--format", "focus")
    assert code == 0
    assert out.splitlines() == [",".join(reporting.focus_columns())]
    assert "no cost records" in err and "wrote 0 FOCUS rows" in err


def test_missing_sqlite_ledger_is_an_error_and_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "nowhere.db"
    code, out, err = cli(capsys, "report", "--ledger", f"sqlite:///{path}")
    assert code == 4 and out == ""
    assert "no ledger at" in err and "--ledger" in err
    code, _, err = cli(capsys, "export", "--ledger", f"sqlite:///{path}", "--format", "focus")
    assert code == 4 and "no ledger at" in err
    assert not path.exists()


def test_default_ledger_from_environment(
    sqlite_sample: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TOKENS_LEDGER", sqlite_sample)
    code, out, _ = cli(capsys, "report", "--format", "json")
    assert code == 0 and json.loads(out)["ledger"] == sqlite_sample


def test_default_ledger_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OTEL_TOKENS_LEDGER", raising=False)
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys, "report")
    assert code == 4 and "otel-tokens-ledger.db" in err
    fill("sqlite:///otel-tokens-ledger.db", [rec()])
    code, out, _ = cli(capsys, "report", "--format", "json")
    assert code == 0 and json.loads(out)["totals"][0]["billed_cost"] == "0.0025"


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["report", "--by", "tenant,colour"], 2, "unknown key(s) colour"),
        (["report", "--by", ","], 2, "no keys given"),
        (["report", "--since", "yesterday"], 2, "not an ISO 8601 instant or date"),
        (["report", "--since", "2026-03-01T00:00:00"], 2, "no UTC offset"),
        (["report", "--since", "2026-03-02", "--until", "2026-03-01"], 2, "must be before"),
        (["report", "--format", "xml"], 2, "invalid choice"),
        (["report", "--ledger", "mysql://db/x"], 4, "unsupported ledger URL"),
        (["export"], 2, "--format"),
        (["export", "--format", "parquet"], 2, "invalid choice"),
        (["export", "--format", "cloudevents", "--output", "x.parquet"], 2, "focus only"),
        (["export", "--format", "focus", "--customer-map", "a=cus_1"], 2, "stripe only"),
        (["export", "--format", "focus", "--stripe-value", "cost-micros"], 2, "stripe only"),
        (["export", "--format", "stripe", "--default-subject", "x"], 2, "cloudevents only"),
        (["export", "--format", "stripe", "--event-name", "llm_{colour}"], 2, "unknown field"),
        (["export", "--format", "stripe", "--event-name", "llm_{"], 2, "bad event name"),
        (["export", "--format", "stripe", "--stripe-value", "dollars"], 2, "invalid choice"),
        (["export", "--format", "stripe", "--customer-map", "nonsense"], 4, "neither"),
        (["export", "--format", "focus", "--output", "/nonexistent/dir/x.csv"], 4, "cannot write"),
    ],
)
def test_bad_arguments(
    sqlite_sample: str,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    code: int,
    message: str,
) -> None:
    if "--ledger" not in argv:
        argv = [*argv, "--ledger", sqlite_sample]
    got, out, err = cli(capsys, *argv)
    assert got == code
    assert message in err
    assert out == ""


# --------------------------------------------------------------------------- FOCUS


def _focus_row(cells: dict[str, str]) -> dict[str, Any]:
    """A FOCUS CSV row back to schema types: empty cell = null, Tags = JSON."""
    row: dict[str, Any] = {k: (v if v != "" else None) for k, v in cells.items()}
    row["Tags"] = json.loads(cells["Tags"])
    return row


def test_focus_columns_follow_the_schema() -> None:
    columns = reporting.focus_columns()
    assert columns == list(rec().to_focus())
    assert set(SCHEMA["required"]) <= set(columns)
    assert all(c in SCHEMA["properties"] or c.startswith("x_") for c in columns)


def test_focus_csv_is_valid_exact_and_leaves_unpriced_out(
    sample_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "focus.csv"
    code, out, err = cli(
        capsys, "export", "--ledger", sample_url, "--format", "focus", "--output", str(target)
    )
    assert code == 0 and out == ""
    assert "wrote 7 FOCUS rows" in err
    assert "left out 1 record(s): unpriced" in err
    assert "left out 1 record(s): variant_unavailable" in err
    with target.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == reporting.focus_columns()
        rows = [_focus_row(r) for r in reader]
    expected = [r for r in ledger_records(sample_url) if r.billed_cost is not None]
    assert len(rows) == len(expected) == 7
    for row, record in zip(rows, expected, strict=True):
        RECORD_VALIDATOR.validate(row)
        assert row == record.to_focus()  # every column round-trips
        assert Decimal(row["BilledCost"]) == record.billed_cost  # exact, not a float
        assert row["x_PricingStatus"] in ("priced", "estimated")
    assert {r["x_Model"] for r in rows}.isdisjoint({"in-house-llm"})
    tags = {(r["x_StreamId"], r["x_TokenBucket"]): r["Tags"] for r in rows}
    assert tags["a", "input"] == {"cost-center": "cc-7"} and tags["a", "output"] == {}
    assert sum(
        (Decimal(r["BilledCost"]) for r in rows if r["BillingCurrency"] == "USD"), Decimal(0)
    ) == Decimal("0.0257331")
    # Re-exporting gives the same bytes.
    again = tmp_path / "again.csv"
    cli(capsys, "export", "--ledger", sample_url, "--format", "focus", "--output", str(again))
    assert again.read_bytes() == target.read_bytes()


def test_focus_to_stdout(sqlite_sample: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "export", "--ledger", sqlite_sample, "--format", "focus")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 7
    for row in rows:
        RECORD_VALIDATOR.validate(_focus_row(row))


def test_focus_parquet_without_pyarrow_is_a_clear_error(
    sqlite_sample: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    target = tmp_path / "focus.parquet"
    code, out, err = cli(
        capsys, "export", "--ledger", sqlite_sample, "--format", "focus", "--output", str(target)
    )
    assert code == 4 and out == ""
    assert "writing Parquet needs pyarrow" in err and "pip install pyarrow" in err
    assert not target.exists()


def test_focus_parquet(
    sqlite_sample: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    target = tmp_path / "focus.parquet"
    code, _, err = cli(
        capsys, "export", "--ledger", sqlite_sample, "--format", "focus", "--output", str(target)
    )
    assert code == 0 and "wrote 7 FOCUS rows" in err
    table = pq.read_table(target)
    assert table.column_names == reporting.focus_columns()
    rows = table.to_pylist()
    expected = [r for r in ledger_records(sqlite_sample) if r.billed_cost is not None]
    for row, record in zip(rows, expected, strict=True):
        row["Tags"] = json.loads(row["Tags"])
        RECORD_VALIDATOR.validate(row)
        assert row == record.to_focus()


# --------------------------------------------------------------------------- CloudEvents


def _spec_id(data: dict[str, Any]) -> str:
    """SPEC section 7, computed independently of CostRecord.id."""
    text = "\n".join(
        [
            data["x_StreamId"],
            data["ChargePeriodStart"],
            data["ChargePeriodEnd"],
            data["x_TokenBucket"],
        ]
    )
    return hashlib.sha256(text.encode()).hexdigest()


def test_cloudevents_are_valid_and_deterministic(
    sample_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = tmp_path / "1.jsonl", tmp_path / "2.jsonl"
    for target in (first, second):
        code, out, err = cli(
            capsys,
            "export",
            "--ledger",
            sample_url,
            "--format",
            "cloudevents",
            "--output",
            str(target),
        )
        assert code == 0 and out == ""
    assert first.read_bytes() == second.read_bytes()
    assert "wrote 9 CloudEvents" in err
    assert "2 event(s) of unpriced records carry null costs" in err
    assert "1 event(s) have no subject" in err
    lines = first.read_text(encoding="utf-8").splitlines()
    events = [json.loads(line) for line in lines]
    records = ledger_records(sample_url)
    assert len(events) == len(records) == 9
    for event, record in zip(events, records, strict=True):
        EVENT_VALIDATOR.validate(event)
        assert event["id"] == record.id == _spec_id(event["data"])
        assert event["type"] == "io.otel-tokens.cost.v1"
        assert event["time"] == event["data"]["ChargePeriodEnd"]
        assert event.get("subject") == record.tenant
        if record.billed_cost is None:
            assert event["data"]["BilledCost"] is None
            assert event["data"]["x_PricingStatus"] in ("unpriced", "variant_unavailable")
        else:
            assert Decimal(event["data"]["BilledCost"]) == record.billed_cost
    assert len({e["id"] for e in events}) == len(events)


def test_cloudevents_default_subject(
    sqlite_sample: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(
        capsys,
        "export",
        "--ledger",
        sqlite_sample,
        "--format",
        "cloudevents",
        "--default-subject",
        "unattributed",
    )
    assert code == 0 and "no subject" not in err
    events = [json.loads(line) for line in out.splitlines()]
    assert all(e["subject"] for e in events)
    assert [e["subject"] for e in events].count("unattributed") == 1
    for event in events:
        EVENT_VALIDATOR.validate(event)


# --------------------------------------------------------------------------- Stripe


def _stripe(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines()]


def test_stripe_tokens(sample_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "export", "--ledger", sample_url, "--format", "stripe")
    assert code == 0
    events = _stripe(out)
    code, again, _ = cli(capsys, "export", "--ledger", sample_url, "--format", "stripe")
    assert again == out  # identifiers and values are stable
    records = {r.id: r for r in ledger_records(sample_url)}
    ids = [e["identifier"] for e in events]
    assert len(set(ids)) == len(ids) == 7
    for event in events:
        assert set(event) == {"event_name", "identifier", "payload", "timestamp"}
        record = records[event["identifier"]]
        assert event["event_name"] == "llm_tokens"
        assert event["payload"] == {
            "stripe_customer_id": record.tenant,
            "value": str(record.quantity),
        }
        assert isinstance(event["timestamp"], int)
        assert record.period_start.timestamp() - 1 <= event["timestamp"]
        assert event["timestamp"] < record.period_end.timestamp()
        assert record.bucket != "web_search"
        assert len(event["identifier"]) <= 100
    # Unpriced usage still has known tokens: it is in the token meter.
    assert {records[i].model for i in ids} >= {"in-house-llm"}
    assert "left out 1 record(s): no tenant" in err
    assert "left out 1 record(s): web_search requests, not tokens" in err
    assert "more than 35 days old" in err  # the sample is from March 2026

    # With {unit} in the event name, requests go to their own meter.
    code, out, _ = cli(
        capsys, "export", "--ledger", sample_url, "--format", "stripe", "--event-name", "llm_{unit}"
    )
    names = {e["event_name"]: e for e in _stripe(out)}
    assert names["llm_requests"]["payload"]["value"] == "2"
    assert set(names) == {"llm_tokens", "llm_requests"}


def test_stripe_timestamp_is_the_last_second_inside_the_period() -> None:
    midnight = datetime(2026, 4, 1, tzinfo=UTC)
    stamp = _stripe_timestamp(midnight)
    assert stamp == int(midnight.timestamp()) - 1  # 2026-03-31T23:59:59Z, not April
    assert _stripe_timestamp(midnight + timedelta(microseconds=1)) == int(midnight.timestamp())
    assert _stripe_timestamp(midnight + timedelta(seconds=1.5)) == int(midnight.timestamp()) + 1


def test_stripe_age_notes() -> None:
    record = rec()
    _, result = reporting.stripe_events([record], now=at(60))
    assert result.notes == []
    _, result = reporting.stripe_events([record], now=at(60 * 24 * 36))
    assert any("35 days" in n for n in result.notes)
    _, result = reporting.stripe_events([record], now=at(-10))
    assert any("future" in n for n in result.notes)


def test_stripe_customer_map(
    sample_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(
        capsys,
        "export",
        "--ledger",
        sample_url,
        "--format",
        "stripe",
        "--customer-map",
        "acme=cus_A",
        "--customer-map",
        "globex=cus_G",
    )
    assert code == 0
    customers = [e["payload"]["stripe_customer_id"] for e in _stripe(out)]
    assert set(customers) == {"cus_A", "cus_G"}

    lines = tmp_path / "customers.txt"
    lines.write_text("# tenant=customer\nacme = cus_A\n\nglobex=cus_G\n", encoding="utf-8")
    code, from_lines, _ = cli(
        capsys, "export", "--ledger", sample_url, "--format", "stripe", "--customer-map", str(lines)
    )
    assert code == 0 and from_lines == out
    as_json = tmp_path / "customers.json"
    as_json.write_text(json.dumps({"acme": "cus_A", "globex": "cus_G"}), encoding="utf-8")
    code, from_json, _ = cli(
        capsys,
        "export",
        "--ledger",
        sample_url,
        "--format",
        "stripe",
        "--customer-map",
        str(as_json),
    )
    assert code == 0 and from_json == out

    # A tenant missing from the map is an error; nothing is written.
    target = tmp_path / "stripe.jsonl"
    target.write_text("previous export\n", encoding="utf-8")
    code, out, err = cli(
        capsys,
        "export",
        "--ledger",
        sample_url,
        "--format",
        "stripe",
        "--customer-map",
        "acme=cus_A",
        "--output",
        str(target),
    )
    assert code == 4 and out == ""
    assert "1 tenant(s) have no Stripe customer in --customer-map: globex" in err
    assert target.read_text(encoding="utf-8") == "previous export\n"

    bad = tmp_path / "bad.txt"
    bad.write_text("acme cus_A\n", encoding="utf-8")
    code, _, err = cli(
        capsys, "export", "--ledger", sample_url, "--format", "stripe", "--customer-map", str(bad)
    )
    assert code == 4 and "bad.txt:1: expected TENANT=CUSTOMER_ID" in err
    code, _, err = cli(
        capsys,
        "export",
        "--ledger",
        sample_url,
        "--format",
        "stripe",
        "--customer-map",
        "acme=cus_A",
        "--customer-map",
        "acme=cus_B",
    )
    assert code == 4 and "mapped to both" in err


def test_load_customer_map() -> None:
    assert reporting.load_customer_map(["a=cus_1", "team=x=cus_2"]) == {
        "a": "cus_1",
        "team=x": "cus_2",
    }
    with pytest.raises(reporting.ExportError, match="TENANT=CUSTOMER_ID"):
        reporting.load_customer_map(["a="])


def test_stripe_cost_micros(sample_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(
        capsys,
        "export",
        "--ledger",
        sample_url,
        "--format",
        "stripe",
        "--stripe-value",
        "cost-micros",
    )
    assert code == 4 and "several currencies (EUR, USD)" in err and "{currency}" in err

    code, out, err = cli(
        capsys,
        "export",
        "--ledger",
        sample_url,
        "--format",
        "stripe",
        "--stripe-value",
        "cost-micros",
        "--event-name",
        "llm_cost_micros_{currency}",
    )
    assert code == 0
    events = _stripe(out)
    records = {r.id: r for r in ledger_records(sample_url)}
    assert all(records[e["identifier"]].billed_cost is not None for e in events)
    assert "left out 2 record(s): unpriced" not in err
    assert "left out 1 record(s): unpriced (no cost)" in err
    assert "left out 1 record(s): variant_unavailable (no cost)" in err
    sums: dict[tuple[str, str], int] = {}
    exact: dict[tuple[str, str], Decimal] = {}
    for event in events:
        key = (event["payload"]["stripe_customer_id"], event["event_name"])
        sums[key] = sums.get(key, 0) + int(event["payload"]["value"])
        cost = records[event["identifier"]].billed_cost
        assert cost is not None
        exact[key] = exact.get(key, Decimal(0)) + cost * 1_000_000
    assert set(sums) == {
        ("acme", "llm_cost_micros_USD"),
        ("globex", "llm_cost_micros_USD"),
        ("globex", "llm_cost_micros_EUR"),
    }
    for key, total in exact.items():
        assert sums[key] == int(total.to_integral_value(rounding=ROUND_HALF_EVEN))
    assert sums["acme", "llm_cost_micros_USD"] == 24508  # 24508.1 micros
    assert sums["globex", "llm_cost_micros_EUR"] == 12346  # 12345.6789 micros
    assert "rounded half-even to a whole micro" in err


def test_write_output_replaces_the_file(
    sqlite_sample: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "events.jsonl"
    target.write_text("old\n", encoding="utf-8")
    code, _, _ = cli(
        capsys,
        "export",
        "--ledger",
        sqlite_sample,
        "--format",
        "cloudevents",
        "--output",
        str(target),
    )
    assert code == 0
    assert len(target.read_text(encoding="utf-8").splitlines()) == 9
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_display_url_hides_the_password() -> None:
    assert (
        display_url("postgresql://bill:s3cret@db.example:5432/costs")
        == "postgresql://bill:***@db.example:5432/costs"
    )
    assert display_url("sqlite:///x.db") == "sqlite:///x.db"


# --------------------------------------------------------------------------- the real CLI


def _shim(
    cwd: Path, *argv: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SHIM, *argv],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_shim_report_and_export(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    fill(url, sample_records())
    done = _shim(tmp_path, "report", "--by", "tenant,day", env={"OTEL_TOKENS_LEDGER": url})
    assert done.returncode == 0, done.stderr
    assert "Cost by tenant, day" in done.stdout and "0.0123456789" in done.stdout
    done = _shim(tmp_path, "export", "--ledger", url, "--format", "focus", "--output", "f.csv")
    assert done.returncode == 0, done.stderr
    assert "wrote 7 FOCUS rows to f.csv" in done.stderr
    assert "left out 1 record(s): unpriced" in done.stderr
    with (tmp_path / "f.csv").open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            RECORD_VALIDATOR.validate(_focus_row(row))
    done = _shim(tmp_path, "report", "--ledger", url, "--by", "planet")
    assert done.returncode == 2 and "unknown key(s) planet" in done.stderr
