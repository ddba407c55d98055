"""The transport-independent heart of the collector: auth, tenant binding, admission,
metering into the ledger, forwarding.

A metrics batch is acknowledged only after `LedgerPricer.ingest` returned for all of its points,
that is after its ledger transactions (one per chunk of points) committed. A collector
killed at any moment therefore committed all, some or none of the batch; the client's
retry writes what is missing and nothing else (record ids and stream marks make the rest
duplicates): exactly once.
"""

from __future__ import annotations

import hmac
import logging
import math
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsPartialSuccess,
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AGGREGATION_TEMPORALITY_CUMULATIVE,
    Metric,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from .. import semconv as sc
from ..ledger import Ledger, LedgerError
from ..metering import (
    IngestResult,
    InvalidPointError,
    LedgerCost,
    LedgerPricer,
    SeriesCache,
    TokenPoint,
    attributes_of,
    from_otlp,
)
from ..pricing import Catalog
from ._commit import GroupCommit
from ._heap import SeriesHeap
from .config import CollectorConfig
from .decode import PERMISSION_DENIED, UNAUTHENTICATED, ClientError
from .stats import Stats
from .upstream import Upstream, UpstreamAnswer

log = logging.getLogger("otel_tokens.collector")

_MAX_REASONS = 10
# Token points metered per ledger transaction, so that a batch's points are never all in
# memory at once. A point of a known series is small (its attribute map is shared with
# the other points of its series), so this is one transaction for any usual request; a
# bigger one commits chunk by chunk: when a later chunk fails the batch is answered 503,
# and its retry finds the earlier chunks' record ids and stream marks, so nothing is
# billed twice.
_CHUNK = 10_000
_POINT_KINDS = ("gauge", "sum", "histogram", "exponential_histogram", "summary")


class Unavailable(Exception):
    """Retryable: overloaded, ledger down, upstream down. HTTP 503 / gRPC UNAVAILABLE."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Principal:
    """Who sent a request: ``tenant`` bound to their token, ``admin`` for unbound tokens
    (and for everyone when authentication is off)."""

    tenant: str | None
    admin: bool


ANONYMOUS = Principal(tenant=None, admin=True)


def is_ledger_error(exc: BaseException) -> bool:
    # The ledgers raise their drivers' errors as LedgerError; OSError: the disk under it.
    return isinstance(exc, (LedgerError, OSError))


def bind_tenant(
    request: ExportMetricsServiceRequest, tenant: str, cache: SeriesCache | None = None
) -> list[tuple[str, str]]:
    """Hold every data point of ``request`` to ``tenant``, in place.

    A point claiming another ``gen_ai.billing.tenant.id``, or whose attributes do not read
    as one map (a repeated key: the value checked here must be the one billed), is removed
    and returned as (metric name, reason); ``gen_ai.billing.*`` points without one get
    ``tenant``. ``cache`` keeps each series' tenant attribute from request to request.
    """
    cache = cache if cache is not None else SeriesCache(max_series=1_000)
    missing = SeriesCache.MISSING
    rejected: list[tuple[str, str]] = []
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                if kind not in _POINT_KINDS:
                    continue
                points = getattr(metric, kind).data_points
                # Number points (sums, gauges) of a series differ only in their times and
                # value: their tenant is read once per series. Others (histograms) are
                # read point by point, as their counts make every point's bytes new.
                cached = kind in ("sum", "gauge")
                drop = []
                for i, point in enumerate(points):
                    try:
                        # The reading metering uses (`from_otlp`), so both see one value.
                        if cached:
                            value = cache.attribute(point, sc.BILLING_TENANT_ID)
                        else:
                            value = attributes_of(point.attributes).get(
                                sc.BILLING_TENANT_ID, missing
                            )
                    except InvalidPointError as exc:
                        drop.append(i)
                        rejected.append((metric.name, str(exc)))
                        continue
                    if value is not missing:
                        if value != tenant:
                            drop.append(i)
                            shown = value if isinstance(value, str) else "a non-string value"
                            if len(shown) > 64:
                                shown = shown[:61] + "..."
                            rejected.append(
                                (
                                    metric.name,
                                    f"{sc.BILLING_TENANT_ID} {shown!r} is not the tenant "
                                    "of this token",
                                )
                            )
                    elif metric.name.startswith("gen_ai.billing."):
                        point.attributes.append(
                            KeyValue(key=sc.BILLING_TENANT_ID, value=AnyValue(string_value=tenant))
                        )
                for i in reversed(drop):
                    del points[i]
    return rejected


def summarize(reasons: list[str]) -> str:
    counts = Counter(reasons)
    parts = []
    for reason, n in counts.most_common(_MAX_REASONS):
        shown = reason if len(reason) <= 300 else reason[:297] + "..."
        parts.append(shown if n == 1 else f"{shown} (x{n})")
    more = len(counts) - _MAX_REASONS
    if more > 0:
        parts.append(f"and {more} other reason(s)")
    return "; ".join(parts)


class Pipeline:
    """Shared by the HTTP and gRPC transports; thread-safe."""

    def __init__(
        self,
        config: CollectorConfig,
        *,
        ledger_factory: Callable[[], Ledger],
        catalog: Catalog,
        reopen: bool = True,
    ) -> None:
        self.config = config
        self.stats = Stats()
        self.catalog = catalog
        self.upstream = (
            Upstream(config.upstream, config.upstream_headers, config.upstream_timeout)
            if config.upstream
            else None
        )
        self._ledger_factory = ledger_factory
        self._reopen = reopen
        self._ledger_lock = threading.Lock()
        self._pricer: LedgerPricer | None = None
        # Token points per ledger transaction (see _CHUNK).
        self.chunk_points = _CHUNK
        # Requests waiting for the ledger are committed together.
        self._commits = GroupCommit(self._ingest_many, _CHUNK)
        # What each series' attributes read as, kept from request to request (None: off).
        self._series = SeriesCache(config.series_cache) if config.series_cache else None
        # ... and kept out of the garbage collector's full passes (`_heap`).
        self._heap = SeriesHeap() if self._series is not None else None
        self._next_open = 0.0
        self.ledger_up = False
        self._cond = threading.Condition()
        self._inflight = 0
        # Request body bytes held in memory (being read or in flight), over all connections.
        self._held = 0
        self.max_held_bytes = config.max_queue * config.max_body_bytes
        self._closing = False
        self._tokens = [(t.encode(), tenant) for t, tenant in config.tokens.items()]
        self.start_ns = time.time_ns()
        # Rejected points are explained at INFO, at most once per this many seconds.
        self.reject_log_interval = 10.0
        self._reject_logged = -math.inf
        self._reject_unlogged = 0
        self.instance_id = str(uuid.uuid4())

    # --- lifecycle ---------------------------------------------------------------------
    def open(self) -> None:
        """Open the ledger now (start-up): a ledger that cannot be opened is fatal here."""
        with self._ledger_lock:
            self._pricer = LedgerPricer(self._ledger_factory(), self.catalog)
            self.ledger_up = True

    def drain(self, timeout: float) -> bool:
        """Refuse new batches (retryable), then wait for those in flight."""
        with self._cond:
            self._closing = True
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._inflight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self) -> None:
        with self._ledger_lock:
            pricer, self._pricer = self._pricer, None
            self.ledger_up = False
        if pricer is not None and self._reopen:
            with suppress(Exception):
                pricer.ledger.close()

    # --- auth --------------------------------------------------------------------------
    @property
    def auth_enabled(self) -> bool:
        return bool(self._tokens)

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal of an ``Authorization: Bearer`` value; 401 if it is not one."""
        if not self._tokens:
            return ANONYMOUS
        scheme, _, credential = (authorization or "").strip().partition(" ")
        given = credential.strip().encode()
        if scheme.lower() != "bearer" or not given:
            raise ClientError(401, "missing bearer token", UNAUTHENTICATED)
        match: Principal | None = None
        for token, tenant in self._tokens:  # compare with every token: constant time
            if hmac.compare_digest(token, given):
                match = Principal(tenant=tenant, admin=tenant is None)
        if match is None:
            raise ClientError(401, "invalid bearer token", UNAUTHENTICATED)
        return match

    def require_admin(self, principal: Principal) -> None:
        if not principal.admin:
            raise ClientError(403, "this token is bound to a tenant", PERMISSION_DENIED)

    # --- admission ---------------------------------------------------------------------
    @property
    def queue_depth(self) -> int:
        return self._inflight

    @contextmanager
    def admit(self) -> Iterator[None]:
        """Hold one of ``max_queue`` in-flight slots; Unavailable when none is free."""
        with self._cond:
            if self._closing:
                raise Unavailable("collector shutting down", self.config.retry_after)
            if self._inflight >= self.config.max_queue:
                self.stats.count("overloaded")
                raise Unavailable(
                    f"collector overloaded: {self._inflight} batches in flight",
                    self.config.retry_after,
                )
            self._inflight += 1
        try:
            yield
        finally:
            with self._cond:
                self._inflight -= 1
                self._cond.notify_all()

    def hold_bytes(self, n: int) -> None:
        """Count ``n`` more body bytes in memory; Unavailable past ``max_held_bytes``.

        Bytes are counted as they arrive, so a slow sender holds only what it has sent."""
        with self._cond:
            if self._held + n > self.max_held_bytes:
                self.stats.count("overloaded")
                raise Unavailable(
                    f"collector overloaded: {self._held} bytes of request bodies in memory",
                    self.config.retry_after,
                )
            self._held += n

    def release_bytes(self, n: int) -> None:
        with self._cond:
            self._held -= n

    # --- metrics -----------------------------------------------------------------------
    def export_metrics(
        self, request: ExportMetricsServiceRequest, principal: Principal
    ) -> ExportMetricsServiceResponse:
        """Bill the request's token points, forward it; the OTLP response (partial success).

        Raises Unavailable (retryable) when the ledger or the upstream fails.
        """
        reasons: list[str] = []
        rejected = 0
        token_points_dropped = 0
        if principal.tenant is not None:
            dropped = bind_tenant(request, principal.tenant, self._series)
            rejected += len(dropped)
            token_points_dropped = sum(1 for m, _ in dropped if m == sc.METRIC_BILLING_TOKENS)
            reasons += [reason for _, reason in dropped]
        n_points, n_records, unchanged = token_points_dropped, 0, 0
        for chunk in _chunks(from_otlp(request, self._series), self.chunk_points):
            result = self._ingest(chunk)
            n_points += result.points
            n_records += len(result.records)
            unchanged += result.unchanged
            rejected += len(result.rejected)
            reasons += result.rejected
            self.stats.add_records(result.records)  # committed, whatever comes next
        self.stats.add_points(n_points, rejected, unchanged)
        log.debug(
            "batch committed: %d token points, %d records written, %d unchanged, %d rejected",
            n_points,
            n_records,
            unchanged,
            rejected,
        )
        if rejected:
            self._log_rejected(rejected, n_points, reasons)
        if self.upstream is not None:
            answer = self._forward_metrics(request)
            if not answer.ok:
                self.stats.count("forward_errors")
                if answer.retryable:
                    raise Unavailable(
                        f"the batch is in the ledger but {answer.describe()}; retry",
                        _retry_after(answer.retry_after, self.config.retry_after),
                    )
                reasons.append(f"not forwarded: {answer.describe()}")
        response = ExportMetricsServiceResponse()
        if rejected or reasons:
            response.partial_success.CopyFrom(
                ExportMetricsPartialSuccess(
                    rejected_data_points=rejected, error_message=summarize(reasons)
                )
            )
        return response

    def _log_rejected(self, rejected: int, points: int, reasons: list[str]) -> None:
        """Say at INFO why points were rejected (the client hears it in the partial
        success, the operator here), rate-limited: a broken sender must not flood."""
        now = time.monotonic()
        with self._cond:
            if now - self._reject_logged < self.reject_log_interval:
                self._reject_unlogged += 1
                return
            self._reject_logged = now
            unlogged, self._reject_unlogged = self._reject_unlogged, 0
        more = (
            f" ({unlogged} more batch(es) with rejected points since the last such line)"
            if unlogged
            else ""
        )
        log.info(
            "rejected %d data point(s) of a batch (%d token points): %s%s",
            rejected,
            points,
            summarize(reasons),
            more,
        )

    def _ingest(self, points: list[TokenPoint | InvalidPointError]) -> IngestResult:
        if not any(isinstance(p, TokenPoint) for p in points):
            return IngestResult(points=len(points), rejected=[str(p) for p in points])
        return self._commits.submit(points)

    def _ingest_many(
        self, batches: Sequence[list[TokenPoint | InvalidPointError]]
    ) -> list[IngestResult]:
        """The requests' points that wait together, in one ledger transaction."""
        pricer = self._current_pricer()
        try:
            results = pricer.ingest_many(batches)
        except Exception as exc:
            if not is_ledger_error(exc):
                raise
            self.stats.count("ledger_errors")
            log.warning("ledger error, batch refused (the client will retry): %s", exc)
            self._drop_pricer(pricer)
            raise Unavailable(
                f"ledger unavailable: {type(exc).__name__}: {exc}", self.config.retry_after
            ) from exc
        self.ledger_up = True
        if self._heap is not None and self._series is not None:
            self._heap.grown(len(self._series))
        return results

    def _current_pricer(self) -> LedgerPricer:
        with self._ledger_lock:
            if self._pricer is not None:
                return self._pricer
            now = time.monotonic()
            if now < self._next_open:
                raise Unavailable("ledger unavailable (reconnecting)", self.config.retry_after)
            try:
                ledger = self._ledger_factory()
            except Exception as exc:
                self._next_open = now + self.config.retry_after
                self.stats.count("ledger_errors")
                self.ledger_up = False
                log.warning("cannot reopen the ledger: %s", exc)
                raise Unavailable(f"ledger unavailable: {exc}", self.config.retry_after) from exc
            self._pricer = LedgerPricer(ledger, self.catalog)
            log.info("ledger reopened: %s", ledger.url)
            return self._pricer

    def _drop_pricer(self, pricer: LedgerPricer) -> None:
        """After a ledger error: reconnect on the next batch (a fresh connection)."""
        self.ledger_up = False
        if not self._reopen:
            return
        with self._ledger_lock:
            if self._pricer is not pricer:
                return
            self._pricer = None
        with suppress(Exception):
            pricer.ledger.close()

    def _forward_metrics(self, request: ExportMetricsServiceRequest) -> UpstreamAnswer:
        assert self.upstream is not None
        cost = self.cost_metrics()
        if cost is not None:
            out = ExportMetricsServiceRequest()
            out.CopyFrom(request)
            out.resource_metrics.append(cost)
        else:
            out = request
        return self.upstream.post(
            "metrics", out.SerializeToString(), "application/x-protobuf", compress=True
        )

    def cost_metrics(self) -> ResourceMetrics | None:
        """``gen_ai.billing.ledger.cost``: cumulative cost of the records this collector
        wrote, under the collector's own resource (one series per instance)."""
        totals = self.stats.ledger_cost.points()
        if not totals:
            return None
        now = time.time_ns()
        points = [
            NumberDataPoint(
                attributes=[
                    KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in attrs.items()
                ],
                start_time_unix_nano=self.start_ns,
                time_unix_nano=now,
                as_double=float(total),
            )
            for attrs, total in totals
        ]
        metric = Metric(
            name=LedgerCost.NAME,
            description=LedgerCost.DESCRIPTION,
            unit=LedgerCost.UNIT,
            sum=Sum(
                data_points=points,
                aggregation_temporality=AGGREGATION_TEMPORALITY_CUMULATIVE,
                is_monotonic=True,
            ),
        )
        resource = Resource(
            attributes=[
                KeyValue(key="service.name", value=AnyValue(string_value="otel-tokens-collector")),
                KeyValue(key="service.instance.id", value=AnyValue(string_value=self.instance_id)),
            ]
        )
        return ResourceMetrics(
            resource=resource,
            scope_metrics=[
                ScopeMetrics(
                    scope=InstrumentationScope(name="otel_tokens.collector"), metrics=[metric]
                )
            ],
        )

    # --- traces and logs ---------------------------------------------------------------
    def forward_raw(
        self, signal: str, body: bytes, content_type: str, content_encoding: str | None
    ) -> UpstreamAnswer | None:
        """Forward a traces or logs body untouched; None without an upstream."""
        if self.upstream is None:
            return None
        answer = self.upstream.post(signal, body, content_type, content_encoding)
        if not answer.ok:
            self.stats.count("forward_errors")
            if answer.retryable:
                raise Unavailable(
                    answer.describe(), _retry_after(answer.retry_after, self.config.retry_after)
                )
        return answer

    def metrics_page(self) -> str:
        return self.stats.render(self._inflight, self.config.max_queue, self.ledger_up)


def _chunks(
    points: Iterable[TokenPoint | InvalidPointError], size: int
) -> Iterator[list[TokenPoint | InvalidPointError]]:
    chunk: list[TokenPoint | InvalidPointError] = []
    for p in points:
        chunk.append(p)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _retry_after(value: str | None, default: float) -> float:
    if value:
        with suppress(ValueError):
            seconds = float(value)
            if 0 < seconds <= 3600:
                return seconds
    return default
