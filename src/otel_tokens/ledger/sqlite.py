"""SQLite ledger: embedded, WAL mode, one writer at a time (BEGIN IMMEDIATE)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from ..records import CostRecord
from ._base import LedgerError, driver_errors, record_row, records_query, row_record
from ._schema import MIGRATIONS, RECORD_COLUMNS

_INSERT = (
    f"INSERT OR IGNORE INTO cost_records ({', '.join(RECORD_COLUMNS)}, ingested_at) "
    f"VALUES ({', '.join('?' for _ in RECORD_COLUMNS)}, ?)"
)


class _Tx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def mark(self, stream_id: str, start_ns: int) -> tuple[int, int] | None:
        row = self.conn.execute(
            "SELECT time_ns, value FROM stream_marks WHERE stream_id = ? AND start_ns = ?",
            (stream_id, start_ns),
        ).fetchone()
        return None if row is None else (int(row[0]), int(row[1]))

    def set_mark(self, stream_id: str, start_ns: int, time_ns: int, value: int) -> None:
        self.conn.execute(
            "INSERT INTO stream_marks (stream_id, start_ns, time_ns, value) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (stream_id, start_ns) DO UPDATE SET time_ns = excluded.time_ns, "
            "value = excluded.value",
            (stream_id, start_ns, time_ns, value),
        )

    def insert(self, records: Sequence[CostRecord]) -> list[CostRecord]:
        now = datetime.now(UTC)
        new = []
        for record in records:
            if self.conn.execute(_INSERT, record_row(record, now)).rowcount:
                new.append(record)
        return new


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
            self._migrate()
        except (sqlite3.Error, OSError) as exc:
            raise LedgerError(f"cannot open ledger {self.url}: {exc}") from exc
        self._lock = threading.Lock()

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
                yield _Tx(conn)
                conn.execute("COMMIT")
            except BaseException:
                # Also when COMMIT itself fails (disk full, I/O error): never leave the
                # connection inside a transaction, or every later BEGIN would fail.
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

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
            self._conn.close()
