"""SQLite ledger: embedded, WAL mode, one writer at a time (BEGIN IMMEDIATE).

The marks this ledger committed stay in memory (`_MarkCache`) while no other connection
writes the database: ``PRAGMA data_version``, read once the write lock is held, tells.
A batch whose streams are all known then reads no mark from the database.
"""

from __future__ import annotations

import itertools
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from ..records import CostRecord
from ._base import (
    USAGE_KEY,
    LedgerError,
    driver_errors,
    has_old_style,
    record_row,
    records_query,
    row_record,
)
from ._checkpoint import BACKSTOP_PAGES, Checkpointer
from ._schema import MIGRATIONS, RECORD_COLUMNS

# ``OR IGNORE``: a known id (or a usage key of a record stored before migration 3, in the
# partial unique index) inserts nothing. Since migration 4 the usage key is unique only
# among those old records (a new record's usage key is its id, the primary key), so the
# statement itself refuses the cross cases: a record whose usage key is an old record's
# (a probe of that partial index, which is empty in a ledger created since), and,
# defensively, a record with a usage key other than its id (an old record inserted again)
# whose usage key is some record's id. A row so refused changes nothing, as an ignored one.
# ``?1`` is the id and ``?{_KEY}`` the usage key, in `record_row` order.
_KEY = USAGE_KEY + 1
_INSERT = (
    f"INSERT OR IGNORE INTO cost_records ({', '.join(RECORD_COLUMNS)}, ingested_at) "
    f"SELECT {', '.join(f'?{i}' for i in range(1, len(RECORD_COLUMNS) + 2))} "
    "WHERE NOT EXISTS (SELECT 1 FROM cost_records c "
    f"WHERE c.usage_key = ?{_KEY} AND c.usage_key <> c.id) "
    f"AND NOT (?{_KEY} <> ?1 AND EXISTS (SELECT 1 FROM cost_records c WHERE c.id = ?{_KEY}))"
)
# When the ledger holds no such old record (every ledger created since: the partial index
# is empty, which this reads) and the batch has no old-style row, the checks above are
# always true: the plain insert is the same, without a probe per row.
_INSERT_NEW = (
    f"INSERT OR IGNORE INTO cost_records ({', '.join(RECORD_COLUMNS)}, ingested_at) "
    f"VALUES ({', '.join('?' for _ in RECORD_COLUMNS)}, ?)"
)
_HAS_OLD = "SELECT 1 FROM cost_records WHERE usage_key <> id LIMIT 1"


# Streams whose marks one SELECT reads (bound parameters; SQLite allows 32,766).
_MARKS_PER_QUERY = 500
_UPSERT_MARK = (
    "INSERT INTO stream_marks (stream_id, start_ns, time_ns, value) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (stream_id, start_ns) DO UPDATE SET time_ns = excluded.time_ns, "
    "value = excluded.value"
)


# Marks kept in memory across transactions, at most: about 345 bytes each (100k streams,
# 34.5 MB; this bound, 86 MB). Past it the oldest are dropped and read again when needed.
_MARK_CACHE_ENTRIES = 250_000
# SQLite's page cache, in KiB (negative: a size, not pages); allocated as used. Records'
# ids are random hex: each insert lands on a random page of the primary key (before
# migration 4, of the usage-key index too), which at 1M records (~90 MB) misses the default
# 2 MB cache on nearly every row. 64 MB took 30-45% off the insert statement then, with both
# indexes (docs/collector.md, measured).
_PAGE_CACHE_KIB = 65_536

_Key = tuple[str, int]
_Mark = tuple[int, int]


class _MarkCache:
    """Marks as committed, valid while no other connection has written the database.

    Only committed marks enter it (`commit`), so a rolled-back transaction leaves nothing;
    `check` runs inside BEGIN IMMEDIATE, when no other writer can commit until we do."""

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self.marks: dict[_Key, _Mark] = {}
        self._version: int | None = None

    def check(self, conn: sqlite3.Connection) -> None:
        """Drop everything if another connection committed since our last transaction."""
        version = int(conn.execute("PRAGMA data_version").fetchone()[0])
        if version != self._version:
            self.marks.clear()
            self._version = version

    def commit(self, marks: dict[_Key, _Mark]) -> None:
        self.marks.update(marks)
        excess = len(self.marks) - self.entries
        if excess > 0:
            # Dicts keep insertion order: drop the oldest entries (and some slack, so
            # that this is not paid on every batch once full).
            drop = excess + self.entries // 2
            for key in list(itertools.islice(self.marks, drop)):
                del self.marks[key]

    def clear(self) -> None:
        self.marks.clear()
        self._version = None


class _Tx:
    """One transaction (BEGIN IMMEDIATE: the only writer). A batch's marks are read with a
    few queries (or found in the cache), kept here, and written with one ``executemany``
    before the commit; its records are inserted with one ``executemany`` too:
    per-statement overhead, not SQLite, was most of the time per point."""

    def __init__(self, conn: sqlite3.Connection, cache: _MarkCache) -> None:
        self.conn = conn
        self._cache = cache.marks
        # None: known to have no mark (a new stream).
        self._marks: dict[_Key, _Mark | None] = {}
        self._dirty: dict[_Key, _Mark] = {}
        # Marks read from the database in this transaction: current, so cacheable.
        self.read: dict[_Key, _Mark] = {}

    def prefetch(self, keys: Sequence[_Key]) -> None:
        """Read the marks of ``keys`` (stream id, start) at once."""
        wanted = set(keys) - self._marks.keys()
        cache = self._cache
        if cache:
            for key in [key for key in wanted if key in cache]:
                self._marks[key] = cache[key]
                wanted.discard(key)
        if not wanted:
            return
        for key in wanted:
            self._marks[key] = None
        streams = sorted({stream for stream, _ in wanted})
        for i in range(0, len(streams), _MARKS_PER_QUERY):
            part = streams[i : i + _MARKS_PER_QUERY]
            # By stream id only (the primary key's prefix, so the index is used); a
            # restarted stream's other start times are read too and ignored.
            rows = self.conn.execute(
                "SELECT stream_id, start_ns, time_ns, value FROM stream_marks "
                f"WHERE stream_id IN ({', '.join('?' * len(part))})",
                part,
            ).fetchall()
            for stream, start_ns, time_ns, value in rows:
                key = (stream, int(start_ns))
                if key in wanted:
                    self._marks[key] = self.read[key] = (int(time_ns), int(value))

    def mark(self, stream_id: str, start_ns: int) -> tuple[int, int] | None:
        key = (stream_id, start_ns)
        if key not in self._marks:
            self.prefetch([key])
        return self._marks[key]

    def set_mark(self, stream_id: str, start_ns: int, time_ns: int, value: int) -> None:
        key = (stream_id, start_ns)
        self._marks[key] = self._dirty[key] = (time_ns, value)

    def flush(self) -> dict[_Key, _Mark]:
        """Write the marks set in this transaction (before it commits); returns every mark
        this transaction knows as the database will hold it once committed."""
        known = self.read | self._dirty
        if self._dirty:
            self.conn.executemany(
                _UPSERT_MARK, [(*key, *self._dirty[key]) for key in sorted(self._dirty)]
            )
            self._dirty.clear()
        return known

    def insert(self, records: Sequence[CostRecord]) -> list[CostRecord]:
        if not records:
            return []
        now = datetime.now(UTC)
        rows = [record_row(record, now) for record in records]
        conn = self.conn
        old = has_old_style(rows) or conn.execute(_HAS_OLD).fetchone() is not None
        sql = _INSERT if old else _INSERT_NEW
        # All new (the usual case, checked by the count of rows changed): one statement.
        # Otherwise (a retried batch) undo it and insert one by one to know which were new.
        conn.execute("SAVEPOINT bulk_insert")
        before = conn.total_changes
        conn.executemany(sql, rows)
        if conn.total_changes - before == len(rows):
            conn.execute("RELEASE bulk_insert")
            return list(records)
        conn.execute("ROLLBACK TO bulk_insert")
        conn.execute("RELEASE bulk_insert")
        return [
            record
            for record, row in zip(records, rows, strict=True)
            if conn.execute(sql, row).rowcount
        ]


class SQLiteLedger:
    def __init__(self, path: str) -> None:
        self.url = f"sqlite:///{path}"
        self.path = path
        try:
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=30
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute(f"PRAGMA cache_size=-{_PAGE_CACHE_KIB}")
            self._migrate()
            # Checkpoints off the commit path (`_checkpoint`); in memory there is no WAL.
            self._checkpointer: Checkpointer | None = None
            if path != ":memory:":
                self._conn.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")
                self._checkpointer = Checkpointer(path)
        except (sqlite3.Error, OSError) as exc:
            raise LedgerError(f"cannot open ledger {self.url}: {exc}") from exc
        self._lock = threading.Lock()
        self._cache = _MarkCache(_MARK_CACHE_ENTRIES)

    def _migrate(self) -> None:
        conn = self._conn
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)")
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        for version, statements in enumerate(MIGRATIONS["sqlite"], start=1):
            if version in done:
                continue
            conn.execute("BEGIN IMMEDIATE")
            try:
                # Another process may have applied it while this one waited for the lock:
                # ALTER TABLE is not idempotent.
                if conn.execute(
                    "SELECT 1 FROM schema_migrations WHERE version = ?", (version,)
                ).fetchone():
                    conn.execute("COMMIT")
                    continue
                for step in statements:
                    if isinstance(step, str):
                        conn.execute(step)
                    else:
                        step(lambda sql, params: conn.execute(sql, params).fetchall())
                conn.execute(
                    "INSERT OR IGNORE INTO schema_migrations (version) VALUES (?)", (version,)
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    @contextmanager
    def transaction(self) -> Iterator[_Tx]:
        with driver_errors(sqlite3.Error, self.url), self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._cache.check(conn)
                tx = _Tx(conn, self._cache)
                yield tx
                marks = tx.flush()
                conn.execute("COMMIT")
            except BaseException:
                # Whether a failed COMMIT wrote anything is not known: forget every mark.
                self._cache.clear()
                # Also when COMMIT itself fails (disk full, I/O error): never leave the
                # connection inside a transaction, or every later BEGIN would fail.
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            self._cache.commit(marks)
            if self._checkpointer is not None:
                self._checkpointer.committed()

    def records(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> Iterator[CostRecord]:
        sql, params = records_query("?", since, until)
        with driver_errors(sqlite3.Error, self.url), self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        for row in rows:
            yield row_record(row)

    def count(self) -> int:
        with driver_errors(sqlite3.Error, self.url), self._lock:
            return int(self._conn.execute("SELECT count(*) FROM cost_records").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            if self._checkpointer is not None:
                self._checkpointer.close()
            self._conn.close()
