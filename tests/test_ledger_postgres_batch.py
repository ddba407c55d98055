"""The PostgreSQL ledger copies a batch's records (COPY into a temporary table of its
connection) and locks its marks in one statement (issue 15): each record written once,
whatever its text, however the transactions around it end."""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Iterator
from dataclasses import replace

import pytest

from _points import BASE_ATTRS
from otel_tokens import semconv as sc
from otel_tokens.ledger import Ledger, open_ledger
from otel_tokens.metering import LedgerPricer, TokenPoint
from otel_tokens.records import stream_id

T0 = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z
MIN = 60 * 10**9


@pytest.fixture
def ledger(pg_url: str) -> Iterator[Ledger]:
    opened = open_ledger(pg_url)
    yield opened
    opened.close()


def _export(streams: int, e: int, tenant: str = "t") -> list[TokenPoint]:
    out = []
    for s in range(streams):
        attributes = {
            **BASE_ATTRS,
            sc.BILLING_TOKEN_BUCKET: "input",
            sc.BILLING_TENANT_ID: f"{tenant}{s}",
        }
        sid = stream_id({"attributes": attributes, "metric": sc.METRIC_BILLING_TOKENS})
        out.append(TokenPoint(sid, attributes, {}, T0, T0 + e * MIN, 100 * e, True))
    return out


def test_any_text_round_trips_through_copy(ledger: Ledger) -> None:
    """COPY's text format escapes tabs, newlines, backslashes and its NULL marker."""
    tenant = 'a\tb\nc\\d \\N é "q" ,;'
    records = LedgerPricer(ledger).ingest(_export(3, 1, tenant=tenant)).records
    assert len(records) == 3
    stored = sorted(ledger.records(), key=lambda r: r.id)
    assert stored == sorted(records, key=lambda r: r.id)
    assert {r.tenant for r in stored} == {f"{tenant}{s}" for s in range(3)}


def test_of_records_sharing_an_id_in_a_batch_the_first_is_written(ledger: Ledger) -> None:
    record = LedgerPricer(ledger).record(_export(1, 1)[0], T0, 100)
    other = replace(record, feature="second")  # same usage, so the same id
    assert other.id == record.id
    with ledger.transaction() as tx:
        assert tx.insert([record, other]) == [record]
    assert [r.feature for r in ledger.records()] == [record.feature]


def test_two_inserts_in_one_transaction_write_each_record_once(ledger: Ledger) -> None:
    pricer = LedgerPricer(ledger)
    first = [pricer.record(p, T0, 100) for p in _export(4, 1)]
    second = [pricer.record(p, T0, 100) for p in _export(4, 1, tenant="u")]
    with ledger.transaction() as tx:
        assert tx.insert(first) == first
        assert tx.insert(second + first[:1]) == second
    assert ledger.count() == 8


def test_a_rolled_back_first_batch_does_not_break_the_next(ledger: Ledger) -> None:
    """The staging table created in a transaction that rolls back is gone with it."""
    pricer = LedgerPricer(ledger)
    records = [pricer.record(p, T0, 100) for p in _export(3, 1)]
    with pytest.raises(RuntimeError), ledger.transaction() as tx:
        tx.insert(records)
        raise RuntimeError("rolled back")
    assert ledger.count() == 0
    with ledger.transaction() as tx:
        assert tx.insert(records) == records
    assert ledger.count() == 3


def test_a_session_that_lost_its_temporary_tables_still_writes(ledger: Ledger) -> None:
    """A pooler resetting the session (DISCARD) between two batches: the staging table is
    made again, not assumed."""
    pricer = LedgerPricer(ledger)
    assert len(pricer.ingest(_export(5, 1)).records) == 5
    ledger._conn.execute("DISCARD TEMP")  # type: ignore[attr-defined]
    assert len(pricer.ingest(_export(5, 2)).records) == 5
    assert ledger.count() == 10


def test_marks_are_locked_in_one_statement_and_records_copied(ledger: Ledger) -> None:
    """What the server did for one batch, as its own command tags in libpq's trace: marks
    created or locked by one upsert (no separate SELECT ... FOR UPDATE), records copied."""
    pricer = LedgerPricer(ledger)
    pricer.ingest(_export(200, 1))
    conn = ledger._conn  # type: ignore[attr-defined]
    with tempfile.TemporaryFile("w+") as trace:
        conn.pgconn.trace(trace.fileno())
        result = pricer.ingest(_export(200, 2))
        conn.pgconn.untrace()
        os.fsync(trace.fileno())
        trace.seek(0)
        # Lines: time, F (from us) or B (from the server), length, message, its fields.
        fields = [line.rstrip("\n").split("\t") for line in trace]
    done = [f[4].strip(' "') for f in fields if len(f) > 4 and f[3] == "CommandComplete"]
    assert len(result.records) == 200
    # BEGIN, the marks (all 200 exist: each locked, moved to the batch's point and read by
    # one upsert, and not written again), the records (all new) copied straight into the
    # table under a savepoint, the look for records stored before migration 3 (none),
    # COMMIT.
    assert done == [
        "BEGIN",
        "INSERT 0 200",
        "SAVEPOINT",
        "COPY 200",
        "SELECT 0",
        "RELEASE",
        "COMMIT",
    ]


# --- marks moved by one statement (advance) ------------------------------------------------
def _stream(n: int) -> tuple[str, dict[str, str]]:
    attributes = {**BASE_ATTRS, sc.BILLING_TOKEN_BUCKET: "input", sc.BILLING_FEATURE: f"f{n}"}
    return stream_id({"attributes": attributes, "metric": sc.METRIC_BILLING_TOKENS}), attributes


def _random_batches(seed: int, batches: int = 40) -> list[list[TokenPoint]]:
    """Cumulative batches of 4 streams with what senders do: exports in order, retries (the
    same point again), late points, equal times of other values, resets (a lower value) and
    restarts (a new start time), several exports of a stream in one batch."""
    rng = random.Random(seed)
    starts = [T0] * 4
    clock = [0] * 4
    values = [0] * 4
    out: list[list[TokenPoint]] = []
    for _ in range(batches):
        batch: list[TokenPoint] = []
        for _ in range(rng.randint(1, 6)):
            s = rng.randrange(4)
            sid, attributes = _stream(s)
            kind = rng.random()
            if kind < 0.08:  # restart: a new start time, counting from zero
                starts[s] += 7 * MIN
                clock[s], values[s] = 0, 0
            if kind < 0.55 or clock[s] == 0:  # the next export
                clock[s] += rng.randint(1, 3)
                values[s] += rng.randint(0, 500)
            elif kind < 0.65:  # a reset: the value falls, the time goes on
                clock[s] += 1
                values[s] = rng.randint(0, 50)
            elif kind < 0.8:  # the same time again, maybe another value
                values[s] += rng.choice([0, 0, 3])
            else:  # a late point: an earlier time
                late = max(1, clock[s] - rng.randint(1, 2))
                at = starts[s] + late * MIN
                batch.append(TokenPoint(sid, attributes, {}, starts[s], at, values[s], True))
                continue
            at = starts[s] + clock[s] * MIN
            batch.append(TokenPoint(sid, attributes, {}, starts[s], at, values[s], True))
        out.append(batch)
    return out


def _billed(ledger: Ledger) -> list[tuple[str, str, str, int]]:
    return sorted(
        (r.id, r.period_start.isoformat(), r.period_end.isoformat(), r.quantity)
        for r in ledger.records()
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_marks_moved_in_one_statement_bill_as_the_sqlite_ledger(
    ledger: Ledger, tmp_path: os.PathLike[str], seed: int
) -> None:
    """PostgreSQL locks, moves and reads a batch's marks in one statement (`advance`);
    SQLite reads them, then writes what the batch set. The same batches bill the same
    records on both, and leave the same marks."""
    lite = open_ledger(f"sqlite:///{tmp_path}/ledger.db")
    try:
        for batch in _random_batches(seed):
            expect = LedgerPricer(lite).ingest(batch)
            got = LedgerPricer(ledger).ingest(batch)
            assert (len(got.records), got.unchanged) == (len(expect.records), expect.unchanged)
        assert _billed(ledger) == _billed(lite)
        with ledger.transaction() as pg_tx, lite.transaction() as lite_tx:
            for s in range(4):
                sid, _ = _stream(s)
                for start in range(T0, T0 + 8 * 7 * MIN, 7 * MIN):
                    assert pg_tx.mark(sid, start) == lite_tx.mark(sid, start)
    finally:
        lite.close()


def test_a_mark_moved_by_another_replica_is_read_after_its_commit(pg_url: str) -> None:
    """Two replicas moving one stream's mark at once: the second waits for the first's
    lock, then reads the mark the first wrote (not the one before), so it bills only what
    came after."""
    import threading

    first, second = open_ledger(pg_url), open_ledger(pg_url)
    try:
        sid, _ = _stream(0)
        with first.transaction() as tx:
            tx.advance([(sid, T0, T0 + MIN, 100)])  # type: ignore[attr-defined]
            assert tx.mark(sid, T0) is None  # a new stream: nothing before
            tx.set_mark(sid, T0, T0 + MIN, 100)
        seen: list[object] = []

        def later() -> None:
            with second.transaction() as tx2:
                tx2.advance([(sid, T0, T0 + 3 * MIN, 300)])  # type: ignore[attr-defined]
                seen.append(tx2.mark(sid, T0))
                tx2.set_mark(sid, T0, T0 + 3 * MIN, 300)

        with first.transaction() as tx:
            tx.advance([(sid, T0, T0 + 2 * MIN, 250)])  # type: ignore[attr-defined]
            assert tx.mark(sid, T0) == (T0 + MIN, 100)
            tx.set_mark(sid, T0, T0 + 2 * MIN, 250)
            waiting = threading.Thread(target=later)
            waiting.start()
            waiting.join(timeout=0.5)
            assert waiting.is_alive()  # blocked on the first's lock
        waiting.join(timeout=30)
        assert seen == [(T0 + 2 * MIN, 250)]
        with first.transaction() as tx:
            assert tx.mark(sid, T0) == (T0 + 3 * MIN, 300)
    finally:
        first.close()
        second.close()
