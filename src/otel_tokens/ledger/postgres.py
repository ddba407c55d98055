"""PostgreSQL ledger: many collector replicas may write to one database, exactly once.

Cumulative streams are serialised by a row lock on their mark (an upsert that creates or
locks every mark of a batch in one sorted order); records are inserted with ``ON CONFLICT
DO NOTHING`` (a known id or usage key).
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from ..records import CostRecord
from ._base import (
    LedgerError,
    driver_errors,
    has_old_style,
    record_row,
    records_query,
    row_record,
)
from ._schema import MIGRATIONS, RECORD_COLUMNS

# A batch's records are copied (COPY, text) into a temporary table of this connection, then
# inserted from it in one statement; ``RETURNING id`` names the records that were new. COPY
# costs the client a tenth of the CPU of binding the same rows as 29 arrays (``unnest``),
# and halves the wall time per batch (docs/collector.md). ``n`` keeps the batch's order: of
# records sharing an id, the first is the one written.
_COLUMNS = ", ".join((*RECORD_COLUMNS, "ingested_at"))
_STAGE = "otel_tokens_batch"
_CREATE_STAGE = (
    f"CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGE} (LIKE cost_records, n integer NOT NULL)"
)
_COPY = f"COPY {_STAGE} ({_COLUMNS}, n) FROM STDIN"
# Emptied by the same statement, so the next insert (same transaction or not) starts empty;
# a rolled-back COPY leaves nothing either. ``ON CONFLICT DO NOTHING``: a known id, or a
# usage key of a record stored before migration 3 (the partial unique index). Since
# migration 4 the usage key is unique only among those old records (a new record's usage
# key is its id, the primary key), so the statement itself refuses the cross cases: a
# record whose usage key is an old record's (a probe of that partial index, empty in a
# ledger created since), and a record with a usage key other than its id (an old record
# inserted again, see `_Tx.insert`) whose usage key is some record's id.
_INSERT = (
    f"WITH batch AS (DELETE FROM {_STAGE} RETURNING *) "
    f"INSERT INTO cost_records ({_COLUMNS}) SELECT {_COLUMNS} FROM batch b "
    "WHERE NOT EXISTS (SELECT 1 FROM cost_records c "
    "WHERE c.usage_key = b.usage_key AND c.usage_key <> c.id) "
    "AND NOT (b.usage_key <> b.id AND EXISTS (SELECT 1 FROM cost_records c "
    "WHERE c.id = b.usage_key)) "
    "ORDER BY n ON CONFLICT DO NOTHING RETURNING id"
)
# Creates the marks a batch lacks and locks those it has, in one statement and one sorted
# order (replicas never deadlock). The no-op update is what locks an existing mark and
# returns its latest committed value, even one committed after this statement began: a
# replica waiting on another's lock then reads the mark that replica wrote. Arrays are sent
# in binary (``%b``): psycopg's text dumper checks every element for quoting (about 4 µs
# per mark here, against under 1 µs).
_LOCK_MARKS = (
    "INSERT INTO stream_marks AS m (stream_id, start_ns, time_ns, value) "
    "SELECT stream_id, start_ns, -1, 0 FROM unnest(%b::text[], %b::bigint[]) "
    "AS k(stream_id, start_ns) ORDER BY stream_id, start_ns "
    "ON CONFLICT (stream_id, start_ns) DO UPDATE SET time_ns = m.time_ns "
    "RETURNING m.stream_id, m.start_ns, m.time_ns, m.value"
)
# The usual batch, all new, is copied straight into the table (`_Tx._copy_new`): no staging
# table, no speculative insertion, no anti-join; about a quarter of the server's CPU per
# record (docs/collector.md). A known id fails the COPY, which is then undone.
_COPY_NEW = f"COPY cost_records ({_COLUMNS}) FROM STDIN"
_SAVEPOINT = "otel_tokens_copy"
# Does the ledger hold records stored before migration 3 (usage key other than id)? Then a
# new record's usage key may be one of theirs, which only `_INSERT` checks. An index-only
# probe of the partial unique index, empty in a ledger created since: ``ORDER BY ... LIMIT``
# is what makes the planner take it (``EXISTS`` made it scan the whole table, expecting a
# match in the first rows).
_HAS_OLD = "SELECT usage_key FROM cost_records WHERE usage_key <> id ORDER BY usage_key LIMIT 1"
# A batch's marks advanced in one statement (`_Tx.advance`): each mark created, or locked
# and moved to the batch's latest point of its stream when that is later, and returned
# with the mark it replaced (``prev_*``: the row as this statement found it, after waiting
# for another replica's lock, so the latest committed). The marks are then written once per
# transaction, not locked by one row version and written by another (docs/collector.md).
_ADVANCE_MARKS = (
    "INSERT INTO stream_marks AS m (stream_id, start_ns, time_ns, value) "
    "SELECT * FROM unnest(%b::text[], %b::bigint[], %b::bigint[], %b::numeric[]) "
    "AS k(stream_id, start_ns, time_ns, value) ORDER BY stream_id, start_ns "
    "ON CONFLICT (stream_id, start_ns) DO UPDATE SET "
    "prev_time_ns = m.time_ns, prev_value = m.value, "
    "time_ns = CASE WHEN excluded.time_ns > m.time_ns THEN excluded.time_ns ELSE m.time_ns END, "
    "value = CASE WHEN excluded.time_ns > m.time_ns THEN excluded.value ELSE m.value END "
    "RETURNING m.stream_id, m.start_ns, m.time_ns, m.value, m.prev_time_ns, m.prev_value"
)
_LOCK_ID = 0x6F746B6E  # advisory lock that serialises migrations across replicas


class _Tx:
    """One transaction. Marks are read and locked for a whole batch at once, and written
    and inserted in pipelined batches: a few round trips per batch, not several per point."""

    def __init__(self, cur: Any, copy_new: _CopyNew) -> None:
        self.cur = cur
        self._copy = copy_new
        self._marks: dict[tuple[str, int], tuple[int, int]] = {}
        self._dirty: set[tuple[str, int]] = set()
        # Marks as `advance` wrote them: `flush` writes only those that differ.
        self._written: dict[tuple[str, int], tuple[int, int]] = {}

    def advance(self, latest: Sequence[tuple[str, int, int, int]]) -> None:
        """Lock the marks of a batch's streams and move each to ``latest``, its stream's
        last point (stream id, start, time, value), when that is later than the mark; read
        the marks they replace, which `mark` then returns. In one sorted statement.

        ``latest`` must be what the transaction will set the marks to: for each (stream,
        start), the first point of the latest time (as `set_mark` calls over the batch in
        time order leave it). A mark set otherwise is written by `flush`, as before."""
        ordered = sorted(k for k in latest if (k[0], k[1]) not in self._marks)
        if not ordered:
            return
        self.cur.execute(_ADVANCE_MARKS, tuple(list(c) for c in zip(*ordered, strict=True)))
        for stream_id, start_ns, time_ns, value, prev_time, prev_value in self.cur.fetchall():
            key = (stream_id, int(start_ns))
            self._written[key] = (int(time_ns), int(value))
            # A row this statement inserted has no mark before it (prev_* NULL: the update
            # sets them from the row it found, whose time is never NULL).
            self._marks[key] = (-1, 0) if prev_time is None else (int(prev_time), int(prev_value))

    def prefetch(self, keys: Sequence[tuple[str, int]]) -> None:
        """Create (if missing), lock and read the marks of ``keys``, in one sorted order."""
        ordered = sorted(set(keys) - self._marks.keys())
        if not ordered:
            return
        # A mark is created (time -1) where missing, so that there is a row to lock: two
        # replicas receiving the same stream then take turns instead of both billing it.
        self.cur.execute(_LOCK_MARKS, ([k[0] for k in ordered], [k[1] for k in ordered]))
        for stream_id, start_ns, time_ns, value in self.cur.fetchall():
            self._marks[(stream_id, int(start_ns))] = (int(time_ns), int(value))

    def mark(self, stream_id: str, start_ns: int) -> tuple[int, int] | None:
        key = (stream_id, start_ns)
        if key not in self._marks:
            self.prefetch([key])
        time_ns, value = self._marks[key]
        return None if time_ns < 0 else (time_ns, value)

    def set_mark(self, stream_id: str, start_ns: int, time_ns: int, value: int) -> None:
        key = (stream_id, start_ns)
        self._marks[key] = (time_ns, value)
        self._dirty.add(key)

    def flush(self) -> None:
        """Write the marks set in this transaction (before it commits), but those that
        `advance` already wrote as they are now."""
        written = self._written
        keys = sorted(k for k in self._dirty if written.get(k) != self._marks[k])
        self._dirty.clear()
        if not keys:
            return
        # An upsert, as in SQLite: a mark set without reading it first is not lost.
        self.cur.execute(
            "INSERT INTO stream_marks (stream_id, start_ns, time_ns, value) "
            "SELECT * FROM unnest(%b::text[], %b::bigint[], %b::bigint[], %b::numeric[]) "
            "ON CONFLICT (stream_id, start_ns) "
            "DO UPDATE SET time_ns = excluded.time_ns, value = excluded.value",
            (
                [k[0] for k in keys],
                [k[1] for k in keys],
                [self._marks[k][0] for k in keys],
                [self._marks[k][1] for k in keys],
            ),
        )

    def insert(self, records: Sequence[CostRecord]) -> list[CostRecord]:
        if not records:
            return []
        now = datetime.now(UTC)
        rows = [record_row(r, now) for r in records]
        old_style = has_old_style(rows)
        if not old_style and self._copy_new(rows):
            return list(records)
        # Every time (a catalog lookup once it exists): a rolled-back transaction takes the
        # CREATE with it, and a pooler or DISCARD may hand us a session without the table.
        self.cur.execute(_CREATE_STAGE)
        if old_style:
            inserted = self._insert_old(rows)
        else:
            with self.cur.copy(_COPY) as copy:
                for n, row in enumerate(rows):
                    copy.write_row((*row, n))
            self.cur.execute(_INSERT)
            inserted = {row[0] for row in self.cur.fetchall()}
        new = []
        for record, row in zip(records, rows, strict=True):
            if row[0] in inserted:  # the first of records sharing an id is the one written
                inserted.discard(row[0])
                new.append(record)
        return new

    def _copy_new(self, rows: list[tuple[Any, ...]]) -> bool:
        """Copy ``rows`` straight into cost_records if every one is new; False (and nothing
        written) if one is not, or if the ledger holds records stored before migration 3.

        A known id (or one inserted by another transaction not yet committed: the COPY waits
        for it) fails the COPY, which the savepoint undoes. The ledger's old records are
        looked for after the COPY: from then on this transaction's lock on the table keeps
        out the only writer of old-style rows (`_insert_old` locks the table against every
        writer), so none can appear unseen before the commit."""
        copy_new = self._copy
        if not copy_new.allowed or len({row[0] for row in rows}) != len(rows):
            return False  # records sharing an id: the staged insert keeps the first
        cur = self.cur
        cur.execute(f"SAVEPOINT {_SAVEPOINT}")
        try:
            with cur.copy(_COPY_NEW) as copy:
                for row in rows:
                    copy.write_row(row)
            cur.execute(_HAS_OLD)
            written = cur.fetchone() is None
            if not written:
                copy_new.allowed = False  # old records stay: don't try again
        except copy_new.unique_violation:
            written = False
        if not written:
            cur.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
        cur.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
        return written

    def _insert_old(self, rows: list[tuple[Any, ...]]) -> set[str]:
        """Rows of which some are records stored before migration 3 (usage key other than
        id), inserted again: no writer does this, but should one, it stays exactly once.

        Their ``NOT EXISTS`` cannot see a row inserted concurrently, nor one inserted by
        the same statement, which the unique index on usage keys did. So: the table locked
        against every other writer until commit (each of its statements then sees what the
        others committed), and one statement per row, in the batch's order."""
        self.cur.execute("LOCK TABLE cost_records IN SHARE ROW EXCLUSIVE MODE")
        inserted: set[str] = set()
        for row in rows:
            with self.cur.copy(_COPY) as copy:
                copy.write_row((*row, 0))
            self.cur.execute(_INSERT)
            inserted.update(r[0] for r in self.cur.fetchall())
        return inserted


class _CopyNew:
    """Whether a ledger's new records may be copied straight into its table (`_Tx._copy_new`):
    until it is found to hold records stored before migration 3."""

    def __init__(self, unique_violation: type[Exception]) -> None:
        self.unique_violation = unique_violation
        self.allowed = True


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
        self._copy_new = _CopyNew(psycopg.errors.UniqueViolation)

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
                for step in statements:
                    if isinstance(step, str):
                        cur.execute(step)
                    else:
                        step(functools.partial(_run, cur))
                cur.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))

    @contextmanager
    def transaction(self) -> Iterator[_Tx]:
        with driver_errors(self._psycopg.Error, _redact(self.url)), self._lock:
            conn = self._live()
            with conn.transaction(), conn.cursor() as cur:
                tx = _Tx(cur, self._copy_new)
                yield tx
                tx.flush()

    def records(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> Iterator[CostRecord]:
        sql, params = records_query("%s", since, until)
        with (
            driver_errors(self._psycopg.Error, _redact(self.url)),
            self._lock,
            self._live().cursor() as cur,
        ):
            cur.execute(sql, params)
            rows = cur.fetchall()
        for row in rows:
            yield row_record(row)

    def count(self) -> int:
        with (
            driver_errors(self._psycopg.Error, _redact(self.url)),
            self._lock,
            self._live().cursor() as cur,
        ):
            cur.execute("SELECT count(*) FROM cost_records")
            (n,) = cur.fetchone() or (0,)
        return int(n)

    def close(self) -> None:
        self._conn.close()


def _run(cur: Any, sql: str, params: Sequence[Any]) -> list[Any]:
    """A migration step's statement, written with ``?`` placeholders."""
    cur.execute(sql.replace("?", "%s"), tuple(params))
    return list(cur.fetchall()) if cur.description is not None else []


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)
