"""``otel-tokens collector --workers N``: one supervisor process and N forked workers, each
a whole collector (receivers, pipeline, its own ledger connection) on the same ports.

A CPython process prices on one core; N workers use N. The supervisor checks what every
worker needs once, before forking (the price files load, the ledger opens and is migrated,
so a bad ledger URL fails at once as without workers), reserves the ports (a bound socket
that does not listen: with port 0 it picks the port the workers then share), and forks.
Each worker listens with SO_REUSEPORT, so the kernel spreads connections over them;
exactly-once across them is the ledger's (SQLite BEGIN IMMEDIATE, PostgreSQL row locks on
the stream marks), as across replicas.

SIGTERM or SIGINT to the supervisor drains every worker (each as a single collector
drains) and exits 0. A worker that dies is reaped, logged and started again; one that
keeps dying soon after it starts stops the collector with exit code 1. A worker whose
supervisor is gone stops by itself. ``/metrics`` and ``/healthz`` sum every worker
(`_worker_stats`). Needs fork and SO_REUSEPORT (Linux, macOS, the BSDs).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .._arguments import EXIT_BAD_INPUT, EXIT_LISTEN
from ..ledger import LedgerError, open_ledger
from ..pricing import Catalog, PriceFileError
from ._worker_stats import SnapshotWriter, WorkerPages, retire
from .config import CollectorConfig, ConfigError, parse_endpoint, redact
from .service import Collector

log = logging.getLogger("otel_tokens.collector")

# How long a worker may take to start (load nothing: the catalog is inherited; open the
# ledger, bind, start the servers).
_START_TIMEOUT = 60.0
# A worker that exits sooner than this after it was started failed "at start"; this many
# such exits in a row, and the collector stops instead of restarting it for ever.
_QUICK_EXIT = 10.0
_MAX_QUICK_EXITS = 5
_GRACE = 5.0  # what Collector.stop gives batches in flight
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def supervise(config: CollectorConfig) -> int:
    """Run the collector as ``config.workers`` processes until SIGTERM or SIGINT."""
    if not hasattr(os, "fork") or not hasattr(socket, "SO_REUSEPORT"):
        return _fail("--workers needs fork and SO_REUSEPORT (Linux, macOS, BSD)", EXIT_BAD_INPUT)
    try:
        catalog = Catalog.load(config.prices, use_env=False)
        # Opened once here: migrations run once, and a ledger that cannot be opened
        # fails now, with the message a single collector gives, not in N workers.
        open_ledger(config.ledger).close()
    except (ConfigError, LedgerError, PriceFileError) as exc:
        return _fail(str(exc), EXIT_BAD_INPUT)
    reserved: list[socket.socket] = []
    http, grpc = config.http_endpoint, config.grpc_endpoint
    try:
        if http is not None:
            sock, http = _reserve(http, "http_endpoint")
            reserved.append(sock)
        if grpc is not None:
            sock, grpc = _reserve(grpc, "grpc_endpoint")
            reserved.append(sock)
    except OSError as exc:
        for sock in reserved:
            sock.close()
        return _fail(str(exc), EXIT_LISTEN)
    config = replace(config, http_endpoint=http, grpc_endpoint=grpc)
    directory = Path(tempfile.mkdtemp(prefix="otel-tokens-collector-"))
    try:
        return _Supervisor(config, catalog, directory, reserved).run()
    finally:
        for sock in reserved:
            sock.close()
        shutil.rmtree(directory, ignore_errors=True)


def _fail(message: str, code: int) -> int:
    print(f"otel-tokens collector: {message}", file=sys.stderr)
    return code


def _reserve(endpoint: str, name: str) -> tuple[socket.socket, str]:
    """Hold ``endpoint``'s port for the workers: bound with SO_REUSEPORT, not listening
    (a listening socket would be handed connections that nobody accepts)."""
    host, port = parse_endpoint(endpoint, name)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        transport = "HTTP" if name == "http_endpoint" else "gRPC"
        raise OSError(f"cannot listen on {endpoint} ({transport}): {exc.strerror or exc}") from exc
    port = sock.getsockname()[1]
    return sock, f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass
class _Worker:
    slot: int  # 1..N, kept across restarts (log lines)
    serial: int  # unique per process started (its counters' file)
    pid: int
    started: float
    ready: bool = False


class _Supervisor:
    def __init__(
        self,
        config: CollectorConfig,
        catalog: Catalog,
        directory: Path,
        reserved: list[socket.socket],
    ) -> None:
        self.config = config
        self.catalog = catalog
        self.directory = directory
        self.reserved = reserved
        self.workers: dict[int, _Worker] = {}  # by pid
        self._serial = 0
        self._stop = False
        self._quick_exits: dict[int, int] = {}  # by slot
        self._restart_at: dict[int, float] = {}  # slot -> when
        self._ready_r, self._ready_w = os.pipe()
        self._buffer = b""

    # --- the loop --------------------------------------------------------------------
    def run(self) -> int:
        def on_signal(signum: int, frame: Any) -> None:
            self._stop = True

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        try:
            for slot in range(1, self.config.workers + 1):
                self._spawn(slot)
            code = self._wait_ready()
            if code is not None:
                self._shutdown()
                return code
            print(self._ready_line(), flush=True)
            code = self._supervise()
            shutdown = self._shutdown()
            print("otel-tokens collector stopped", flush=True)
            return code if code is not None else shutdown
        finally:
            os.close(self._ready_r)
            os.close(self._ready_w)

    def _wait_ready(self) -> int | None:
        """None once every worker is ready; else the exit code to stop with."""
        deadline = time.monotonic() + _START_TIMEOUT
        while not all(w.ready for w in self.workers.values()):
            if self._stop:
                return 0
            self._read_ready(0.2)
            for worker, status in self._reap():
                log.error(
                    "worker %d (pid %d) %s before it was ready; stopping",
                    worker.slot,
                    worker.pid,
                    _describe(status),
                )
                code = os.waitstatus_to_exitcode(status)
                return code if code > 0 else 1
            if time.monotonic() > deadline:
                log.error("workers not ready after %g s; stopping", _START_TIMEOUT)
                return 1
        return None

    def _supervise(self) -> int | None:
        """Until asked to stop: restart workers that exit. An exit code if they keep
        failing at start."""
        while not self._stop:
            self._read_ready(0.2)
            now = time.monotonic()
            for worker, status in self._reap():
                quick = not worker.ready or now - worker.started < _QUICK_EXIT
                exits = self._quick_exits.get(worker.slot, 0) + 1 if quick else 0
                self._quick_exits[worker.slot] = exits
                if exits >= _MAX_QUICK_EXITS:
                    log.error(
                        "worker %d (pid %d) %s, %d times in a row soon after it started; "
                        "stopping (see the errors above)",
                        worker.slot,
                        worker.pid,
                        _describe(status),
                        exits,
                    )
                    return 1
                delay = min(0.1 * 2**exits, 5.0) if exits else 0.0
                log.warning(
                    "worker %d (pid %d) %s; starting another%s",
                    worker.slot,
                    worker.pid,
                    _describe(status),
                    f" in {delay:g} s" if delay else "",
                )
                self._restart_at[worker.slot] = now + delay
            for slot, when in list(self._restart_at.items()):
                if when <= now and not self._stop:
                    del self._restart_at[slot]
                    self._spawn(slot)
        return None

    def _shutdown(self) -> int:
        """SIGTERM every worker, wait for them to drain; 0 if every one exited cleanly."""
        self._restart_at.clear()
        for worker in self.workers.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGTERM)
        code = 0
        deadline = time.monotonic() + _GRACE + 5
        while self.workers and time.monotonic() < deadline:
            for worker, status in self._reap():
                if os.waitstatus_to_exitcode(status) != 0:
                    log.warning("worker %d (pid %d) %s", worker.slot, worker.pid, _describe(status))
                    code = 1
            time.sleep(0.05)
        for worker in list(self.workers.values()):
            log.error("worker %d (pid %d) did not stop; killing it", worker.slot, worker.pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGKILL)
            os.waitpid(worker.pid, 0)
            del self.workers[worker.pid]
            code = 1
        return code

    # --- workers -----------------------------------------------------------------------
    def _spawn(self, slot: int) -> None:
        self._serial += 1
        serial = self._serial
        parent = os.getpid()
        # Held until the worker has its own handlers: a SIGTERM in between would reach the
        # supervisor's handler, copied into the worker, and be lost.
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the supervisor's code
            code = 1
            try:
                os.close(self._ready_r)
                for sock in self.reserved:
                    sock.close()
                code = _work(
                    self.config, self.catalog, self.directory, slot, serial, parent, self._ready_w
                )
            except BaseException:
                log.exception("worker %d failed", slot)
            finally:
                logging.shutdown()
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        self.workers[pid] = _Worker(slot, serial, pid, time.monotonic())

    def _read_ready(self, timeout: float) -> None:
        ready, _, _ = select.select([self._ready_r], [], [], timeout)
        if not ready:
            return
        self._buffer += os.read(self._ready_r, 4096)
        *lines, self._buffer = self._buffer.split(b"\n")
        serials = {int(line) for line in lines if line.strip()}
        for worker in self.workers.values():
            if worker.serial in serials:
                worker.ready = True
                log.info("worker %d ready (pid %d)", worker.slot, worker.pid)

    def _reap(self) -> list[tuple[_Worker, int]]:
        """Workers that exited, with their wait status; their counters retired."""
        out = []
        while self.workers:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            try:
                retire(self.directory, worker.serial)
            except (OSError, ValueError, EOFError) as exc:
                log.warning("cannot keep worker %d's counters for /metrics: %s", worker.slot, exc)
            out.append((worker, status))
        return out

    def _ready_line(self) -> str:
        config = self.config
        http = grpc = "none"
        if config.http_endpoint is not None:
            scheme = "https" if config.tls else "http"
            http = f"{scheme}://{config.http_endpoint}"
        if config.grpc_endpoint is not None:
            grpc = config.grpc_endpoint
        return (
            f"otel-tokens collector ready: http={http} grpc={grpc} "
            f"ledger={redact(config.ledger)} workers={config.workers}"
        )


def _describe(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _work(
    config: CollectorConfig,
    catalog: Catalog,
    directory: Path,
    slot: int,
    serial: int,
    parent: int,
    ready_fd: int,
) -> int:
    """One worker process, from the fork to its exit code."""
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)  # blocked by _spawn
    for handler in logging.getLogger().handlers:  # say which worker a line comes from
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s %(name)s[worker {slot}]: %(message)s")
        )
    collector = Collector(
        config,
        catalog=catalog,
        reuse_port=True,
        pages=lambda pipeline: WorkerPages(pipeline, directory, serial),
    )
    try:
        collector.start()
    except (ConfigError, LedgerError, PriceFileError) as exc:
        return _fail(f"worker {slot}: {exc}", EXIT_BAD_INPUT)
    except OSError as exc:
        return _fail(f"worker {slot}: {exc}", EXIT_LISTEN)
    assert collector.pipeline is not None
    writer = SnapshotWriter(collector.pipeline, directory, serial)
    writer.start()
    os.write(ready_fd, f"{serial}\n".encode())
    while not stop.wait(0.5):
        if os.getppid() != parent:
            log.warning("the supervisor is gone; stopping")
            break
    collector.stop(_GRACE)
    writer.stop()
    return 0
