"""PostgreSQL ledger: many collector replicas may write to one database, exactly once.

Cumulative streams are serialised by a row lock on their mark (``SELECT ... FOR UPDATE``);
records are inserted with ``ON CONFLICT (id) DO NOTHING``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from ..records import CostRecord
from ._base import LedgerError, iso, record_row, row_record
from ._schema import MIGRATIONS, RECORD_COLUMNS

_INSERT = (
    f"INSERT INTO cost_records ({', '.join(RECORD_COLUMNS)}, ingested_at) "
    f"VALUES ({', '.join('%s' for _ in RECORD_COLUMNS)}, %s) ON CONFLICT (id) DO NOTHING"
)
_LOCK_ID = 0x6F746B6E  # advisory lock that serialises migrations across replicas


class _Tx:
    def __init__(self, cur: Any) -> None:
        self.cur = cur

    def mark(self, stream_id: str, start_ns: int) -> tuple[int, int] | None:
        # Create the row if missing so that FOR UPDATE has something to lock: two replicas
        # receiving the same stream then take turns instead of both billing it.
        self.cur.execute(
            "INSERT INTO stream_marks (stream_id, start_ns, time_ns, value) "
            "VALUES (%s, %s, -1, 0) ON CONFLICT DO NOTHING",
            (stream_id, start_ns),
        )
        self.cur.execute(
            "SELECT time_ns, value FROM stream_marks WHERE stream_id = %s AND start_ns = %s "
            "FOR UPDATE",
            (stream_id, start_ns),
        )
        time_ns, value = self.cur.fetchone()
        return None if time_ns < 0 else (int(time_ns), int(value))

    def set_mark(self, stream_id: str, start_ns: int, time_ns: int, value: int) -> None:
        # An upsert, as in SQLite: a mark set without reading it first is not lost.
        self.cur.execute(
            "INSERT INTO stream_marks (stream_id, start_ns, time_ns, value) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (stream_id, start_ns) "
            "DO UPDATE SET time_ns = excluded.time_ns, value = excluded.value",
            (stream_id, start_ns, time_ns, value),
        )

    def insert(self, records: Sequence[CostRecord]) -> list[CostRecord]:
        now = datetime.now(UTC)
        new = []
        for record in records:
            self.cur.execute(_INSERT, record_row(record, now))
            if self.cur.rowcount:
                new.append(record)
        return new


class PostgresLedger:
    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError as exc:
            raise LedgerError(
                "the PostgreSQL ledger needs psycopg: pip install 'otel-tokens[postgres]'"
            ) from exc
        self.url = url
        self._psycopg = psycopg
        try:
            self._conn = self._connect()
            self._migrate()
        except psycopg.Error as exc:
            raise LedgerError(f"cannot open ledger {_redact(url)}: {exc}") from exc
        self._lock = threading.Lock()  # one connection: one transaction at a time

    def _connect(self) -> Any:
        # autocommit: every transaction is an explicit conn.transaction() block. A bounded
        # connect timeout unless the URL sets one: a dead server must not hang the caller.
        kwargs: dict[str, Any] = {"autocommit": True}
        if "connect_timeout" not in self.url:
            kwargs["connect_timeout"] = 10
        return self._psycopg.connect(self.url, **kwargs)

    def _live(self) -> Any:
        """The connection, reopened if it was lost (restart, failover, idle kill)."""
        if self._conn.closed or self._conn.broken:
            try:
                self._conn = self._connect()
            except self._psycopg.Error as exc:
                raise LedgerError(f"cannot reconnect to ledger {_redact(self.url)}: {exc}") from exc
        return self._conn

    def _migrate(self) -> None:
        with self._conn.transaction(), self._conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)"
            )
            cur.execute("SELECT version FROM schema_migrations")
            done = {row[0] for row in cur.fetchall()}
            for version, statements in enumerate(MIGRATIONS["postgresql"], start=1):
                if version in done:
                    continue
                for statement in statements:
                    cur.execute(statement)
                cur.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))

    @contextmanager
    def transaction(self) -> Iterator[_Tx]:
        with self._lock:
            conn = self._live()
            with conn.transaction(), conn.cursor() as cur:
                yield _Tx(cur)

    def records(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> Iterator[CostRecord]:
        sql = f"SELECT {', '.join(RECORD_COLUMNS)} FROM cost_records WHERE TRUE"
        params: list[str] = []
        if since is not None:
            sql += " AND period_end > %s"
            params.append(iso(since))
        if until is not None:
            sql += " AND period_end <= %s"
            params.append(iso(until))
        sql += " ORDER BY period_end, id"
        with self._lock, self._live().cursor() as cur:
            cur.execute(sql, params)
            rows = cur.fetchall()
        for row in rows:
            yield row_record(row)

    def count(self) -> int:
        with self._lock, self._live().cursor() as cur:
            cur.execute("SELECT count(*) FROM cost_records")
            (n,) = cur.fetchone() or (0,)
        return int(n)

    def close(self) -> None:
        self._conn.close()


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)
