"""Ingest throughput and peak memory of the pricing collector, with SQLite and PostgreSQL.

The collector runs as its own process (``python -m otel_tokens.collector``, OTLP/HTTP only).
It gets realistic OTLP protobuf ``ExportMetricsServiceRequest`` bodies of
``gen_ai.billing.tokens``: cumulative, monotonic Sum points carrying the attributes that
the instrumentation's ``_record_billing`` sets (provider, request and response model,
operation, processing, context tier, usage source, token bucket, tenant, feature), for N
distinct series (1k, 10k and 100k by default) spread over 10 application instances (one
OTLP resource each). Every series is exported several times (3 by default): the first
export creates each stream's mark and bills the whole count, later ones bill the delta from
the mark, and about one series in five is idle between two exports (its point moves the
mark and writes no record). Each instance's points are cut into requests of at most
``--batch`` points (5000). All bodies are encoded before timing; keep-alive ``http.client``
connections (``--concurrency``, 2) send one export round at a time and wait for every answer
before the next round, as SDK exporters do from one export interval to the next.

Throughput is points acknowledged (200, no rejected point) per second of wall clock, from
the first request sent to the last answer received. Every answer is only sent after the
batch's ledger transaction committed. The ledger is then checked: the record count and the
sum of the quantities must be those the workload implies. Peak memory is the collector
process's VmHWM (peak resident set) from /proc at the end, next to its VmRSS once ready.
See bench/README.md (how to run it, its method, the latest figures).

    python bench/ingest.py --quick          # 1k and 10k series, both ledgers, < 90 s
    python bench/ingest.py                  # 1k, 10k and 100k series, < 10 min
    python bench/ingest.py --json out.json  # also write the results as JSON ("-": stdout)
    python bench/ingest.py --profile        # where the collector's time goes (cProfile)
    python bench/ingest.py --py-spy         # the same, sampled in the real process (py-spy)
    python bench/ingest.py --workers 2 --concurrency 4   # the collector with --workers 2

With ``--workers N`` CPU time and memory are those of the N worker processes together
(the supervisor does no pricing). Each keep-alive connection stays on the worker the kernel
gave it: give at least two connections per worker (``--concurrency``).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import http.client
import json
import os
import platform
import pstats
import queue
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PG_BASE = os.environ.get("OTEL_TOKENS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
METRIC = "gen_ai.billing.tokens"
CUMULATIVE = 2  # AGGREGATION_TEMPORALITY_CUMULATIVE
INTERVAL_NS = 60 * 10**9  # the SDK's default export interval
SDK_VERSION = "1.45.2"

# (provider, request model, response model, operation, buckets, processing, context tiers)
# The last one is a model no catalog knows: its points are written as unpriced records.
MODELS: tuple[tuple[str, str, str, str, tuple[str, ...], tuple[str, ...], tuple[str, ...]], ...] = (
    (
        "openai",
        "gpt-4o",
        "gpt-4o-2024-08-06",
        "chat",
        ("input", "cache_read", "output"),
        ("standard", "batch"),
        ("base",),
    ),
    (
        "openai",
        "o4-mini",
        "o4-mini-2025-04-16",
        "chat",
        ("input", "cache_read", "output", "reasoning"),
        ("standard", "flex"),
        ("base",),
    ),
    (
        "openai",
        "gpt-4.1-mini",
        "gpt-4.1-mini-2025-04-14",
        "chat",
        ("input", "cache_read", "output"),
        ("standard",),
        ("base",),
    ),
    (
        "anthropic",
        "claude-sonnet-4-6",
        "claude-sonnet-4-6",
        "chat",
        ("input", "cache_read", "cache_write_5m", "output"),
        ("standard", "batch"),
        ("base",),
    ),
    (
        "anthropic",
        "claude-haiku-4-5",
        "claude-haiku-4-5-20251001",
        "chat",
        ("input", "cache_read", "cache_write_5m", "output"),
        ("standard",),
        ("base",),
    ),
    (
        "gcp.gemini",
        "gemini-2.5-pro",
        "gemini-2.5-pro",
        "generate_content",
        ("input", "cache_read", "output", "reasoning"),
        ("standard",),
        ("base", "above_200k"),
    ),
    (
        "openai",
        "acme-internal-llm-v3",
        "acme-internal-llm-v3",
        "chat",
        ("input", "output"),
        ("standard",),
        ("base",),
    ),
)
FEATURES = (
    "chat",
    "search",
    "summarize",
    "agent",
    "support",
    "code-review",
    "translate",
    "extract",
)
# Typical first cumulative value and per-interval growth of each bucket (tokens).
SCALE = {
    "input": 400_000,
    "cache_read": 900_000,
    "cache_write_5m": 60_000,
    "output": 50_000,
    "reasoning": 80_000,
}
SPY_RATE = 200  # py-spy samples per second
IDLE_SHARE = 0.2  # series that do not change between two exports


# --- workload ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Shape:
    provider: str
    request_model: str
    response_model: str
    operation: str
    bucket: str
    processing: str
    tier: str
    source: str

    def attributes(self, tenant: str, feature: str) -> list[tuple[str, str]]:
        """In the order _record_billing builds them (then the attribution, then the bucket)."""
        return [
            ("gen_ai.provider.name", self.provider),
            ("gen_ai.request.model", self.request_model),
            ("gen_ai.response.model", self.response_model),
            ("gen_ai.operation.name", self.operation),
            ("gen_ai.billing.processing", self.processing),
            ("gen_ai.billing.context_tier", self.tier),
            ("gen_ai.billing.usage_source", self.source),
            ("gen_ai.billing.tenant.id", tenant),
            ("gen_ai.billing.feature", feature),
            ("gen_ai.billing.token.bucket", self.bucket),
        ]


def shapes() -> list[Shape]:
    out = []
    for provider, req, resp, op, buckets, processings, tiers in MODELS:
        for bucket in buckets:
            for processing in processings:
                for tier in tiers:
                    out.append(Shape(provider, req, resp, op, bucket, processing, tier, "provider"))
    # Usage estimated by the tokenizer (a stream cut short) for one model's input and output.
    out += [
        Shape("openai", "gpt-4o", "gpt-4o-2024-08-06", "chat", b, "standard", "base", "estimated")
        for b in ("input", "output")
    ]
    return out


@dataclass
class Workload:
    """N series over ``instances`` resources, exported ``exports`` times, pre-encoded."""

    series: int
    exports: int
    batch: int
    instances: int
    seed: int
    # bodies[round] = the encoded requests of that export round
    bodies: list[list[bytes]] = field(default_factory=list)
    points_per_round: int = 0
    expected_records: int = 0
    expected_quantity: int = 0
    unpriced_series: int = 0
    body_bytes: int = 0
    encode_s: float = 0.0

    @property
    def points(self) -> int:
        return self.points_per_round * self.exports

    @property
    def requests(self) -> int:
        return sum(len(b) for b in self.bodies)


def build(series: int, exports: int, batch: int, instances: int, seed: int) -> Workload:
    """Encode every request of every export round (before any timing)."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    t0 = time.perf_counter()
    rng = random.Random(seed)
    all_shapes = shapes()
    per_tenant = len(all_shapes) * len(FEATURES)
    now = time.time_ns()
    w = Workload(series, exports, batch, instances, seed)
    # One (message, points) per request; the points are mutated and re-encoded each round.
    messages: list[tuple[Any, list[Any], list[tuple[int, int]]]] = []
    by_instance: list[list[int]] = [[] for _ in range(instances)]
    for i in range(series):
        by_instance[i % instances].append(i)

    def kv(key: str, value: str) -> Any:
        return KeyValue(key=key, value=AnyValue(string_value=value))

    for k, members in enumerate(by_instance):
        start_ns = now - (exports + 1) * INTERVAL_NS - k * 1_000_000_007
        resource = [
            kv("service.name", f"bench-app-{k % 4}"),
            kv("service.instance.id", str(uuid.UUID(int=rng.getrandbits(128)))),
            kv("telemetry.sdk.language", "python"),
            kv("telemetry.sdk.name", "opentelemetry"),
            kv("telemetry.sdk.version", SDK_VERSION),
        ]
        for lo in range(0, len(members), batch):
            request = ExportMetricsServiceRequest()
            rm = request.resource_metrics.add()
            rm.resource.attributes.extend(resource)
            sm = rm.scope_metrics.add()
            sm.scope.name = "otel_tokens"
            metric = sm.metrics.add()
            metric.name = METRIC
            metric.unit = "{token}"
            metric.description = "Billable tokens (and requests) by disjoint billing bucket."
            metric.sum.aggregation_temporality = CUMULATIVE
            metric.sum.is_monotonic = True
            points, state = [], []
            for i in members[lo : lo + batch]:
                shape = all_shapes[i % len(all_shapes)]
                feature = FEATURES[(i // len(all_shapes)) % len(FEATURES)]
                tenant = f"tenant-{i // per_tenant:05d}"
                p = metric.sum.data_points.add()
                p.attributes.extend(kv(key, v) for key, v in shape.attributes(tenant, feature))
                p.start_time_unix_nano = start_ns
                points.append(p)
                scale = SCALE[shape.bucket]
                state.append((scale, rng.randint(scale // 10, 3 * scale)))
                if shape.request_model == "acme-internal-llm-v3":
                    w.unpriced_series += 1
            messages.append((request, points, state))
    w.points_per_round = series
    for r in range(exports):
        bodies = []
        for request, points, state in messages:
            for j, p in enumerate(points):
                scale, value = state[j]
                if r > 0:
                    delta = 0 if rng.random() < IDLE_SHARE else rng.randint(1, scale)
                    if delta:
                        value += delta
                        w.expected_records += 1
                    state[j] = (scale, value)
                else:
                    w.expected_records += 1
                p.time_unix_nano = p.start_time_unix_nano + (r + 1) * INTERVAL_NS
                p.as_int = value
            bodies.append(request.SerializeToString())
        w.body_bytes += sum(len(b) for b in bodies)
        w.bodies.append(bodies)
    w.expected_quantity = sum(v for _, _, state in messages for _, v in state)
    w.encode_s = time.perf_counter() - t0
    return w


def warmup_body(seed: int) -> tuple[bytes, int, int]:
    """A small request of its own series (another resource): imports, caches, connections.
    Returns (body, records it writes, their quantity)."""
    w = build(len(shapes()), 1, 10_000, 1, seed + 1)
    return w.bodies[0][0], w.expected_records, w.expected_quantity


# --- ledgers -------------------------------------------------------------------------------
@contextlib.contextmanager
def ledger_url(backend: str, workdir: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{workdir / 'ledger.db'}"
        return
    import psycopg

    schema = f"bench_ingest_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_BASE, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        sep = "&" if "?" in PG_BASE else "?"
        yield f"{PG_BASE}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_BASE, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def ledger_totals(url: str) -> tuple[int, int, dict[str, int], int]:
    """(records, sum of quantities, records by pricing status, stream marks)."""
    queries = (
        "SELECT count(*), coalesce(sum(quantity), 0) FROM cost_records",
        "SELECT pricing_status, count(*) FROM cost_records GROUP BY pricing_status",
        "SELECT count(*) FROM stream_marks",
    )
    if url.startswith("sqlite:///"):
        import sqlite3

        conn = sqlite3.connect(url[len("sqlite:///") :])
        try:
            (n, q), status, (marks,) = (
                conn.execute(queries[0]).fetchone(),
                conn.execute(queries[1]).fetchall(),
                conn.execute(queries[2]).fetchone(),
            )
        finally:
            conn.close()
    else:
        import psycopg

        with psycopg.connect(url) as pg:
            (n, q) = pg.execute(queries[0]).fetchone() or (0, 0)
            status = pg.execute(queries[1]).fetchall()
            (marks,) = pg.execute(queries[2]).fetchone() or (0,)
    return int(n), int(q), {s: int(c) for s, c in status}, int(marks)


def pg_available() -> str | None:
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed"
    try:
        with psycopg.connect(PG_BASE, connect_timeout=3):
            return None
    except Exception as exc:
        return f"PostgreSQL unreachable at {PG_BASE}: {exc}"


# --- the collector process -----------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (the workers of ``--workers``), from /proc."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError):
                continue
            if ppid == pid:
                out.append(int(entry))
    return sorted(out)


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of ``pid``, in KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


@dataclass
class CollectorProcess:
    url: str
    workdir: Path
    proc: subprocess.Popen[str] | None = None
    port: int = 0
    workers: int = 1
    grpc: bool = False  # also serve OTLP/gRPC, on grpc_port (ingest_latency.py)
    grpc_port: int = 0

    def start(self, timeout: float = 30.0) -> CollectorProcess:
        self.port = free_port()
        self.grpc_port = free_port() if self.grpc else 0
        log = open(self.workdir / "collector.log", "a")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "otel_tokens.collector",
                "--http-endpoint",
                f"127.0.0.1:{self.port}",
                "--grpc-endpoint",
                f"127.0.0.1:{self.grpc_port}" if self.grpc else "none",
                "--ledger",
                self.url,
                "--log-level",
                "WARNING",
                *(["--workers", str(self.workers)] if self.workers > 1 else []),
            ],
            cwd=self.workdir,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        log.close()
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if ready:
                line = self.proc.stdout.readline()
                if "ready:" in line:
                    return self
                if not line and self.proc.poll() is not None:
                    break
            elif self.proc.poll() is not None:
                break
        self.kill()
        raise RuntimeError(f"collector did not start:\n{self.log_text()[-2000:]}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def pricing_pids(self) -> list[int]:
        """The processes that price: the collector, or its workers."""
        return child_pids(self.pid) if self.workers > 1 else [self.pid]

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pricing_pids)

    def status(self) -> dict[str, int]:
        """`proc_status` summed over the pricing processes (peaks: the sum of each one's)."""
        out = {"VmRSS": 0, "VmHWM": 0}
        for pid in self.pricing_pids:
            for key, value in proc_status(pid).items():
                out[key] += value
        return out

    def log_text(self) -> str:
        path = self.workdir / "collector.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def close(self) -> None:
        self.kill()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()


# --- the client ----------------------------------------------------------------------------
class Sender:
    """``concurrency`` keep-alive connections, each on its own thread."""

    def __init__(self, port: int, concurrency: int) -> None:
        self.port = port
        self.concurrency = concurrency
        self.conns = [
            http.client.HTTPConnection("127.0.0.1", port, timeout=300) for _ in range(concurrency)
        ]
        self.answers: list[tuple[int, bytes]] = []
        self._lock = threading.Lock()

    def post(self, conn: http.client.HTTPConnection, body: bytes) -> tuple[int, bytes]:
        conn.request(
            "POST",
            "/v1/metrics",
            body=body,
            headers={"Content-Type": "application/x-protobuf"},
        )
        resp = conn.getresponse()
        data = resp.read()
        if resp.getheader("Connection", "").lower() == "close":
            conn.close()
        return resp.status, data

    def round(self, bodies: Sequence[bytes]) -> None:
        """Send every body of one export round; return when all are answered."""
        if self.concurrency == 1:
            for body in bodies:
                self.answers.append(self.post(self.conns[0], body))
            return
        work: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        for body in bodies:
            work.put(body)
        for _ in self.conns:
            work.put(None)

        def worker(conn: http.client.HTTPConnection) -> None:
            got = []
            while (body := work.get()) is not None:
                got.append(self.post(conn, body))
            with self._lock:
                self.answers += got

        threads = [threading.Thread(target=worker, args=(c,)) for c in self.conns]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def close(self) -> None:
        for c in self.conns:
            c.close()


def count_metrics_series(port: int) -> int:
    """Samples of otel_tokens_tokens_total on /metrics: the collector's in-memory counters
    (read after the peak RSS, since rendering the page takes memory too)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("GET", "/metrics")
        page = conn.getresponse().read().decode()
    finally:
        conn.close()
    return sum(1 for line in page.splitlines() if line.startswith("otel_tokens_tokens_total{"))


def check_answers(answers: Sequence[tuple[int, bytes]]) -> list[str]:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceResponse,
    )

    problems = []
    statuses = Counter(status for status, _ in answers)
    if set(statuses) != {200}:
        problems.append(f"answers by status: {dict(statuses)}")
    rejected = 0
    for status, body in answers:
        if status == 200 and body:
            answer = ExportMetricsServiceResponse.FromString(body)
            rejected += answer.partial_success.rejected_data_points
    if rejected:
        problems.append(f"{rejected} points rejected")
    return problems


# --- one measurement -----------------------------------------------------------------------
@dataclass
class Result:
    backend: str
    series: int
    exports: int
    requests: int
    points: int
    points_per_request: int
    kib_per_request: float
    records: int
    expected_records: int
    seconds: float
    points_per_s: float
    records_per_s: float
    collector_cpu_s: float
    rss_ready_mib: float
    rss_end_mib: float
    peak_rss_mib: float
    by_status: dict[str, int]
    metrics_series: int
    round_seconds: list[float]
    problems: list[str]
    encode_s: float
    py_spy: dict[str, list[tuple[str, float, float]]] | None = None
    workers: int = 1

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def later_points_per_s(self) -> float:
        """Points/s of the exports after the first: every series already known (the steady
        state of long-lived series; the first export is each series' slow path)."""
        later = self.round_seconds[1:]
        return self.series * len(later) / sum(later) if later and sum(later) > 0 else 0.0


def measure(
    backend: str,
    w: Workload,
    concurrency: int,
    py_spy: str | None,
    seed: int,
    workers: int = 1,
) -> Result:
    with (
        tempfile.TemporaryDirectory(prefix="otel-tokens-ingest-") as tmp,
        ledger_url(backend, Path(tmp)) as url,
    ):
        workdir = Path(tmp)
        collector = CollectorProcess(url, workdir, workers=workers).start()
        spy: subprocess.Popen[bytes] | None = None
        try:
            rss_ready = collector.status()["VmRSS"]
            sender = Sender(collector.port, concurrency)
            body, warm_records, warm_quantity = warmup_body(seed)
            warm = [sender.post(sender.conns[0], body)]
            if py_spy:
                spy = subprocess.Popen(
                    [
                        py_spy,
                        "record",
                        "--pid",
                        str(collector.pid),
                        "--format",
                        "raw",
                        "--function",
                        "--threads",
                        *(["--subprocesses"] if workers > 1 else []),
                        "--rate",
                        str(SPY_RATE),
                        "--output",
                        str(workdir / "spy.txt"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                time.sleep(1.0)
            rounds = []
            cpu0 = collector.cpu_seconds()
            t0 = time.perf_counter()
            for bodies in w.bodies:
                r0 = time.perf_counter()
                sender.round(bodies)
                rounds.append(time.perf_counter() - r0)
            seconds = time.perf_counter() - t0
            cpu = collector.cpu_seconds() - cpu0
            status = collector.status()
            profile = None
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(60)
                profile = read_py_spy(workdir / "spy.txt")
            sender.close()
            metrics_series = count_metrics_series(collector.port)
            problems = check_answers(warm) + check_answers(sender.answers)
            if len(sender.answers) != w.requests:
                problems.append(f"{len(sender.answers)} answers for {w.requests} requests")
            code = collector.stop()
            if code != 0:
                problems.append(f"collector exited with {code}")
            n, quantity, by_status, marks = ledger_totals(url)
            records = n - warm_records
            if records != w.expected_records:
                problems.append(f"ledger has {records} records, expected {w.expected_records}")
            if quantity - warm_quantity != w.expected_quantity:
                problems.append(
                    f"ledger quantity {quantity - warm_quantity}, expected {w.expected_quantity}"
                )
            if marks - len(shapes()) != w.series:
                problems.append(f"{marks - len(shapes())} stream marks for {w.series} series")
            if problems:
                problems.append("collector log tail: " + collector.log_text()[-1000:])
        finally:
            if spy is not None and spy.poll() is None:
                spy.kill()
                spy.wait()
            collector.close()
    return Result(
        backend=backend,
        series=w.series,
        exports=w.exports,
        requests=w.requests,
        points=w.points,
        points_per_request=round(w.points / w.requests),
        kib_per_request=w.body_bytes / w.requests / 1024,
        records=records,
        expected_records=w.expected_records,
        seconds=seconds,
        points_per_s=w.points / seconds,
        records_per_s=records / seconds,
        collector_cpu_s=cpu,
        rss_ready_mib=rss_ready / 1024,
        rss_end_mib=status["VmRSS"] / 1024,
        peak_rss_mib=status["VmHWM"] / 1024,
        by_status=by_status,
        metrics_series=metrics_series,
        round_seconds=rounds,
        problems=problems,
        encode_s=w.encode_s,
        py_spy=profile,
        workers=workers,
    )


# --- profiles ------------------------------------------------------------------------------
_FRAME = re.compile(r"^(.*) \((.*)\)$")
# Frames every request runs through (threads, socketserver, http.server): not hot spots.
_PLUMBING = (
    "(threading.py)",
    "(socketserver.py)",
    "(http/server.py)",
    "_Server.finish_request",
    "_Server._serve_connection",
)


def _short(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    func, where = m.groups()
    path = where.split(":")[0]
    for marker in ("site-packages/", "/src/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{func} ({path})"


def read_py_spy(path: Path) -> dict[str, list[tuple[str, float, float]]]:
    """py-spy raw (collapsed) stacks -> {"self": rows, "total": rows}, each row
    (function, self %, total %) of the busy samples, sorted by self or by total time."""
    self_n: Counter[str] = Counter()
    total_n: Counter[str] = Counter()
    busy = 0
    if not path.exists():
        return {}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = [_short(f) for f in stack.split(";")[1:]]  # [0] is the thread
        leaf = frames[-1] if frames else ""
        # Idle threads: waiting to accept, to read a request, or in the main wait loop.
        if any(
            k in leaf
            for k in ("select (", "poll (", "wait (", "readinto (", "accept (", "_wait_for_tstate")
        ):
            continue
        n = int(count)
        busy += n
        self_n[leaf] += n
        for f in set(frames):
            total_n[f] += n
    if not busy:
        return {}

    def rows(by: Counter[str]) -> list[tuple[str, float, float]]:
        return [
            (f, 100 * self_n[f] / busy, 100 * total_n[f] / busy)
            for f, _ in by.most_common(80)
            if not any(p in f for p in _PLUMBING)
        ]

    return {"self": rows(self_n), "total": rows(total_n), "busy_samples": [("", busy, 0.0)]}


def deep_size(obj: Any, seen: set[int] | None = None) -> int:
    """Bytes held by ``obj`` and the containers, keys and values inside (each object once)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(deep_size(k, seen) + deep_size(v, seen) for k, v in obj.items())
    elif isinstance(obj, (tuple, list)):
        size += sum(deep_size(x, seen) for x in obj)
    return size


def profile_in_process(backend: str, w: Workload, top: int) -> None:
    """Run the pipeline in this process under cProfile: protobuf parsing, point extraction,
    pricing, the ledger transaction, the response (no HTTP: its share is small)."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )

    from otel_tokens.collector import Collector
    from otel_tokens.collector.core import ANONYMOUS

    with (
        tempfile.TemporaryDirectory(prefix="otel-tokens-ingest-") as tmp,
        ledger_url(backend, Path(tmp)) as url,
        Collector(ledger=url, http_endpoint="127.0.0.1:0", grpc_endpoint="none") as c,
    ):
        pipeline = c.pipeline
        assert pipeline is not None
        body, _, _ = warmup_body(w.seed)
        pipeline.export_metrics(ExportMetricsServiceRequest.FromString(body), ANONYMOUS)
        prof = cProfile.Profile()
        t0 = time.perf_counter()
        prof.enable()
        for bodies in w.bodies:
            for body in bodies:
                request = ExportMetricsServiceRequest()
                request.ParseFromString(body)
                pipeline.export_metrics(request, ANONYMOUS).SerializeToString()
        prof.disable()
        seconds = time.perf_counter() - t0
        stats = pipeline.stats
        counters = (stats.tokens, stats.cost, stats.unpriced)
        held = deep_size(counters) / 2**20
    print(
        f"\n== cProfile, {backend}, {w.series} series x {w.exports} exports: "
        f"{w.points} points in {seconds:.1f} s under the profiler "
        f"({w.points / seconds:.0f} points/s) ==\n"
        f"   the collector's Prometheus counters now hold {len(stats.tokens)} token, "
        f"{len(stats.cost)} cost and {len(stats.unpriced)} unpriced keys: {held:.1f} MiB",
        file=sys.stderr,
    )
    for key in ("tottime", "cumulative"):
        stats = pstats.Stats(prof, stream=sys.stderr)
        stats.strip_dirs().sort_stats(key).print_stats(top)


# --- output --------------------------------------------------------------------------------
def machine(use_pg: bool) -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import sqlite3

    server, rtt, psycopg_version = "", (0.0, 0.0), ""
    if use_pg:
        import psycopg

        psycopg_version = psycopg.__version__
        with contextlib.suppress(Exception), psycopg.connect(PG_BASE, connect_timeout=3) as conn:
            server = str((conn.execute("SHOW server_version").fetchone() or ("",))[0])
            rtt = round_trip(conn)

    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "loadavg": os.getloadavg(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": server,
        "psycopg": psycopg_version,
        "pg_round_trip_us": rtt[0],
        "pg_round_trip_cpu_us": rtt[1],
    }


def round_trip(conn: Any, n: int = 3000) -> tuple[float, float]:
    """A trivial prepared statement on PostgreSQL: (wall, client CPU) per execute, in µs.
    The ledger's cost per point is mostly such round trips, and on this shared VM their
    price changes from hour to hour: this puts a figure on it next to each run."""
    cur = conn.cursor()
    for i in range(50):
        cur.execute("SELECT %s::bigint", (i,))
        cur.fetchone()
    t0, c0 = time.perf_counter(), time.thread_time()
    for i in range(n):
        cur.execute("SELECT %s::bigint", (i,))
        cur.fetchone()
    return (time.perf_counter() - t0) / n * 1e6, (time.thread_time() - c0) / n * 1e6


HEADER = (
    f"{'ledger':<10} {'series':>7} {'exports':>7} {'requests':>8} {'pts/req':>7} {'KiB/req':>7} "
    f"{'points':>7} {'records':>7} {'seconds':>8} {'points/s':>9} {'later/s':>9} {'records/s':>9} "
    f"{'CPU %':>5} {'RSS ready':>9} {'peak RSS':>9} {'counters':>8}  check"
)


def row(r: Result) -> str:
    return (
        f"{r.backend:<10} {r.series:>7} {r.exports:>7} {r.requests:>8} {r.points_per_request:>7} "
        f"{r.kib_per_request:>7.0f} "
        f"{r.points:>7} {r.records:>7} {r.seconds:>8.2f} {r.points_per_s:>9.0f} "
        f"{r.later_points_per_s:>9.0f} "
        f"{r.records_per_s:>9.0f} {100 * r.collector_cpu_s / r.seconds:>5.0f} "
        f"{r.rss_ready_mib:>7.1f}Mi {r.peak_rss_mib:>7.1f}Mi {r.metrics_series:>8}  "
        f"{'ok' if r.ok else 'FAILED'}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1k and 10k series only (< 90 s)")
    parser.add_argument("--series", type=int, nargs="+", help="distinct series (1000 10000 100000)")
    parser.add_argument(
        "--ledgers", nargs="+", choices=("sqlite", "postgresql"), default=["sqlite", "postgresql"]
    )
    parser.add_argument("--exports", type=int, default=3, help="cumulative exports of each series")
    parser.add_argument("--batch", type=int, default=5000, help="max points per request (5000)")
    parser.add_argument("--instances", type=int, default=10, help="OTLP resources (10)")
    parser.add_argument(
        "--concurrency", type=int, default=2, help="keep-alive connections sending (2)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="run the collector with --workers N (1: one process, as by default)",
    )
    parser.add_argument("--seed", type=int, default=20260101)
    parser.add_argument("--json", metavar="PATH", help="also write JSON to PATH ('-': stdout)")
    parser.add_argument(
        "--profile", action="store_true", help="cProfile the pipeline in-process instead"
    )
    parser.add_argument(
        "--py-spy",
        nargs="?",
        const="py-spy",
        metavar="BINARY",
        help="sample the collector process with py-spy while timing (slows it a little)",
    )
    parser.add_argument("--top", type=int, default=35, help="rows of each profile")
    args = parser.parse_args(argv)

    series = args.series or ([1000, 10_000] if args.quick else [1000, 10_000, 100_000])
    ledgers = list(args.ledgers)
    if "postgresql" in ledgers and (reason := pg_available()):
        print(f"PostgreSQL not measured: {reason}", file=sys.stderr)
        ledgers.remove("postgresql")
    spy = None
    if args.py_spy:
        spy = shutil.which(args.py_spy) or (args.py_spy if Path(args.py_spy).exists() else None)
        if spy is None:
            parser.error(f"py-spy not found: {args.py_spy}")

    out = sys.stderr if args.json == "-" else sys.stdout
    info = machine("postgresql" in ledgers)
    print(
        f"# {info['nproc']} CPU ({info['cpu']}), Python {info['python']}, Linux {info['kernel']}, "
        f"SQLite {info['sqlite']}, PostgreSQL {info['postgresql'] or '-'} "
        f"(psycopg {info['psycopg'] or '-'}), "
        f"load average {' '.join(f'{x:.2f}' for x in info['loadavg'])}",
        file=out,
    )
    if info["postgresql"]:
        print(
            f"# PostgreSQL round trip (SELECT $1, psycopg, from this process): "
            f"{info['pg_round_trip_us']:.0f} µs wall, {info['pg_round_trip_cpu_us']:.0f} µs "
            "client CPU",
            file=out,
        )
    print(
        f"# {args.exports} cumulative exports per series, {args.instances} resources, "
        f"<= {args.batch} points/request, {args.concurrency} keep-alive connection(s), "
        f"collector workers: {args.workers}",
        file=out,
        flush=True,
    )
    started = time.perf_counter()
    results: list[Result] = []
    header_done = False
    for n in series:
        w = build(n, args.exports, args.batch, args.instances, args.seed)
        for backend in ledgers:
            if args.profile:
                profile_in_process(backend, w, args.top)
                continue
            if not header_done:
                print(HEADER, file=out, flush=True)
                header_done = True
            r = measure(backend, w, args.concurrency, spy, args.seed, args.workers)
            results.append(r)
            print(row(r), file=out, flush=True)
            for problem in r.problems:
                print(f"    ! {problem}", file=out)
            spy_rows = dict(r.py_spy or {})
            if spy_rows:
                busy = spy_rows.pop("busy_samples")[0][1]
                print(
                    f"    py-spy: {busy:.0f} busy samples of ~{r.seconds * SPY_RATE:.0f} "
                    f"({r.seconds:.1f} s at {SPY_RATE} Hz, one handler thread busy at a time)",
                    file=out,
                )
            for order, rows in spy_rows.items():
                print(
                    f"    py-spy, {backend}, {n} series, by {order} time "
                    "(% of busy samples: self, total):",
                    file=out,
                )
                for func, self_pct, total_pct in rows[: args.top]:
                    print(f"    {self_pct:5.1f} {total_pct:5.1f}  {func}", file=out)
        del w
    print(
        f"# total {time.perf_counter() - started:.0f} s, load average now "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        file=out,
    )
    if args.json:
        payload = {
            "machine": info,
            "settings": {
                k: getattr(args, k)
                for k in ("exports", "batch", "instances", "concurrency", "workers")
            },
            "results": [asdict(r) for r in results],
        }
        text = json.dumps(payload, indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
