"""Background recording: the end of a metered call runs off the caller's thread.

Making an OpenTelemetry span with ~25 attributes, three histogram points and a priced cost
costs the caller ~100-150 microseconds on a small server, several times the target for an
instrumentation. The caller only captures what it must (timestamps, the context, a reference
to the response) and puts a job on this queue; one daemon thread runs the jobs in batches.

Nothing is dropped: a full queue makes the caller run its job itself, `flush()` runs what is
queued and waits for what is running, and the queue is flushed before a fork, at exit, when
a workflow block ends, and before an SDK provider's ``force_flush``/``shutdown`` (see
``instrumentation``). Spans carry the call's own start and end times, so a late job changes
nothing but when the span reaches its exporter.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable

__all__ = ["BackgroundQueue", "flush", "queue"]

_log = logging.getLogger("otel_tokens")

Job = Callable[[], None]


class BackgroundQueue:
    """A queue of recording jobs and the thread that runs them."""

    def __init__(self, *, interval: float = 0.02, max_pending: int = 1_000) -> None:
        self.interval = interval  # how long the thread gathers a batch once woken
        self.max_pending = max_pending
        self._jobs: deque[Job] = deque()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        # Jobs taken off the queue and not finished yet, and a condition to wait on them.
        self._running = 0
        self._idle = threading.Condition(threading.Lock())
        self._local = threading.local()

    def submit(self, job: Job) -> None:
        """Run ``job`` soon, on the recording thread (or now, if the queue is full)."""
        jobs = self._jobs
        if len(jobs) >= self.max_pending:
            self._run(job)  # back-pressure: never drop
            return
        if self._thread is None and not self._start():
            self._run(job)  # no thread (interpreter shutting down): record here
            return
        jobs.append(job)
        if not self._wake.is_set():  # once per batch, not per job
            self._wake.set()

    def flush(self, timeout: float | None = None) -> bool:
        """Run every queued job on this thread, then wait for the ones running elsewhere.

        Returns False if ``timeout`` (seconds) passed first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if getattr(self._local, "in_job", False):  # from a job (an exporter's force_flush):
            self._drain(deadline)  # waiting for the running jobs would wait for itself
            return True
        while True:
            self._drain(deadline)
            with self._idle:
                if not self._running and not self._jobs:
                    return True
                wait = 0.05
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    wait = min(wait, remaining)
                self._idle.wait(wait)

    @property
    def pending(self) -> int:
        return len(self._jobs) + self._running

    # --- internals -------------------------------------------------------------------
    def _start(self) -> bool:
        with self._start_lock:
            if self._thread is not None:
                return True
            thread = threading.Thread(target=self._loop, name="otel-tokens-recorder", daemon=True)
            try:
                thread.start()
            except RuntimeError:  # "can't create new thread at interpreter shutdown"
                return False
            self._thread = thread
            # Registered after the SDK providers exist (the first call), so it runs before
            # their own exit handlers: jobs still queued reach the exporters.
            atexit.register(self.flush, 5.0)
            return True

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            time.sleep(self.interval)  # let a batch gather: one wake-up for many calls
            self._drain(None)

    def _drain(self, deadline: float | None) -> None:
        jobs = self._jobs
        while jobs:
            if deadline is not None and time.monotonic() > deadline:
                return
            try:
                job = jobs.popleft()
            except IndexError:  # taken by the other drainer
                return
            with self._idle:
                self._running += 1
            local = self._local
            outer, local.in_job = getattr(local, "in_job", False), True
            try:
                self._run(job)
            finally:
                local.in_job = outer
                with self._idle:
                    self._running -= 1
                    if not self._running:
                        self._idle.notify_all()

    @staticmethod
    def _run(job: Job) -> None:
        try:
            job()
        except Exception:  # a job logs its own failures; this is the last guard
            _log.debug("otel-tokens: a recording job failed", exc_info=True)

    def _after_fork_in_child(self) -> None:
        # The parent flushed before forking; a child starts empty, with no thread.
        self._jobs.clear()
        self._wake = threading.Event()
        self._thread = None
        self._start_lock = threading.Lock()
        self._running = 0
        self._idle = threading.Condition(threading.Lock())
        self._local = threading.local()


queue = BackgroundQueue()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=lambda: queue.flush(5.0), after_in_child=queue._after_fork_in_child)


def flush(timeout_millis: float = 30_000) -> bool:
    """Record every metered call that has ended: spans, metric points and costs.

    Call it before reading an in-memory exporter, or before a process freezes (serverless).
    The SDK providers' ``force_flush()`` and ``shutdown()`` call it first when an instrumentor
    is active. Returns False if it timed out.
    """
    return queue.flush(timeout_millis / 1000)
