"""The counters of ``--workers`` processes, shared through files so that ``/metrics`` and
``/healthz`` describe the whole collector, whichever worker answers.

Each worker writes its `Snapshot` and gauges to ``worker-<serial>`` in the supervisor's
private runtime directory (when they changed, at most once a second, less often when they
are so many that writing them would take over 2% of the worker's time, and last when it
stops). A page sums the worker's own live counters, the other workers' files, and
``retired``: the counters of workers that have exited, which the supervisor folds in
when it reaps one, so that the sums never go down while the collector runs (a restarted
worker starts from zero; a sum that went down would read as a counter reset and
Prometheus would count it again). A worker killed outright loses what it counted after
its last write (about a second): the ledger has those records, the page does not.

Gauges are summed over the live workers (queue depth, queue capacity), ``ledger_up`` is 1
only if every live worker's ledger is up, and ``otel_tokens_collector_workers`` says how
many workers the page sums.
"""

from __future__ import annotations

import contextlib
import logging
import marshal
import os
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from .core import Pipeline
from .stats import COUNTS, Snapshot, render

log = logging.getLogger("otel_tokens.collector")

_RETIRED = "retired"
_WRITE_INTERVAL = 1.0
# Largest share of a worker's CPU time its writes may take: with many label sets (10,000
# per counter) one write takes about 10 ms, so it writes less often than every second.
_WRITE_SHARE = 0.02


def _worker_file(directory: Path, serial: int) -> Path:
    return directory / f"worker-{serial}"


# The files hold plain dicts, tuples, strings and ints in marshal's format: the fastest
# Python has for them (JSON took 4 times as long), read by the same interpreter (the
# workers are forks of the supervisor). Money is written as decimal text, exact.
def _encode_snapshot(snapshot: Snapshot) -> dict[str, Any]:
    return {
        "cost": {k: str(v) for k, v in snapshot.cost.items()},
        "tokens": snapshot.tokens,
        "unpriced": snapshot.unpriced,
        "counts": snapshot.counts,
        "requests": snapshot.requests,
    }


def _decode_snapshot(data: dict[str, Any]) -> Snapshot:
    counts = dict.fromkeys(COUNTS, 0)
    counts.update(data["counts"])
    return Snapshot(
        cost={k: Decimal(v) for k, v in data["cost"].items()},
        tokens=data["tokens"],
        unpriced=data["unpriced"],
        counts=counts,
        requests=data["requests"],
    )


def _write(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` whole: a reader sees the old file or the new one, never a part."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(marshal.dumps(data))
    os.replace(tmp, path)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = marshal.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    return data


class _Shared:
    """The other workers' files and the retired counters, read together."""

    def __init__(self, directory: Path, serial: int) -> None:
        self.directory = directory
        self.serial = serial

    def others(self) -> tuple[Snapshot, list[dict[str, Any]]]:
        """(retired counters, the other live workers' files). Workers' files are read
        before ``retired``: the supervisor writes a reaped worker into it before
        removing the worker's file, so each worker is counted once, in one or the other."""
        live: list[dict[str, Any]] = []
        for path in sorted(self.directory.glob("worker-*")):
            data = _read(path)
            if data is not None and data["serial"] != self.serial:
                live.append(data)
        retired = _read(self.directory / _RETIRED) or {}
        gone = set(retired.get("serials", ()))
        total = _decode_snapshot(retired["snapshot"]) if retired else Snapshot()
        return total, [d for d in live if d["serial"] not in gone]


class WorkerPages:
    """`StatusPages` of one worker: the sums over every worker of the collector."""

    def __init__(self, pipeline: Pipeline, directory: Path, serial: int) -> None:
        self._pipeline = pipeline
        self._shared = _Shared(directory, serial)

    def metrics_page(self) -> str:
        pipeline = self._pipeline
        total, live = self._shared.others()
        total.add(pipeline.stats.snapshot())
        depth, capacity, up = pipeline.queue_depth, pipeline.config.max_queue, pipeline.ledger_up
        for data in live:
            total.add(_decode_snapshot(data["snapshot"]))
            depth += data["queue_depth"]
            capacity += data["queue_capacity"]
            up = up and data["ledger_up"]
        return render(total, depth, capacity, up, workers=1 + len(live))

    def health(self) -> dict[str, Any]:
        _, live = self._shared.others()
        up = self._pipeline.ledger_up and all(d["ledger_up"] for d in live)
        return {
            "status": "ok" if up else "degraded",
            "ledger": "up" if up else "down",
            "queue_depth": self._pipeline.queue_depth + sum(d["queue_depth"] for d in live),
            "workers": 1 + len(live),
            "workers_ledger_down": sum(not d["ledger_up"] for d in live)
            + (not self._pipeline.ledger_up),
        }


class SnapshotWriter:
    """Writes a worker's counters and gauges to its file: now, then when they changed (at
    most once a second, and within `_WRITE_SHARE` of its time), and last at `stop` (after
    the worker drained)."""

    def __init__(self, pipeline: Pipeline, directory: Path, serial: int) -> None:
        self._pipeline = pipeline
        self._path = _worker_file(directory, serial)
        self._serial = serial
        self._stop = threading.Event()
        self._last: tuple[Any, ...] | None = None
        self._cost = 0.0  # CPU seconds of the last write
        self._thread = threading.Thread(
            target=self._run, name="otel-tokens-worker-stats", daemon=True
        )

    def start(self) -> None:
        self.write()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self.write()

    def write(self) -> None:
        pipeline = self._pipeline
        snapshot = pipeline.stats.snapshot()
        depth, up = pipeline.queue_depth, pipeline.ledger_up
        # Any counted event moves one of these.
        mark = (*snapshot.counts.values(), sum(snapshot.requests.values()), depth, up)
        if mark == self._last:
            return
        started = time.thread_time()
        _write(
            self._path,
            {
                "serial": self._serial,
                "pid": os.getpid(),
                "snapshot": _encode_snapshot(snapshot),
                "queue_depth": depth,
                "queue_capacity": pipeline.config.max_queue,
                "ledger_up": up,
            },
        )
        self._last = mark
        self._cost = time.thread_time() - started

    def _run(self) -> None:
        while not self._stop.wait(max(_WRITE_INTERVAL, self._cost / _WRITE_SHARE)):
            try:
                self.write()
            except OSError as exc:
                log.warning("cannot write this worker's counters for /metrics: %s", exc)


def retire(directory: Path, serial: int) -> None:
    """Fold a reaped worker's last counters into ``retired`` (supervisor side), then
    remove its file, in that order (see `_Shared.others`)."""
    path = _worker_file(directory, serial)
    data = _read(path)
    if data is None:  # died before its first write
        return
    retired = _read(directory / _RETIRED) or {"serials": [], "snapshot": None}
    total = _decode_snapshot(retired["snapshot"]) if retired["snapshot"] else Snapshot()
    total.add(_decode_snapshot(data["snapshot"]))
    _write(
        directory / _RETIRED,
        {"serials": [*retired["serials"], serial], "snapshot": _encode_snapshot(total)},
    )
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
