"""Background recording: the end of a metered call runs off the caller's thread.

Making an OpenTelemetry span with ~25 attributes, three histogram points and a priced cost
costs ~100-150 microseconds on a small server, several times the target for an
instrumentation. The caller only captures what it must (timestamps, the context, a reference
to the response) and puts a job on this queue; one daemon thread runs the jobs in batches.

The thread needs the GIL. In a process that never waits (calls made back to back on an
in-process transport, a saturated event loop), CPython hands the GIL to a waiting thread only
when its holder has not released it for 5 ms, and such a process releases it for an instant
more often than that (the openai and anthropic clients read random bytes for each request's
idempotency key with the GIL released): the thread then hardly ever runs. So no call waits
long: once the oldest queued job is ``max_delay`` old (250 ms), each submitting caller also
runs the oldest job, which bounds the backlog (and the responses it holds) to that much time
of calls.

Nothing is dropped: a full queue makes the caller run its job itself; `flush()` runs what was
queued before it and waits for those jobs; the queue is flushed before a fork, at exit (in
``multiprocessing`` children too), when a workflow block ends, and before an SDK provider's
``force_flush``/``shutdown`` (see ``instrumentation``); after the exit flush, callers record
their own calls. Spans carry the call's own start and end times, so a late job changes
nothing but when the span reaches its exporter.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable

__all__ = ["BackgroundQueue", "flush", "queue"]

_log = logging.getLogger("otel_tokens")

Job = Callable[[], None]


class BackgroundQueue:
    """A queue of recording jobs and the thread that runs them."""

    def __init__(
        self, *, interval: float = 0.02, max_pending: int = 1_000, max_delay: float = 0.25
    ) -> None:
        self.interval = interval  # how long the thread gathers a batch once woken
        self.max_pending = max_pending
        self.max_delay = max_delay  # seconds a job may wait before its successors' callers help
        self._reset()

    def _reset(self) -> None:
        # (sequence number, job, monotonic ns when queued), in order
        self._jobs: deque[tuple[int, Job, int]] = deque()
        self._seq = itertools.count()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        # Sequence numbers of the jobs taken off the queue and not finished yet; the lock
        # (re-entrant: a signal handler may flush while this thread holds it) guards them
        # and the order of the queue.
        self._running: set[int] = set()
        self._idle = threading.Condition(threading.RLock())
        self._local = threading.local()
        self._closed = False  # after the exit flush: nobody is left to run a queued job
        # Jobs that submitting callers ran themselves (back-pressure or a stale queue): a
        # diagnostic for bench/backlog.py.
        self.run_by_callers = 0

    def submit(self, job: Job) -> None:
        """Run ``job`` soon, on the recording thread (or now, if it cannot wait)."""
        jobs = self._jobs
        if len(jobs) >= self.max_pending or self._closed:
            self.run_by_callers += 1
            self._run(job)  # back-pressure, or exiting: never drop
            return
        if self._thread is None and not self._start():
            self._run(job)  # no thread (interpreter shutting down): record here
            return
        now = time.monotonic_ns()
        with self._idle:  # numbered and queued together: the queue stays in order
            jobs.append((next(self._seq), job, now))
        if not self._wake.is_set():  # once per batch, not per job
            self._wake.set()
        try:
            seq, _, queued = jobs[0]
        except IndexError:  # the recording thread emptied the queue meanwhile
            return
        if now - queued > self.max_delay * 1e9:  # the thread is not getting the GIL: help
            self.run_by_callers += self._drain(None, seq + 1)

    def flush(self, timeout: float | None = None) -> bool:
        """Run the jobs queued before this call, on this thread, and wait for those that are
        running elsewhere; jobs queued meanwhile are left to the recording thread.

        Returns False if ``timeout`` (seconds) passed first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            before = next(self._seq)  # every job queued so far has a smaller number
        if getattr(self._local, "in_job", False):  # from a job (an exporter's force_flush):
            self._drain(deadline, before)  # waiting for the running jobs would wait for itself
            return True
        while True:
            self._drain(deadline, before)
            with self._idle:
                jobs = self._jobs
                if not (jobs and jobs[0][0] < before) and not any(
                    seq < before for seq in self._running
                ):
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
        return len(self._jobs) + len(self._running)

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
            atexit.register(self._exit)
            # A multiprocessing child leaves through os._exit, past atexit, after running
            # its finalizers (registered here, after the child cleared those it inherited).
            util = sys.modules.get("multiprocessing.util")
            if util is not None:
                try:
                    util.Finalize(None, self._exit, exitpriority=10)
                except Exception:
                    _log.debug("otel-tokens: no multiprocessing exit flush", exc_info=True)
            return True

    def _exit(self) -> None:
        self._closed = True  # calls ended in later exit handlers are recorded by their caller
        self.flush(5.0)

    def _loop(self) -> None:
        while True:
            try:
                self._wake.wait()
                self._wake.clear()
                time.sleep(self.interval)  # let a batch gather: one wake-up for many calls
                self._drain(None, None)
            except BaseException:  # keep the thread: it is the only one that runs the jobs
                _log.debug("otel-tokens: the recording thread caught", exc_info=True)

    def _drain(self, deadline: float | None, before: int | None) -> int:
        """Run queued jobs (only those numbered below ``before``, if given); how many ran."""
        jobs = self._jobs
        local = self._local
        ran = 0
        while True:
            if deadline is not None and time.monotonic() > deadline:
                return ran
            with self._idle:  # taken off the queue and counted as running in one step
                if not jobs or (before is not None and jobs[0][0] >= before):
                    return ran
                seq, job, _ = jobs.popleft()
                self._running.add(seq)
            outer, local.in_job = getattr(local, "in_job", False), True
            ran += 1
            try:
                self._run(job)
            finally:
                local.in_job = outer
                with self._idle:
                    self._running.discard(seq)
                    self._idle.notify_all()

    @staticmethod
    def _run(job: Job) -> None:
        try:
            job()
        except Exception:  # a job logs its own failures; this is the last guard
            _log.debug("otel-tokens: a recording job failed", exc_info=True)

    def _after_fork_in_child(self) -> None:
        # The parent flushed before forking; a child starts empty, with no thread (its first
        # call starts one and registers the exit flushes).
        self._reset()


queue = BackgroundQueue()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=lambda: queue.flush(5.0), after_in_child=queue._after_fork_in_child
    )


def flush(timeout_millis: float = 30_000) -> bool:
    """Record every metered call that has ended: spans, metric points and costs.

    Call it before reading an in-memory exporter, or before a process freezes (serverless).
    The SDK providers' ``force_flush()`` and ``shutdown()`` call it first when an instrumentor
    is active. Returns False if it timed out.
    """
    return queue.flush(timeout_millis / 1000)
