"""Checkpoints of a SQLite ledger's write-ahead log, on a thread of their own.

SQLite copies the WAL into the database file (a checkpoint) in the connection that
commits once the WAL passes ``wal_autocheckpoint`` pages: on a large ledger, whose random
id and usage-key indexes make each commit write thousands of pages, that copy was about
two thirds of every commit, and the collector waited for it while holding the ledger.
Here a second connection checkpoints after commits (at most every 0.2 s), while the writer
goes on (SQLite runs a PASSIVE checkpoint beside writers and readers; the GIL is released
meanwhile). The writer's own automatic checkpoint stays, at a larger WAL, in case this one
falls behind.
Durability is unchanged: a commit is on disk in the WAL (``synchronous=FULL``) before it
returns, checkpointed or not.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

log = logging.getLogger("otel_tokens.ledger")

# The writer's automatic checkpoint, a backstop: at this many WAL pages (4 KiB each, 64
# MiB) the committing connection checkpoints, as SQLite does by default at 1,000.
BACKSTOP_PAGES = 16_384
# At most one checkpoint per this many seconds: many small commits (small requests) share
# one, which a checkpoint per commit made cost about 2 ms of CPU each (measured).
INTERVAL = 0.2


class Checkpointer:
    """Checkpoints the WAL of the database at ``path`` after `committed` calls, at most once
    per ``interval`` seconds."""

    def __init__(self, path: str, interval: float = INTERVAL) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.interval = interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._failed = False
        self.checkpoints = 0
        self._thread = threading.Thread(
            target=self._run, name="otel-tokens-sqlite-checkpoint", daemon=True
        )
        self._thread.start()

    def committed(self) -> None:
        """A transaction committed: checkpoint what is in the WAL, soon."""
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            if self._stop.wait(self.interval):  # the commits of the interval, together
                return
            self._wake.clear()
            try:
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                self.checkpoints += 1
            except sqlite3.Error as exc:  # the writer's backstop checkpoint still runs
                if not self._failed:
                    self._failed = True
                    log.warning("ledger checkpoint failed (the writer will do it): %s", exc)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(30)
        self._conn.close()
