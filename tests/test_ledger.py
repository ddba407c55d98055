"""Ledgers (SQLite file and PostgreSQL) and cost records.

PostgreSQL tests use a fresh schema per test in ``$OTEL_TOKENS_TEST_PG`` (see
``tests/_services.py``) and are skipped when it is unreachable.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing
import random
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from referencing import Registry, Resource

from _points import BASE_ATTRS
from otel_tokens import semconv as sc
from otel_tokens.ledger import (
    DEFAULT_LEDGER_URL,
    Ledger,
    LedgerError,
    SQLiteLedger,
    open_ledger,
)
from otel_tokens.ledger._schema import MIGRATIONS
from otel_tokens.metering import LedgerPricer, TokenPoint
from otel_tokens.pricing import Catalog
from otel_tokens.records import CLOUDEVENT_SOURCE, CLOUDEVENT_TYPE, CostRecord, stream_id

SCHEMAS = Path(__file__).resolve().parents[1] / "semconv" / "schemas"
AT = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
T0 = int(AT.timestamp()) * 10**9
MIN = 60 * 10**9


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    opened = open_ledger(ledger_url)
    yield opened
    opened.close()


def record(**changes: Any) -> CostRecord:
    values: dict[str, Any] = {
        "stream_id": "0af7651916cd43dd8448eb211c80319c",
        "period_start": AT,
        "period_end": AT + timedelta(minutes=1, microseconds=123_456),
        "provider": "openai",
        "model": "gpt-4o-2024-08-06",
        "bucket": "cache_read",
        "quantity": 1920,
        "currency": "USD",
        "catalog_version": "genai-prices@0.2.3",
        "pricing_status": "priced",
        "usage_source": "provider",
        "processing": "standard",
        "context_tier": "base",
        "price_id": "genai-prices:openai/gpt-4o",
        "billed_cost": Decimal("0.0024"),
        "list_cost": Decimal("0.0024"),
        "tenant": "tenant-42",
        "feature": "search-summary",
        "user_id": "u-7",
        "operation": "chat",
        "service_name": "checkout",
        "tags": {"cost-center": "cc-7", "équipe": "données"},
    }
    values.update(changes)
    return CostRecord(**values)


def insert(ledger: Ledger, records: list[CostRecord]) -> list[CostRecord]:
    with ledger.transaction() as tx:
        return tx.insert(records)


# --- ledgers ------------------------------------------------------------------------------
def _migration_versions(url: str) -> list[int]:
    if url.startswith("sqlite:///"):
        lite = sqlite3.connect(url[len("sqlite:///") :])
        try:
            return [r[0] for r in lite.execute("SELECT version FROM schema_migrations")]
        finally:
            lite.close()
    import psycopg

    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT version FROM schema_migrations").fetchall()]


def test_migrations_are_idempotent(ledger_url: str) -> None:
    first = open_ledger(ledger_url)
    insert(first, [record()])
    with first.transaction() as tx:
        tx.set_mark("s", T0, T0 + MIN, 100)
    second = open_ledger(ledger_url)  # migrates again while the first is open
    first.close()
    second.close()
    third = open_ledger(ledger_url)
    try:
        assert _migration_versions(ledger_url) == list(range(1, len(MIGRATIONS["sqlite"]) + 1))
        assert list(third.records()) == [record()]
        with third.transaction() as tx:
            assert tx.mark("s", T0) == (T0 + MIN, 100)
    finally:
        third.close()


def test_records_round_trip_exactly(ledger: Ledger) -> None:
    records = [
        record(),
        # Prices with many decimals, a huge count, an offset time zone, no attribution.
        record(
            bucket="input",
            quantity=10**15,
            billed_cost=Decimal("0.000000000000000000012345678901234567890123"),
            list_cost=Decimal("123456789012345.000000000001"),
            period_start=datetime(2026, 11, 1, 13, 0, 0, 1, tzinfo=timezone(timedelta(hours=1))),
            period_end=datetime(2026, 11, 1, 12, 0, 0, 999_999, tzinfo=UTC),
            tenant=None,
            feature=None,
            user_id=None,
            operation=None,
            service_name=None,
            tags={},
        ),
        # Unpriced: null costs (never 0) and no price id.
        record(
            bucket="output",
            pricing_status="unpriced",
            price_id=None,
            billed_cost=None,
            list_cost=None,
            model="acme-llm-9000",
            processing="batch",
            context_tier="above_200k",
            usage_source="estimated",
            currency="EUR",
        ),
    ]
    assert insert(ledger, records) == records
    stored = {r.id: r for r in ledger.records()}
    assert set(stored) == {r.id for r in records}
    for original in records:
        back = stored[original.id]
        assert back == original
        assert back.period_start.tzinfo is not None and back.period_end.tzinfo is not None
        assert back.period_start.utcoffset() == timedelta(0)
        assert back.to_focus() == original.to_focus()
        assert back.id == original.id
    assert ledger.count() == 3


def test_since_until_filter_on_period_end(ledger: Ledger) -> None:
    ends = [AT + timedelta(minutes=i) for i in range(5)]
    insert(ledger, [record(period_start=e - timedelta(minutes=1), period_end=e) for e in ends])

    def window(since: datetime | None = None, until: datetime | None = None) -> list[datetime]:
        return [r.period_end for r in ledger.records(since=since, until=until)]

    assert window() == ends  # ordered by period end
    assert window(since=ends[1]) == ends[2:]  # since is exclusive
    assert window(until=ends[2]) == ends[:3]  # until is inclusive
    assert window(since=ends[0], until=ends[3]) == ends[1:4]
    assert window(since=ends[4]) == []
    paris = timezone(timedelta(hours=1))
    assert window(since=ends[1].astimezone(paris), until=ends[2].astimezone(paris)) == [ends[2]]
    # Microseconds count.
    assert window(until=ends[2] - timedelta(microseconds=1)) == ends[:2]


def test_naive_datetimes_are_utc_everywhere(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        naive = record(period_start=AT.replace(tzinfo=None), period_end=AT.replace(tzinfo=None))
        aware = record(period_start=AT, period_end=AT)
        assert naive.id == aware.id
        insert(ledger, [naive])
        (back,) = ledger.records()
        assert back.period_end == AT
        assert back.id == naive.id
        assert [r.id for r in ledger.records(since=AT.replace(tzinfo=None) - timedelta(seconds=1))]
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_insert_ignores_existing_ids(ledger: Ledger) -> None:
    a, b = record(), record(bucket="output", quantity=300, billed_cost=Decimal("0.003"))
    assert insert(ledger, [a]) == [a]
    # Same id (stream, period, price id, bucket) with other values: the first one stays.
    changed = record(quantity=999_999, billed_cost=Decimal(1))
    assert changed.id == a.id
    assert insert(ledger, [changed, b, b]) == [b]
    assert insert(ledger, [a, b]) == []
    assert sorted(ledger.records(), key=lambda r: r.bucket) == [a, b]
    assert ledger.count() == 2


def test_transaction_rolls_back_on_error(ledger: Ledger) -> None:
    with pytest.raises(RuntimeError), ledger.transaction() as tx:
        tx.insert([record()])
        tx.set_mark("s", T0, T0 + MIN, 5)
        raise RuntimeError("boom")
    assert ledger.count() == 0
    with ledger.transaction() as tx:
        assert tx.mark("s", T0) is None


def test_marks(ledger: Ledger) -> None:
    with ledger.transaction() as tx:
        assert tx.mark("s", T0) is None
        tx.set_mark("s", T0, T0 + MIN, 10**15)
        assert tx.mark("s", T0) == (T0 + MIN, 10**15)
        tx.set_mark("s", 0, T0, 7)
    with ledger.transaction() as tx:
        assert tx.mark("s", T0) == (T0 + MIN, 10**15)
        assert tx.mark("s", 0) == (T0, 7)
        assert tx.mark("other", T0) is None
        tx.set_mark("s", T0, T0 + 2 * MIN, 3)
    with ledger.transaction() as tx:
        assert tx.mark("s", T0) == (T0 + 2 * MIN, 3)


def _drop_records_table(url: str) -> None:
    """Drop the records table behind an open ledger's back, over a connection of its own."""
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        conn.execute("DROP TABLE cost_records")
        conn.commit()
        conn.close()
    else:
        import psycopg

        with psycopg.connect(url, autocommit=True) as pg:
            pg.execute("DROP TABLE cost_records")


def test_driver_errors_are_ledger_errors(ledger_url: str) -> None:
    """What the database driver raises reaches the caller as a LedgerError (the driver's
    error its cause), so no caller names sqlite3 or psycopg."""
    ledger = open_ledger(ledger_url)
    try:
        _drop_records_table(ledger_url)
        with pytest.raises(LedgerError, match="cost_records") as err:
            ledger.count()
        assert type(err.value.__cause__).__module__.split(".")[0] in ("sqlite3", "psycopg")
        with pytest.raises(LedgerError):
            list(ledger.records())
        with pytest.raises(LedgerError), ledger.transaction() as tx:
            tx.insert([record()])
        # The ledger still answers once the storage is back (no transaction left open).
        with ledger.transaction() as tx:
            assert tx.mark("s", T0) is None
    finally:
        ledger.close()


def test_meter_on_each_ledger(ledger: Ledger) -> None:
    meter = LedgerPricer(ledger, Catalog())
    points = [_point(100, T0 + MIN), _point(250, T0 + 2 * MIN)]
    assert [r.quantity for r in meter.ingest(points).records] == [100, 150]
    assert meter.ingest(points).records == []
    assert sum(r.billed_cost or 0 for r in ledger.records()) == Decimal("0.000625")


def test_open_ledger_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OTEL_TOKENS_LEDGER", raising=False)
    default = open_ledger()
    assert default.url == DEFAULT_LEDGER_URL and (tmp_path / "otel-tokens-ledger.db").exists()
    default.close()
    monkeypatch.setenv("OTEL_TOKENS_LEDGER", "sqlite:///from-env/l.db")
    from_env = open_ledger()
    assert isinstance(from_env, SQLiteLedger) and (tmp_path / "from-env" / "l.db").exists()
    from_env.close()
    absolute = open_ledger(f"sqlite:///{tmp_path}/nested/dir/abs.db")  # creates directories
    assert (tmp_path / "nested" / "dir" / "abs.db").exists()
    absolute.close()
    with pytest.raises(LedgerError, match="unsupported ledger URL"):
        open_ledger("mysql://root@localhost/ledger")


def test_unopenable_ledgers_raise_ledger_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(LedgerError, match="cannot open ledger"):
        open_ledger(f"sqlite:///{blocker}/ledger.db")
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not an SQLite database" * 100)
    with pytest.raises(LedgerError, match="cannot open ledger"):
        open_ledger(f"sqlite:///{garbage}")
    with pytest.raises(LedgerError):  # refused (or psycopg missing): never another error
        open_ledger("postgresql://postgres@127.0.0.1:1/nowhere?connect_timeout=2")


# --- concurrent writers -------------------------------------------------------------------
ATTRS = BASE_ATTRS


def _point(
    value: int, time: int, *, start: int = T0, bucket: str = "input", cumulative: bool = True
) -> TokenPoint:
    attributes = {**ATTRS, sc.BILLING_TOKEN_BUCKET: bucket}
    sid = stream_id({"attributes": attributes, "metric": sc.METRIC_BILLING_TOKENS})
    return TokenPoint(sid, attributes, {"service.name": "checkout"}, start, time, value, cumulative)


def _exports(seed: int) -> tuple[list[TokenPoint], Counter[str]]:
    """What several processes' exporters sent: cumulative streams with restarts, and deltas."""
    rng = random.Random(seed)
    points: list[TokenPoint] = []
    truth: Counter[str] = Counter()
    for bucket in ("input", "output", "cache_read"):
        now = T0
        for _run in range(3):  # two restarts: a new start time, counting from zero
            start, value = now, 0
            for _ in range(12):
                value += rng.randrange(0, 4000)
                now += MIN
                points.append(_point(value, now, start=start, bucket=bucket))
            truth[bucket] += value
            now += MIN
    for i in range(20):
        value = rng.randrange(1, 500)
        points.append(
            _point(
                value, T0 + (i + 1) * MIN, start=T0 + i * MIN, bucket="reasoning", cumulative=False
            )
        )
        truth["reasoning"] += value
    return points, truth


def _writer(url: str, seed: int, worker: int, start: Any, results: Any) -> None:
    """One process: ingests every export (duplicates included) in its own order and batches."""
    points, _ = _exports(seed)
    rng = random.Random(seed * 100 + worker)
    delivered = points + rng.sample(points, len(points) // 2)
    rng.shuffle(delivered)
    written = 0
    ledger = open_ledger(url)
    try:
        meter = LedgerPricer(ledger, Catalog())
        start.wait(timeout=60)  # all processes ready: now they race
        i = 0
        while i < len(delivered):
            size = rng.randint(1, 12)
            written += len(meter.ingest(delivered[i : i + size]).records)
            i += size
        results.put((worker, written))
    except BaseException as exc:
        results.put((worker, repr(exc)))
        raise
    finally:
        ledger.close()


def _run_writers(url: str, seed: int, processes: int = 4) -> dict[int, int]:
    # fork: the writers start at once, without importing everything again (spawn works too).
    ctx = multiprocessing.get_context("fork")
    start, results = ctx.Barrier(processes), ctx.Queue()
    workers = [
        ctx.Process(target=_writer, args=(url, seed, w, start, results)) for w in range(processes)
    ]
    for w in workers:
        w.start()
    written = dict(results.get(timeout=90) for _ in workers)
    for w in workers:
        w.join(timeout=30)
    assert all(isinstance(n, int) for n in written.values()), written
    assert [w.exitcode for w in workers] == [0] * processes
    return written


def _check_exact(url: str, seed: int, by_worker: dict[int, int]) -> None:
    written = sum(by_worker.values())
    _, truth = _exports(seed)
    ledger = open_ledger(url)
    try:
        records = list(ledger.records())
        assert len(records) == written == ledger.count()  # every write counted once
        assert len({r.id for r in records}) == len(records)
        totals: Counter[str] = Counter()
        for r in records:
            totals[r.bucket] += r.quantity
        assert totals == truth
        for bucket in truth:  # no interval of a stream is billed twice
            spans = sorted((r.period_start, r.period_end) for r in records if r.bucket == bucket)
            for (_, end), (begin, _) in itertools.pairwise(spans):
                assert end <= begin, bucket
        billed = sum((r.billed_cost or Decimal(0)) for r in records)
        expected = Decimal(truth["input"]) * Decimal("2.5") / 10**6
        expected += Decimal(truth["output"]) * 10 / 10**6
        expected += Decimal(truth["cache_read"]) * Decimal("1.25") / 10**6
        expected += Decimal(truth["reasoning"]) * 10 / 10**6
        assert billed == expected
    finally:
        ledger.close()


def test_concurrent_processes_postgres(pg_url: str) -> None:
    open_ledger(pg_url).close()  # not required, but lets the writers race on data, not DDL
    written = _run_writers(pg_url, seed=11)
    _check_exact(pg_url, 11, written)


def test_concurrent_processes_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"  # writers create and migrate it together
    written = _run_writers(url, seed=12)
    _check_exact(url, 12, written)


# --- cost records -------------------------------------------------------------------------
def _schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    return loaded


COST_RECORD = _schema("cost-record.schema.json")
REGISTRY: Registry[Any] = Registry().with_resource(
    COST_RECORD["$id"], Resource.from_contents(COST_RECORD)
)
CLOUD_EVENT = {"$ref": f"{COST_RECORD['$id']}#/$defs/CloudEvent"}


def _errors(schema: dict[str, Any], instance: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(
        schema, registry=REGISTRY, format_checker=jsonschema.FormatChecker()
    )
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(instance)
    ]


def test_record_id_is_deterministic_and_follows_spec() -> None:
    r = record()
    assert r.id == record().id == record(quantity=1, billed_cost=None, tags={}).id
    focus = r.to_focus()
    text = "\n".join(
        (
            focus["x_StreamId"],
            focus["ChargePeriodStart"],
            focus["ChargePeriodEnd"],
            focus["x_TokenBucket"],
        )
    )
    assert r.id == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert focus["ChargePeriodEnd"] == "2026-11-01T12:01:00.123456Z"
    # The identity names the usage, never how it was priced: the same usage unpriced, or
    # priced by another entry, is the same record (so it is never billed twice).
    unpriced = record(price_id=None, pricing_status="unpriced", billed_cost=None)
    assert unpriced.id == r.id == record(price_id="user:openai/gpt-4o").id
    expected = "\n".join((r.stream_id, "2026-11-01T12:00:00Z", focus["ChargePeriodEnd"], r.bucket))
    assert unpriced.id == hashlib.sha256(expected.encode()).hexdigest()
    # Each part of the identity changes the id; an instant in another zone does not.
    assert (
        len(
            {
                r.id,
                record(stream_id="other").id,
                record(period_start=AT - timedelta(microseconds=1)).id,
                record(period_end=AT + timedelta(minutes=2)).id,
                record(bucket="input").id,
            }
        )
        == 5
    )
    assert record(period_start=AT.astimezone(timezone(timedelta(hours=-5)))).id == r.id


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"tenant": None, "tags": {}, "feature": None, "user_id": None, "service_name": None},
        {"pricing_status": "unpriced", "billed_cost": None, "list_cost": None, "price_id": None},
        {"pricing_status": "variant_unavailable", "billed_cost": None, "list_cost": None},
        {"bucket": "web_search", "quantity": 3, "billed_cost": Decimal("0.03")},
        {"provider": "gcp.gemini", "context_tier": "above_200k", "model": "gemini-2.5-pro"},
        {"provider": "acme", "list_cost": None, "price_id": "user:acme-llm@2026-01-01T00:00:00Z"},
        {"usage_source": "estimated", "pricing_status": "estimated", "quantity": 0},
        {"billed_cost": Decimal("1E-12"), "list_cost": Decimal("2.50E+3")},
    ],
)
def test_focus_and_cloudevent_validate_against_schema(changes: dict[str, Any]) -> None:
    r = record(**changes)
    focus = r.to_focus()
    assert not _errors(COST_RECORD, focus)
    event = r.to_cloudevent()
    assert not _errors(CLOUD_EVENT, event)
    assert event["id"] == r.id
    assert (event["type"], event["source"]) == (CLOUDEVENT_TYPE, CLOUDEVENT_SOURCE)
    assert event["time"] == focus["ChargePeriodEnd"]
    assert event["data"] == focus
    json.dumps(event)  # JSON-ready: no Decimal or datetime left


def test_focus_columns() -> None:
    focus = record().to_focus()
    assert focus["BilledCost"] == focus["EffectiveCost"] == "0.0024"
    assert (focus["ProviderName"], focus["ServiceName"]) == ("OpenAI", "OpenAI API")
    assert (focus["ConsumedQuantity"], focus["ConsumedUnit"]) == ("1920", "Tokens")
    assert (focus["PricingQuantity"], focus["PricingUnit"]) == ("0.00192", "1000000 Tokens")
    assert focus["ListUnitPrice"] == "1.25"
    assert focus["SkuId"] == "openai/gpt-4o-2024-08-06/cache_read"
    assert focus["SkuPriceId"] == "genai-prices:openai/gpt-4o/cache_read"
    assert focus["x_ServiceName"] == "checkout"
    tiny = record(billed_cost=Decimal("1E-12")).to_focus()
    assert tiny["BilledCost"] == "0.000000000001"  # plain notation, never an exponent


def test_meter_records_validate_against_schema(tmp_path: Path) -> None:
    meter = LedgerPricer(SQLiteLedger(str(tmp_path / "l.db")), Catalog())
    points = [_point(100, T0 + MIN, bucket=b) for b in (*sc.TOKEN_BUCKETS, sc.BUCKET_WEB_SEARCH)]
    unknown = {**ATTRS, sc.GEN_AI_RESPONSE_MODEL: "x", sc.GEN_AI_REQUEST_MODEL: "acme-9"}
    points.append(
        TokenPoint("u", {**unknown, sc.BILLING_TOKEN_BUCKET: "input"}, {}, 0, T0, 5, False)
    )
    result = meter.ingest(points)
    assert result.rejected == [] and len(result.records) == len(points)
    for r in meter.ledger.records():
        assert not _errors(COST_RECORD, r.to_focus()), r
        assert not _errors(CLOUD_EVENT, r.to_cloudevent()), r


# --- a record's identity does not depend on its price; re-pricing is explicit --------------
ACME_PRICES = (
    "models:\n  - provider: acme\n    model: acme-llm-9000\n    prices: {input_mtok: '%s'}\n"
)


def _acme_catalog(tmp_path: Path, rate: str) -> tuple[Catalog, Path]:
    path = tmp_path / f"acme-{rate}.yaml"
    path.write_text(ACME_PRICES % rate)
    return Catalog.load(path), path


def _acme_export(tenant: str = "tenant-42", model: str = "acme-llm-9000") -> Any:
    """One real SDK export (delta temporality) of an app's gen_ai.billing.tokens counter."""
    from opentelemetry.sdk.metrics import Counter as SdkCounter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
    from opentelemetry.sdk.resources import Resource as SdkResource

    reader = InMemoryMetricReader(preferred_temporality={SdkCounter: AggregationTemporality.DELTA})
    provider = MeterProvider(
        metric_readers=[reader], resource=SdkResource.create({"service.name": "checkout"})
    )
    counter = provider.get_meter("otel_tokens").create_counter(sc.METRIC_BILLING_TOKENS)
    counter.add(
        2_000_000,
        {
            sc.GEN_AI_PROVIDER_NAME: "acme",
            sc.GEN_AI_REQUEST_MODEL: model,
            sc.GEN_AI_RESPONSE_MODEL: model,
            sc.GEN_AI_OPERATION_NAME: "chat",
            sc.BILLING_TOKEN_BUCKET: "input",
            sc.BILLING_TENANT_ID: tenant,
        },
    )
    data = reader.get_metrics_data()
    provider.shutdown()
    return data


def test_a_point_resent_after_a_price_change_is_billed_once(
    ledger_url: str, tmp_path: Path
) -> None:
    from otel_tokens.metering import from_sdk

    export = _acme_export()
    # The collector has no price for acme-llm-9000: the usage is recorded unpriced, but the
    # client never sees the acknowledgement (the collector restarts).
    first = open_ledger(ledger_url)
    written = LedgerPricer(first, Catalog()).ingest(from_sdk(export)).records
    assert [(r.pricing_status, r.billed_cost) for r in written] == [("unpriced", None)]
    first.close()
    # It comes back with a price file that prices the model, and the client resends.
    catalog, _ = _acme_catalog(tmp_path, "0.5")
    second = open_ledger(ledger_url)
    try:
        again = LedgerPricer(second, catalog).ingest(from_sdk(export))
        assert (again.records, again.unchanged) == ([], 1)  # the same usage: not billed again
        stored = list(second.records())
        assert [(r.quantity, r.pricing_status) for r in stored] == [(2_000_000, "unpriced")]
        assert stored[0].id == written[0].id
    finally:
        second.close()


def test_reprice_writes_adjustments_never_edits_or_duplicates(
    ledger_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from otel_tokens.cli import main
    from otel_tokens.metering import from_sdk
    from otel_tokens.reporting import build_report

    ledger = open_ledger(ledger_url)
    try:
        LedgerPricer(ledger, Catalog()).ingest(from_sdk(_acme_export()))
        LedgerPricer(ledger, Catalog()).ingest(from_sdk(_acme_export(tenant="tenant-7")))
    finally:
        ledger.close()
    _, prices = _acme_catalog(tmp_path, "0.5")
    base = ["reprice", "--ledger", ledger_url, "--prices", str(prices)]
    # A dry run writes nothing.
    assert main([*base, "--dry-run", "--json"]) == 0
    dry = json.loads(capsys.readouterr().out)
    assert (dry["examined"], dry["adjustments"]) == (2, 2)
    # One tenant: 2,000,000 x $0.50 / 1M = $1 for tenant-42 only.
    assert main([*base, "--tenant", "tenant-42", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["examined"], out["adjustments"], out["billed_difference"]) == (1, 1, {"USD": "1"})
    # Again: already at this price, nothing written.
    assert main([*base, "--tenant", "tenant-42", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["adjustments"], out["unchanged"]) == (0, 1)
    # A price change later: the difference only (2,000,000 x 0.25 / 1M = 0.5 more).
    _, dearer = _acme_catalog(tmp_path, "0.75")
    assert main(["reprice", "--ledger", ledger_url, "--prices", str(dearer), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["adjustments"], out["billed_difference"]) == (2, {"USD": "2"})  # 0.5 + 1.5
    ledger = open_ledger(ledger_url)
    try:
        records = list(ledger.records())
    finally:
        ledger.close()
    usage = [r for r in records if r.charge_category == "Usage"]
    adjustments = [r for r in records if r.charge_category == "Adjustment"]
    # The usage records are untouched: unpriced, as first written.
    assert [(r.pricing_status, r.billed_cost) for r in usage] == [("unpriced", None)] * 2
    assert {a.adjusts for a in adjustments} == {r.id for r in usage}
    assert all(a.quantity == 0 for a in adjustments)  # tokens counted once, by the usage
    # tenant-42: unpriced -> +1, then 1 -> +0.5; tenant-7: unpriced -> +1.5
    assert Counter((a.adjusted_from, a.billed_cost) for a in adjustments) == Counter(
        [(None, Decimal("1")), (Decimal("1"), Decimal("0.5")), (None, Decimal("1.5"))]
    )
    # Usage plus adjustments: each tenant's usage at the newest price.
    report = build_report(records, ["tenant"])
    totals = {line.key[0]: line.billed_cost for line in report.lines}
    assert totals == {"tenant-42": Decimal("1.5"), "tenant-7": Decimal("1.5")}
    assert sum(line.tokens + line.unpriced_tokens for line in report.lines) == 4_000_000
    for a in adjustments:
        focus = a.to_focus()
        assert (focus["ChargeCategory"], focus["x_Adjusts"]) == ("Adjustment", a.adjusts)
        assert _errors(COST_RECORD, focus) == []


def _old_id(r: CostRecord) -> str:
    """A record id as ledgers stored it before migration 3 (it named the price id)."""
    text = "\n".join(
        (
            r.stream_id,
            r.period_start.isoformat().replace("+00:00", "Z"),
            r.period_end.isoformat().replace("+00:00", "Z"),
            r.price_id or "",
            r.bucket,
        )
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _old_ledger(url: str, records: list[CostRecord]) -> None:
    """A ledger at migration 2 holding ``records`` under their old ids, in this order."""
    from otel_tokens.ledger._base import record_row
    from otel_tokens.ledger._schema import RECORD_COLUMNS

    columns = [
        "id", "stream_id", "period_start", "period_end", "provider", "model", "bucket",
        "quantity", "currency", "catalog_version", "pricing_status", "usage_source",
        "processing", "context_tier", "price_id", "priced_model", "billed_cost", "list_cost",
        "tenant", "feature", "user_id", "operation", "service_name", "tags",
    ]  # fmt: skip
    dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
    rows = []
    for i, r in enumerate(records):
        values = dict(zip((*RECORD_COLUMNS, "ingested_at"), record_row(r, AT), strict=True))
        values["id"] = _old_id(r)
        rows.append([*(values[c] for c in columns), f"2026-11-01T12:0{i}:00.000000Z"])
    mark = "?" if dialect == "sqlite" else "%s"
    insert_sql = (
        f"INSERT INTO cost_records ({', '.join(columns)}, ingested_at) "
        f"VALUES ({', '.join(mark for _ in range(len(columns) + 1))})"
    )
    steps = [s for migration in MIGRATIONS[dialect][:2] for s in migration]
    if dialect == "sqlite":
        conn = sqlite3.connect(url[len("sqlite:///") :])
        conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY)")
        for step in steps:
            assert isinstance(step, str)
            conn.execute(step)
        conn.executemany("INSERT INTO schema_migrations VALUES (?)", [(1,), (2,)])
        conn.executemany(insert_sql, rows)
        conn.commit()
        conn.close()
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as pg:
        pg.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY)")
        for step in steps:
            assert isinstance(step, str)
            pg.execute(step)
        pg.execute("INSERT INTO schema_migrations VALUES (1), (2)")
        with pg.cursor() as cur:
            cur.executemany(insert_sql, rows)


def test_migration_3_keeps_old_ids_and_stops_the_double_count(ledger_url: str) -> None:
    unpriced = record(pricing_status="unpriced", price_id=None, billed_cost=None, list_cost=None)
    priced = record()  # the same usage, billed again once a price appeared (the old bug)
    other = record(
        bucket="input", quantity=86, billed_cost=Decimal("0.000215"), list_cost=Decimal("0.000215")
    )
    _old_ledger(ledger_url, [unpriced, priced, other])
    ledger = open_ledger(ledger_url)
    try:
        stored = sorted(ledger.records(), key=lambda r: r.bucket)
        # Old records keep the ids they were stored (and exported) under.
        assert {r.id for r in stored} == {_old_id(unpriced), _old_id(priced), _old_id(other)}
        # The same usage delivered again is now known, whatever its price.
        assert insert(ledger, [record(), unpriced, record(bucket="input", quantity=86)]) == []
        assert ledger.count() == 3
        # reprice reports the pair stored twice before, and adjusts neither.
        result = LedgerPricer(ledger, Catalog()).reprice(dry_run=True)
        assert sorted(result.duplicates) == sorted([_old_id(unpriced), _old_id(priced)])
        assert [a.adjusts for a in result.adjustments] == []
    finally:
        ledger.close()


# --- migration 4: usage keys indexed for old records only ---------------------------------
def _legacy_ledger(url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, CostRecord]:
    """A ledger at migration 3 holding records stored before it (old ids, `_old_ledger`):
    one usage stored twice (unpriced, then priced), and another. Not yet migrated to 4."""
    stored = {
        "unpriced": record(
            pricing_status="unpriced", price_id=None, billed_cost=None, list_cost=None
        ),
        "priced": record(),  # the same usage, billed again once a price appeared (the old bug)
        "other": record(
            bucket="input",
            quantity=86,
            billed_cost=Decimal("0.000215"),
            list_cost=Decimal("0.000215"),
        ),
    }
    _old_ledger(url, list(stored.values()))
    dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
    with monkeypatch.context() as patch:
        patch.setitem(MIGRATIONS, dialect, MIGRATIONS[dialect][:3])
        open_ledger(url).close()
    assert _migration_versions(url) == [1, 2, 3]
    assert "cost_records_usage_key" in _indexes(url)
    return stored


def _indexes(url: str) -> set[str]:
    """The names of cost_records' indexes, the primary key's excepted."""
    if url.startswith("sqlite:///"):
        lite = sqlite3.connect(url[len("sqlite:///") :])
        try:
            rows = lite.execute("SELECT name FROM pragma_index_list('cost_records')").fetchall()
        finally:
            lite.close()
        return {r[0] for r in rows} - {"sqlite_autoindex_cost_records_1"}
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT indexname FROM pg_indexes "
            "WHERE tablename = 'cost_records' AND schemaname = current_schema()"
        ).fetchall()
    return {r[0] for r in rows} - {"cost_records_pkey"}


def _sql(url: str, statement: str) -> None:
    """One statement on the ledger's database, outside any ledger (``?`` placeholders)."""
    if url.startswith("sqlite:///"):
        lite = sqlite3.connect(url[len("sqlite:///") :], isolation_level=None)
        try:
            lite.execute(statement)
        finally:
            lite.close()
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)


INDEXES_4 = {
    "cost_records_period",
    "cost_records_tenant",
    "cost_records_adjusts",
    "cost_records_legacy_usage_key",
}


# Indexes that hold some records only: old records' usage keys, adjustments.
PARTIAL_4 = {"cost_records_adjusts", "cost_records_legacy_usage_key"}


def _partial_indexes(url: str) -> set[str]:
    if url.startswith("sqlite:///"):
        lite = sqlite3.connect(url[len("sqlite:///") :])
        try:
            rows = lite.execute(
                "SELECT name FROM pragma_index_list('cost_records') WHERE partial"
            ).fetchall()
        finally:
            lite.close()
        return {r[0] for r in rows}
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'cost_records' "
            "AND schemaname = current_schema() AND indexdef LIKE '% WHERE %'"
        ).fetchall()
    return {r[0] for r in rows}


def test_migration_4_indexes_usage_keys_of_old_records_only(
    ledger_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}" if ledger_url.startswith("sqlite") else None
    if fresh is not None:  # a fresh SQLite ledger beside the migrated one
        open_ledger(fresh).close()
        assert _indexes(fresh) == INDEXES_4
        assert _partial_indexes(fresh) == PARTIAL_4
    _legacy_ledger(ledger_url, monkeypatch)
    assert "cost_records_adjusts" not in _partial_indexes(ledger_url)
    open_ledger(ledger_url).close()
    assert _migration_versions(ledger_url) == [1, 2, 3, 4, 5]
    assert _indexes(ledger_url) == INDEXES_4
    assert _partial_indexes(ledger_url) == PARTIAL_4


def test_migration_4_on_a_fresh_postgres_ledger(pg_url: str) -> None:
    open_ledger(pg_url).close()
    assert _indexes(pg_url) == INDEXES_4
    assert _partial_indexes(pg_url) == PARTIAL_4


def test_the_adjustments_of_a_record_are_found_by_the_partial_index(tmp_path: Path) -> None:
    """Usage records (``adjusts`` NULL) are not in the index; a lookup by the record
    adjusted still uses it."""
    ledger = SQLiteLedger(str(tmp_path / "ledger.db"))
    try:
        plan = [
            row[3]
            for row in ledger._conn.execute(
                "EXPLAIN QUERY PLAN SELECT id FROM cost_records WHERE adjusts = ?", ["x"]
            )
        ]
    finally:
        ledger.close()
    assert plan == ["SEARCH cost_records USING INDEX cost_records_adjusts (adjusts=?)"]


def test_after_migration_4_a_usage_stored_before_migration_3_is_not_stored_again(
    ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = _legacy_ledger(ledger_url, monkeypatch)
    ledger = open_ledger(ledger_url)
    try:
        # The usage of an old record, delivered again: its id is the old record's usage key,
        # which no primary key holds. Refused, and reported as not new.
        assert insert(ledger, [record()]) == []
        assert insert(ledger, [old["unpriced"]]) == []
        assert insert(ledger, [record(bucket="input", quantity=86)]) == []
        assert ledger.count() == 3
        # Mixed with new usage (the SQLite bulk insert falls back to one by one): only the
        # new ones are written, and reported, in order.
        fresh = [record(bucket="output", quantity=5), record(bucket="reasoning", quantity=7)]
        batch = [fresh[0], record(), fresh[1], record(bucket="input", quantity=86)]
        assert insert(ledger, batch) == fresh
        assert insert(ledger, batch) == []
        assert ledger.count() == 5
        assert {r.id for r in ledger.records()} == {
            *(_old_id(r) for r in old.values()),
            *(r.id for r in fresh),
        }
    finally:
        ledger.close()


def test_after_migration_4_old_records_keep_unique_usage_keys(
    ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:

    old = _legacy_ledger(ledger_url, monkeypatch)
    ledger = open_ledger(ledger_url)
    try:
        stored = {r.id: r for r in ledger.records()}
        priced = stored[_old_id(old["priced"])]  # left without a usage key by migration 3
        # Two old records with one usage key: the partial unique index refuses it.
        errors: tuple[type[BaseException], ...] = (sqlite3.IntegrityError,)
        if not ledger_url.startswith("sqlite"):
            import psycopg

            errors = (psycopg.errors.UniqueViolation,)
        with pytest.raises(errors):
            _sql(
                ledger_url,
                f"UPDATE cost_records SET usage_key = '{priced.usage_key}' "
                f"WHERE id = '{priced.id}'",
            )
        # An old record inserted again (no writer does this), under another old id: refused
        # by the index too, and reported as not new.
        again = replace(stored[_old_id(old["other"])], stored_id="f" * 64)
        assert insert(ledger, [again]) == []
        # An old-style record whose usage key is a new record's id: refused by the insert.
        new = record(bucket="output", quantity=5)
        assert insert(ledger, [new]) == [new]
        assert insert(ledger, [replace(new, stored_id="e" * 64)]) == []
        # ... and in one batch, the first of the two is the one written, either way round.
        first, second = record(bucket="reasoning"), record(bucket="reasoning", quantity=9)
        assert insert(ledger, [first, replace(second, stored_id="d" * 64)]) == [first]
        third = record(bucket="cache_write_5m", quantity=3)
        old_style = replace(third, stored_id="c" * 64)
        assert insert(ledger, [old_style, third]) == [old_style]
        assert insert(ledger, [third]) == []
        assert ledger.count() == 6
        # reprice still reports the usage stored twice before migration 3.
        result = LedgerPricer(ledger, Catalog()).reprice(dry_run=True)
        assert sorted(result.duplicates) == sorted(
            [_old_id(old["unpriced"]), _old_id(old["priced"])]
        )
    finally:
        ledger.close()


def test_migration_4_again_or_by_two_processes_at_once_is_harmless(
    ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    _legacy_ledger(ledger_url, monkeypatch)
    start = threading.Barrier(2)
    failures: list[BaseException] = []

    def migrate() -> None:
        try:
            start.wait(timeout=30)
            open_ledger(ledger_url).close()
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=migrate) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert failures == []
    assert _migration_versions(ledger_url) == [1, 2, 3, 4, 5]
    # Its statements run again on a migrated ledger: nothing changes.
    for step in MIGRATIONS["sqlite" if ledger_url.startswith("sqlite") else "postgresql"][3]:
        assert isinstance(step, str)
        _sql(ledger_url, step)
    assert _indexes(ledger_url) == INDEXES_4
    ledger = open_ledger(ledger_url)
    try:
        assert ledger.count() == 3
        assert insert(ledger, [record()]) == []
    finally:
        ledger.close()


def test_the_sqlite_insert_probes_the_partial_index(tmp_path: Path) -> None:
    """The check for old records' usage keys is an index probe, not a table scan."""
    from otel_tokens.ledger._schema import RECORD_COLUMNS
    from otel_tokens.ledger.sqlite import _INSERT

    ledger = SQLiteLedger(str(tmp_path / "ledger.db"))
    try:
        plan = [
            row[3]
            for row in ledger._conn.execute(
                f"EXPLAIN QUERY PLAN {_INSERT}", ["x"] * (len(RECORD_COLUMNS) + 1)
            )
        ]
    finally:
        ledger.close()
    assert "SEARCH c USING INDEX cost_records_legacy_usage_key (usage_key=?)" in plan
    assert not [step for step in plan if step.startswith("SCAN c")]


def test_an_old_record_inserted_again_waits_for_a_concurrent_insert_of_its_usage(
    pg_url: str,
) -> None:
    """PostgreSQL: an old-style row (usage key other than id) and the same usage inserted
    by another transaction at once: one of them is stored, whichever commits first."""
    import threading

    first, second = open_ledger(pg_url), open_ledger(pg_url)
    try:
        for n, (winner, loser) in enumerate(
            [
                (record(bucket="output"), replace(record(bucket="output"), stored_id="a" * 64)),
                (replace(record(bucket="input"), stored_id="b" * 64), record(bucket="input")),
            ]
        ):
            results: list[list[CostRecord]] = []
            with first.transaction() as tx:
                assert tx.insert([winner]) == [winner]
                waiting = threading.Thread(
                    target=lambda out=results, rec=loser: out.append(insert(second, [rec]))
                )
                waiting.start()
                waiting.join(timeout=0.5)
                assert waiting.is_alive()  # blocked until the first commits
            waiting.join(timeout=30)
            assert results == [[]]
            assert first.count() == n + 1
    finally:
        first.close()
        second.close()


# --- PostgreSQL: new records copied straight into the table -------------------------------
def _staging_table_exists(ledger: Ledger) -> bool:
    """Whether this ledger's connection ever staged a batch (its temporary table)."""
    with ledger.transaction() as tx:
        tx.cur.execute("SELECT to_regclass('pg_temp.otel_tokens_batch') IS NOT NULL")
        return bool(tx.cur.fetchone()[0])


def test_postgres_copies_a_batch_of_new_records_without_staging(pg_url: str) -> None:
    ledger = open_ledger(pg_url)
    try:
        batch = [record(bucket="input"), record(bucket="output"), record(bucket="cache_read")]
        assert insert(ledger, batch) == batch
        assert not _staging_table_exists(ledger)
        assert sorted(r.id for r in ledger.records()) == sorted(r.id for r in batch)
    finally:
        ledger.close()


def test_postgres_a_batch_with_a_known_record_is_undone_and_staged(pg_url: str) -> None:
    """One known id fails the COPY: nothing of it stays, and the staged insert writes the
    others, each once, in the same transaction as the marks."""
    ledger = open_ledger(pg_url)
    try:
        known, fresh = record(bucket="input"), record(bucket="output")
        assert insert(ledger, [known]) == [known]
        with ledger.transaction() as tx:
            tx.set_mark("stream-a", 0, 10, 5)
            assert tx.insert([fresh, known]) == [fresh]
        assert _staging_table_exists(ledger)
        assert sorted(r.id for r in ledger.records()) == sorted([known.id, fresh.id])
        with ledger.transaction() as tx:
            assert tx.mark("stream-a", 0) == (10, 5)  # the transaction went on and committed
        # Records sharing an id in one batch: the first is written (staged, as before).
        other = record(bucket="reasoning")
        twin = replace(other, quantity=other.quantity + 1)
        assert insert(ledger, [other, twin]) == [other]
        assert [r.quantity for r in ledger.records() if r.id == other.id] == [other.quantity]
    finally:
        ledger.close()


def test_postgres_a_new_record_waits_for_a_concurrent_copy_of_the_same_usage(
    pg_url: str,
) -> None:
    """Two transactions copying the same new record at once: the second waits for the
    first; once that commits, the second's COPY fails and its staged insert writes only
    what is new. Stored once."""
    import threading

    first, second = open_ledger(pg_url), open_ledger(pg_url)
    try:
        shared, own = record(bucket="input"), record(bucket="output")
        results: list[list[CostRecord]] = []
        with first.transaction() as tx:
            assert tx.insert([shared]) == [shared]
            waiting = threading.Thread(target=lambda: results.append(insert(second, [own, shared])))
            waiting.start()
            waiting.join(timeout=0.5)
            assert waiting.is_alive()  # blocked on the uncommitted id
        waiting.join(timeout=30)
        assert results == [[own]]
        assert sorted(r.id for r in first.records()) == sorted([shared.id, own.id])
    finally:
        first.close()
        second.close()


def test_postgres_looks_for_old_records_in_the_partial_index(pg_url: str) -> None:
    """The check for records stored before migration 3 is an index probe, not a scan of
    every record (which cost ~50 ms per batch at 200,000 records)."""
    import psycopg

    from otel_tokens.ledger.postgres import _HAS_OLD

    ledger = open_ledger(pg_url)
    try:
        insert(ledger, [record(stream_id=f"s{i}") for i in range(3000)])
    finally:
        ledger.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for analyzed in (False, True):
            if analyzed:
                conn.execute("ANALYZE cost_records")
            plan = "\n".join(r[0] for r in conn.execute(f"EXPLAIN {_HAS_OLD}").fetchall())
            assert "Index Only Scan using cost_records_legacy_usage_key" in plan, plan


def test_sqlite_inserts_without_probes_when_the_ledger_holds_no_old_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ledger created since migration 3: the plain insert (no probe per row); one holding
    records stored before it: the guarded insert (which its own tests hold to exactly once).
    The look for old records reads the partial index, not the table."""
    from otel_tokens.ledger.sqlite import _HAS_OLD

    def statements(ledger: SQLiteLedger, records: list[CostRecord]) -> list[str]:
        seen: list[str] = []
        ledger._conn.set_trace_callback(seen.append)
        try:
            insert(ledger, records)
        finally:
            ledger._conn.set_trace_callback(None)
        return [s for s in seen if s.startswith("INSERT OR IGNORE INTO cost_records")]

    ledger = SQLiteLedger(str(tmp_path / "new.db"))
    try:
        plan = [row[3] for row in ledger._conn.execute(f"EXPLAIN QUERY PLAN {_HAS_OLD}")]
        assert plan == ["SCAN cost_records USING INDEX cost_records_legacy_usage_key"]
        done = statements(ledger, [record(bucket="input"), record(bucket="output")])
        assert done and not [s for s in done if "NOT EXISTS" in s]
    finally:
        ledger.close()
    url = f"sqlite:///{tmp_path / 'old.db'}"
    _legacy_ledger(url, monkeypatch)
    ledger = SQLiteLedger(str(tmp_path / "old.db"))
    try:
        done = statements(ledger, [record(bucket="cache_read")])
        assert done and all("NOT EXISTS" in s for s in done)
    finally:
        ledger.close()
