"""The SQLite ledger keeps the marks it committed in memory (issue 15) while no other
connection writes the file: a batch of known streams reads no mark, and the ledger stays
exact when another ledger (or a rolled-back transaction) changed the marks."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from _points import BASE_ATTRS
from otel_tokens import semconv as sc
from otel_tokens.ledger import SQLiteLedger
from otel_tokens.ledger.sqlite import _MarkCache
from otel_tokens.metering import LedgerPricer, TokenPoint
from otel_tokens.records import stream_id

T0 = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z
MIN = 60 * 10**9


def _export(streams: int, e: int) -> list[TokenPoint]:
    """Export ``e`` (1, 2, ...) of ``streams`` cumulative series: value 100 * e each."""
    out = []
    for s in range(streams):
        attributes = {**BASE_ATTRS, sc.BILLING_TOKEN_BUCKET: "input", sc.BILLING_TENANT_ID: f"t{s}"}
        sid = stream_id({"attributes": attributes, "metric": sc.METRIC_BILLING_TOKENS})
        out.append(TokenPoint(sid, attributes, {}, T0, T0 + e * MIN, 100 * e, True))
    return out


def _quantity(ledger: SQLiteLedger) -> int:
    return sum(r.quantity for r in ledger.records())


def test_known_streams_read_no_mark(tmp_path: Path) -> None:
    ledger = SQLiteLedger(str(tmp_path / "l.db"))
    pricer = LedgerPricer(ledger)
    pricer.ingest(_export(200, 1))
    statements: list[str] = []
    ledger._conn.set_trace_callback(statements.append)
    result = pricer.ingest(_export(200, 2))
    ledger._conn.set_trace_callback(None)
    assert len(result.records) == 200
    assert not [s for s in statements if "FROM stream_marks" in s]
    assert _quantity(ledger) == 200 * 200
    ledger.close()


def test_two_ledgers_on_one_file_interleaving_stay_exact(tmp_path: Path) -> None:
    """Each sees the other's commits (data_version): no interval billed twice or lost."""
    a, b = SQLiteLedger(str(tmp_path / "l.db")), SQLiteLedger(str(tmp_path / "l.db"))
    pa, pb = LedgerPricer(a), LedgerPricer(b)
    written = 0
    for e in range(1, 9):
        # a, b, b, a, a, b, b, a: each ledger's cache goes stale in turn.
        pricer = pa if e % 4 in (0, 1) else pb
        written += len(pricer.ingest(_export(50, e)).records)
    assert written == 50 * 8
    assert _quantity(a) == 50 * 800  # the last value of every stream, once
    periods = sorted((r.stream_id, r.period_start, r.period_end) for r in a.records())
    for (s1, _, end), (s2, start, _) in itertools.pairwise(periods):
        assert s1 != s2 or end <= start
    a.close()
    b.close()


def test_a_rolled_back_transaction_leaves_no_mark_in_memory(tmp_path: Path) -> None:
    ledger = SQLiteLedger(str(tmp_path / "l.db"))
    pricer = LedgerPricer(ledger)
    pricer.ingest(_export(10, 1))
    point = _export(10, 5)[0]
    with pytest.raises(RuntimeError), ledger.transaction() as tx:
        assert tx.mark(point.stream_id, point.start_ns) == (T0 + MIN, 100)
        tx.set_mark(point.stream_id, point.start_ns, point.time_ns, point.value)
        raise RuntimeError("rolled back")
    # Export 2 is after the committed mark (export 1), not the rolled-back one (export 5).
    assert len(pricer.ingest(_export(10, 2)).records) == 10
    assert _quantity(ledger) == 10 * 200
    ledger.close()


def test_a_mark_written_by_another_connection_is_read(tmp_path: Path) -> None:
    """Any other writer (a repair, another tool) invalidates the cache, not only a ledger."""
    import sqlite3

    ledger = SQLiteLedger(str(tmp_path / "l.db"))
    pricer = LedgerPricer(ledger)
    pricer.ingest(_export(10, 1))
    other = sqlite3.connect(tmp_path / "l.db")
    with other:
        other.execute("UPDATE stream_marks SET time_ns = ?, value = 300", (T0 + 3 * MIN,))
    other.close()
    assert pricer.ingest(_export(10, 2)).records == []  # before the other's marks
    assert len(pricer.ingest(_export(10, 4)).records) == 10
    assert _quantity(ledger) == 10 * 100 + 10 * 100
    ledger.close()


def test_the_cache_is_bounded_and_keeps_the_newest() -> None:
    cache = _MarkCache(entries=100)
    for i in range(1000):
        cache.commit({(f"s{i}", 0): (i, i)})
        assert len(cache.marks) <= 100
    assert (f"s{999}", 0) in cache.marks
    assert (f"s{0}", 0) not in cache.marks


def test_the_wal_is_checkpointed_off_the_commit_path(tmp_path: Path) -> None:
    """After commits a connection of its own copies the WAL into the database file; the
    writer's automatic checkpoint is only a backstop at a large WAL (`_checkpoint`)."""
    import time

    path = tmp_path / "l.db"
    ledger = SQLiteLedger(str(path))
    assert ledger._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 16_384
    checkpointer = ledger._checkpointer
    assert checkpointer is not None
    size = path.stat().st_size
    pricer = LedgerPricer(ledger)
    for e in range(1, 4):
        pricer.ingest(_export(300, e))
    deadline = time.monotonic() + 10
    while checkpointer.checkpoints < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert checkpointer.checkpoints >= 1
    while path.stat().st_size <= size and time.monotonic() < deadline:
        time.sleep(0.01)
    assert path.stat().st_size > size  # the records reached the database file
    assert _quantity(ledger) == 300 * 300
    ledger.close()
    assert not checkpointer._thread.is_alive()
    assert _quantity(SQLiteLedger(str(path))) == 300 * 300
