"""Group commit: requests that arrive while the ledger is busy are committed together.

Each request's points used to be one ledger transaction, and a transaction waits for its
commit to reach the disk (SQLite ``synchronous=FULL``, PostgreSQL ``synchronous_commit``):
under many concurrent senders, requests queued behind each other's commits. Here the
first request to find the ledger idle commits at once; the requests that arrive meanwhile
wait, and the next of them then commits all of them in one transaction (up to a number
of points), each answered when that commit is done. Exactly once is the ledger's, as
before: a transaction commits all of its points or none, and a request whose transaction
failed is answered with a retryable error, as every other request of that transaction.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..metering import IngestResult, InvalidPointError, TokenPoint

Points = list[TokenPoint | InvalidPointError]


@dataclass(slots=True, eq=False)
class _Request:
    points: Points
    wake: threading.Event = field(default_factory=threading.Event)
    lead: bool = False
    done: bool = False
    result: IngestResult | None = None
    error: BaseException | None = None


class GroupCommit:
    """Runs ``ingest_many`` for the requests waiting together, at most ``max_points`` of
    their points at a time (a request larger than that goes alone)."""

    def __init__(
        self, ingest_many: Callable[[Sequence[Points]], list[IngestResult]], max_points: int
    ) -> None:
        self._ingest_many = ingest_many
        self.max_points = max_points
        self._lock = threading.Lock()
        self._queue: list[_Request] = []
        self._busy = False

    def submit(self, points: Points) -> IngestResult:
        """``points`` ingested in some transaction; its result once that one committed."""
        request = _Request(points)
        with self._lock:
            self._queue.append(request)
            if not self._busy:
                self._busy = request.lead = True
        while not request.done:
            if request.lead:
                self._lead()  # the leader is first in the queue: its group holds it
            else:
                request.wake.wait()
                request.wake.clear()
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def _lead(self) -> None:
        with self._lock:
            group: list[_Request] = []
            size = 0
            for request in self._queue:
                if group and size + len(request.points) > self.max_points:
                    break
                group.append(request)
                size += len(request.points)
            del self._queue[: len(group)]
        try:
            results = self._ingest_many([r.points for r in group])
        except BaseException as exc:  # every request of the transaction gets its error
            for request in group:
                request.error = exc
        else:
            for request, result in zip(group, results, strict=True):
                request.result = result
        with self._lock:
            following = self._queue[0] if self._queue else None
            if following is None:
                self._busy = False
            else:  # the next waiting request leads the next group
                following.lead = True
        for request in group:
            request.done = True
            request.wake.set()
        if following is not None:
            following.wake.set()
