"""The pricing collector's acknowledgement latency at a fixed offered rate, over OTLP/HTTP and
OTLP/gRPC, and its memory over many exports of 100,000 series (issue 15).

The workload, the collector process and the ledger checks are ``ingest.py``'s (cumulative
``gen_ai.billing.tokens`` points of N series over 10 resources, pre-encoded; the collector as
its own process; the ledger's records, quantity and stream marks checked exact afterwards).

* **max**: the closed-loop throughput of the same collector on the same ledger, as
  ``ingest.py`` measures it (10k series x 3 exports, requests of <= 5000 points, 2 keep-alive
  connections, one export round at a time): ``ingest.measure`` for OTLP/HTTP, the same loop
  over gRPC channels for OTLP/gRPC.
* **latency** (open loop): requests of ``--points-per-request`` points, each due at a fixed
  time so that the points arrive at the offered rate (``--rate`` points/s, or ``--load``
  fractions of the max just measured: 0.5 is half load), sent by ``--connections`` clients,
  each with its own connection, the first free one taking the next due request. A request is
  timed from when it was due (not when a free client sent it: a late send is latency too)
  to its answer; ``service`` is from its actual send. Answers 503 / UNAVAILABLE are retried
  after the server's hint, as the SDKs do, and counted; the latency then includes the retry.
* **memory**: ``--memory-series`` series (100k) exported ``--memory-rounds`` times (10) in
  closed loop over HTTP; the collector's VmRSS after each round. Flat means the growth over
  the last half of the rounds is under 2% (or 2 MiB).

The clients (``_otlp_clients.py``): an ``http.client`` keep-alive connection each, or a gRPC
channel each (its own TCP connection) through grpcio's generic client, ``unary_unary`` on
``MetricsService/Export`` (the method ``MetricsServiceStub`` calls) with the pre-encoded
bodies as they are.

    python bench/ingest_latency.py --quick          # both ledgers and transports, < 2 min
    python bench/ingest_latency.py                  # 10 and 50% of max, 50 and 500 points
    python bench/ingest_latency.py --rate 2500 --parts latency --ledgers sqlite
    python bench/ingest_latency.py --json out.json  # also write JSON ('-': stdout)
"""

from __future__ import annotations

import argparse
import math
import os
import queue
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import ingest  # the workload, the collector process and the ledgers of the ingest benchmark
from _otlp_clients import Answer, Client, answer_problems, connect, deliver
from _report import write_json

LATE_S = 0.005  # a request sent this long after it was due counts as sent late


def pressure() -> dict[str, float]:
    """Seconds some task waited for a CPU and for I/O since boot (Linux PSI, "some"), or {}:
    over a run, the share of its time during which the machine was short of either."""
    out = {}
    for kind in ("cpu", "io"):
        try:
            with open(f"/proc/pressure/{kind}") as f:
                some = f.readline().split()
        except OSError:
            return {}
        out[kind] = int(some[-1].partition("=")[2]) / 1e6
    return out


# --- a collector and its ledger for one measurement ----------------------------------------
@dataclass
class Session:
    backend: str
    collector: ingest.CollectorProcess
    url: str
    warm_records: int
    warm_quantity: int
    transport: str

    def new_client(self) -> Client:
        c = self.collector
        return connect(self.transport, c.grpc_port if self.transport == "grpc" else c.port)

    def check(self, w: ingest.Workload) -> list[str]:
        """Stop the collector, then compare the ledger with what ``w`` implies."""
        problems = []
        code = self.collector.stop()
        if code != 0:
            problems.append(f"collector exited with {code}")
        n, quantity, _, marks = ingest.ledger_totals(self.url)
        if n - self.warm_records != w.expected_records:
            problems.append(
                f"ledger has {n - self.warm_records} records, expected {w.expected_records}"
            )
        if quantity - self.warm_quantity != w.expected_quantity:
            problems.append(
                f"ledger quantity {quantity - self.warm_quantity}, expected {w.expected_quantity}"
            )
        if marks - len(ingest.shapes()) != w.series:
            problems.append(f"{marks - len(ingest.shapes())} stream marks for {w.series} series")
        if problems:
            problems.append("collector log tail: " + self.collector.log_text()[-1000:])
        return problems


@contextmanager
def session(backend: str, transport: str, seed: int) -> Iterator[Session]:
    """A new ledger and collector, warmed up by one request of series of their own."""
    with (
        tempfile.TemporaryDirectory(prefix="otel-tokens-latency-") as tmp,
        ingest.ledger_url(backend, Path(tmp)) as url,
    ):
        collector = ingest.CollectorProcess(url, Path(tmp), grpc=transport == "grpc").start()
        try:
            s = Session(backend, collector, url, 0, 0, transport)
            body, s.warm_records, s.warm_quantity = ingest.warmup_body(seed)
            client = s.new_client()
            answer, _ = deliver(client, body)
            client.close()
            if problems := answer_problems([answer]):
                raise RuntimeError(f"warm-up failed: {problems}")
            yield s
        finally:
            collector.close()


# --- max: closed loop ----------------------------------------------------------------------
def grpc_max(
    backend: str, w: ingest.Workload, concurrency: int, seed: int
) -> tuple[float, float, list[str]]:
    """``ingest.measure``'s loop over gRPC: one export round at a time, ``concurrency``
    channels taking bodies from one queue. (points/s, collector CPU s, problems)."""
    with session(backend, "grpc", seed) as s:
        clients = [s.new_client() for _ in range(concurrency)]
        answers: list[Answer] = []
        lock = threading.Lock()

        def worker(client: Client, work: queue.SimpleQueue[bytes | None]) -> None:
            got = []
            while (body := work.get()) is not None:
                got.append(deliver(client, body)[0])
            with lock:
                answers.extend(got)

        cpu0 = ingest.cpu_seconds(s.collector.pid)
        t0 = time.perf_counter()
        for bodies in w.bodies:
            work: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
            for body in bodies:
                work.put(body)
            for _ in clients:
                work.put(None)
            threads = [threading.Thread(target=worker, args=(c, work)) for c in clients]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        seconds = time.perf_counter() - t0
        cpu = ingest.cpu_seconds(s.collector.pid) - cpu0
        for c in clients:
            c.close()
        problems = answer_problems(answers) + s.check(w)
    return w.points / seconds, cpu, problems


def max_rate(
    backend: str, transport: str, series: int, batch: int, concurrency: int, seed: int
) -> dict[str, Any]:
    """The closed-loop max: points/s, the collector's CPU per point, problems."""
    w = ingest.build(series, 3, batch, 10, seed)
    if transport == "http":
        r = ingest.measure(backend, w, concurrency, None, seed)
        rate, cpu, problems = r.points_per_s, r.collector_cpu_s, r.problems
    else:
        rate, cpu, problems = grpc_max(backend, w, concurrency, seed)
    return {
        "points_per_s": rate,
        "cpu_us_per_point": cpu / w.points * 1e6,
        "points_per_request": round(w.points / w.requests),
        "loadavg": os.getloadavg(),
        "problems": problems,
    }


# --- latency: open loop --------------------------------------------------------------------
@dataclass
class Latency:
    backend: str
    transport: str
    max_points_per_s: float | None
    offered_points_per_s: float
    points_per_request: int
    connections: int
    requests: int
    points: int
    seconds: float
    achieved_points_per_s: float
    ms: dict[str, float]  # from due time: p50, p95, p99, max
    service_ms: dict[str, float]  # from the actual send
    sent_late: int
    retries: int
    collector_cpu_pct: float
    cpu_us_per_point: float
    # % of the run during which some task waited for a CPU / for I/O (PSI; -1: unknown)
    cpu_pressure_pct: float
    io_pressure_pct: float
    loadavg: tuple[float, float, float]  # at the end of the run
    problems: list[str] = field(default_factory=list)


def percentiles(values: list[float]) -> dict[str, float]:
    v = sorted(values)

    def at(p: float) -> float:
        return v[max(0, math.ceil(p * len(v)) - 1)] * 1000

    return {"p50": at(0.5), "p95": at(0.95), "p99": at(0.99), "max": v[-1] * 1000}


def open_loop(
    s: Session, w: ingest.Workload, rate: float, connections: int
) -> tuple[list[tuple[float, float, float]], list[Answer], int, float]:
    """Send every body at its due time; ([(due, sent, done)], answers, retries, seconds)."""
    schedule, due = [], 0.0
    step = w.points_per_round / len(w.bodies[0]) / rate  # requests of a round are near equal
    for bodies in w.bodies:
        for body in bodies:
            schedule.append((due, body))
            due += step
    clients = [s.new_client() for _ in range(connections)]
    items = iter(schedule)
    lock = threading.Lock()
    timings: list[tuple[float, float, float]] = []
    answers: list[Answer] = []
    retries = 0
    t0 = time.perf_counter() + 0.1

    def worker(client: Client) -> None:
        nonlocal retries
        got, sent_again = [], 0
        while True:
            with lock:
                item = next(items, None)
            if item is None:
                break
            offset, body = item
            if (wait := t0 + offset - time.perf_counter()) > 0:
                time.sleep(wait)
            sent = time.perf_counter()
            answer, n = deliver(client, body)
            got.append((t0 + offset, sent, time.perf_counter(), answer))
            sent_again += n
        with lock:
            timings.extend((d, st, dn) for d, st, dn, _ in got)
            answers.extend(a for *_, a in got)
            retries += sent_again

    threads = [threading.Thread(target=worker, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = max(dn for _, _, dn in timings) - t0
    for c in clients:
        c.close()
    return timings, answers, retries, seconds


def latency(
    backend: str,
    transport: str,
    rate: float,
    max_rate_: float | None,
    per_request: int,
    connections: int,
    run_seconds: float,
    series: int,
    seed: int,
) -> Latency:
    # At least 2 exports of each series in about ``run_seconds``: fewer series at low rates.
    series = max(10 * per_request, min(series, int(rate * run_seconds / 2)))
    exports = max(2, math.ceil(rate * run_seconds / series))
    w = ingest.build(series, exports, per_request, 10, seed)
    with session(backend, transport, seed) as s:
        cpu0, psi0 = ingest.cpu_seconds(s.collector.pid), pressure()
        timings, answers, retries, seconds = open_loop(s, w, rate, connections)
        cpu, psi1 = ingest.cpu_seconds(s.collector.pid) - cpu0, pressure()
        problems = answer_problems(answers) + s.check(w)
    if len(answers) != w.requests:
        problems.append(f"{len(answers)} answers for {w.requests} requests")
    return Latency(
        backend=backend,
        transport=transport,
        max_points_per_s=max_rate_,
        offered_points_per_s=rate,
        points_per_request=round(w.points / w.requests),
        connections=connections,
        requests=w.requests,
        points=w.points,
        seconds=seconds,
        achieved_points_per_s=w.points / seconds,
        ms=percentiles([dn - d for d, _, dn in timings]),
        service_ms=percentiles([dn - st for _, st, dn in timings]),
        sent_late=sum(1 for d, st, _ in timings if st - d > LATE_S),
        retries=retries,
        collector_cpu_pct=100 * cpu / seconds,
        cpu_us_per_point=cpu / w.points * 1e6,
        cpu_pressure_pct=100 * (psi1["cpu"] - psi0["cpu"]) / seconds if psi0 else -1,
        io_pressure_pct=100 * (psi1["io"] - psi0["io"]) / seconds if psi0 else -1,
        loadavg=os.getloadavg(),
        problems=problems,
    )


# --- memory: many exports of many series ---------------------------------------------------
@dataclass
class Memory:
    backend: str
    series: int
    rounds: int
    points_per_s: float
    rss_ready_mib: float
    rss_mib: list[float]  # after each round
    peak_rss_mib: float
    growth_last_half_mib: float
    flat: bool
    loadavg: tuple[float, float, float]  # at the end of the run
    problems: list[str] = field(default_factory=list)


def memory(backend: str, series: int, rounds: int, seed: int) -> Memory:
    w = ingest.build(series, rounds, 5000, 10, seed)
    with session(backend, "http", seed) as s:
        pid = s.collector.pid
        ready = ingest.proc_status(pid)["VmRSS"] / 1024
        sender = ingest.Sender(s.collector.port, 2)
        rss = []
        t0 = time.perf_counter()
        for bodies in w.bodies:
            sender.round(bodies)
            rss.append(ingest.proc_status(pid)["VmRSS"] / 1024)
        seconds = time.perf_counter() - t0
        peak = ingest.proc_status(pid)["VmHWM"] / 1024
        sender.close()
        problems = ingest.check_answers(sender.answers) + s.check(w)
    half = rss[len(rss) // 2 - 1] if len(rss) > 1 else rss[0]
    growth = rss[-1] - half
    return Memory(
        backend=backend,
        series=series,
        rounds=rounds,
        points_per_s=w.points / seconds,
        rss_ready_mib=ready,
        rss_mib=rss,
        peak_rss_mib=peak,
        growth_last_half_mib=growth,
        flat=growth < max(2.0, 0.02 * half),
        loadavg=os.getloadavg(),
        problems=problems,
    )


# --- output --------------------------------------------------------------------------------
def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


LAT_HEADER = (
    f"{'ledger':<10} {'via':<4} {'max p/s':>7} {'offered':>7} {'achieved':>8} {'pts/req':>7} "
    f"{'conns':>5} {'requests':>8} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'max ms':>7} "
    f"{'svc p99':>7} {'late':>5} {'retry':>5} {'CPU %':>5} {'µs/pt':>5} {'psi c':>5} "
    f"{'psi i':>5}  load  check"
)


def lat_row(r: Latency) -> str:
    m = f"{r.max_points_per_s:>7.0f}" if r.max_points_per_s else f"{'-':>7}"
    return (
        f"{r.backend:<10} {r.transport:<4} {m} {r.offered_points_per_s:>7.0f} "
        f"{r.achieved_points_per_s:>8.0f} {r.points_per_request:>7} {r.connections:>5} "
        f"{r.requests:>8} {r.ms['p50']:>7.1f} {r.ms['p95']:>7.1f} {r.ms['p99']:>7.1f} "
        f"{r.ms['max']:>7.1f} {r.service_ms['p99']:>7.1f} {r.sent_late:>5} {r.retries:>5} "
        f"{r.collector_cpu_pct:>5.0f} {r.cpu_us_per_point:>5.0f} {r.cpu_pressure_pct:>5.0f} "
        f"{r.io_pressure_pct:>5.0f}  {r.loadavg[0]:4.1f}  "
        f"{'ok' if not r.problems else 'FAILED'}"
    )


def mem_row(m: Memory) -> str:
    rounds = " ".join(f"{x:.0f}" for x in m.rss_mib)
    return (
        f"{m.backend:<10} {m.series:>7} {m.rounds:>6} {m.points_per_s:>8.0f} "
        f"{m.rss_ready_mib:>6.1f} [{rounds}] peak {m.peak_rss_mib:.1f} "
        f"last half {m.growth_last_half_mib:+.1f} MiB: {'flat' if m.flat else 'GROWING'}  "
        f"load {m.loadavg[0]:.1f}  {'ok' if not m.problems else 'FAILED'}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run of each part (< 2 min)")
    parser.add_argument(
        "--parts", nargs="+", choices=("latency", "memory"), default=["latency", "memory"]
    )
    parser.add_argument(
        "--ledgers", nargs="+", choices=("sqlite", "postgresql"), default=["sqlite", "postgresql"]
    )
    parser.add_argument(
        "--transports", nargs="+", choices=("http", "grpc"), default=["http", "grpc"]
    )
    parser.add_argument("--rate", type=float, nargs="+", help="offered points/s (no max run)")
    parser.add_argument(
        "--load", type=float, nargs="+", help="offered rate as fractions of the max (0.5)"
    )
    parser.add_argument("--points-per-request", type=int, nargs="+", help="(50; full: 50 500)")
    parser.add_argument("--connections", type=int, default=8, help="clients sending (8)")
    parser.add_argument("--seconds", type=float, help="length of a latency run (quick 6, 30)")
    parser.add_argument("--series", type=int, help="series of a latency run (quick 5k, 10k)")
    parser.add_argument("--max-series", type=int, help="series of the max run (quick 5k, 10k)")
    parser.add_argument(
        "--max-points-per-request",
        type=int,
        default=5000,
        help="request size of the max run (5000, ingest.py's --batch)",
    )
    parser.add_argument(
        "--max-connections", type=int, default=2, help="connections of the max run (2)"
    )
    parser.add_argument("--memory-series", type=int, help="(quick 10k, 100k)")
    parser.add_argument("--memory-rounds", type=int, help="exports of each series (quick 4, 10)")
    parser.add_argument("--seed", type=int, default=20260101)
    parser.add_argument("--json", metavar="PATH", help="also write JSON to PATH ('-': stdout)")
    args = parser.parse_args(argv)
    quick = args.quick
    loads = args.load or ([0.5] if quick else [0.1, 0.5])
    sizes = args.points_per_request or ([50] if quick else [50, 500])
    run_seconds = args.seconds or (6.0 if quick else 30.0)
    lat_series = args.series or (5000 if quick else 10_000)
    max_series = args.max_series or (5000 if quick else 10_000)
    mem_series = args.memory_series or (10_000 if quick else 100_000)
    mem_rounds = args.memory_rounds or (4 if quick else 10)

    ledgers = list(args.ledgers)
    if "postgresql" in ledgers and (reason := ingest.pg_available()):
        print(f"PostgreSQL not measured: {reason}", file=sys.stderr)
        ledgers.remove("postgresql")
    out = sys.stderr if args.json == "-" else sys.stdout
    info = ingest.machine("postgresql" in ledgers)
    print(
        f"# {info['nproc']} CPU, Python {info['python']}, SQLite {info['sqlite']}, "
        f"PostgreSQL {info['postgresql'] or '-'}, load average {loadavg()}",
        file=out,
        flush=True,
    )
    started = time.perf_counter()
    lats: list[Latency] = []
    mems: list[Memory] = []
    maxima: dict[str, dict[str, Any]] = {}
    if "latency" in args.parts:
        print(
            f"# open loop: {args.connections} clients, {run_seconds:.0f} s per run, "
            f"{lat_series} series; latency from each request's due time (svc: from its send)",
            file=out,
        )
        print(LAT_HEADER, file=out, flush=True)
        for backend in ledgers:
            for transport in args.transports:
                rates: list[tuple[float, float | None]] = []
                if args.rate:
                    rates = [(r, None) for r in args.rate]
                else:
                    m = max_rate(
                        backend,
                        transport,
                        max_series,
                        args.max_points_per_request,
                        args.max_connections,
                        args.seed,
                    )
                    maxima[f"{backend}/{transport}"] = m
                    top = m["points_per_s"]
                    print(
                        f"  (max {backend}/{transport}: {top:.0f} points/s in requests of "
                        f"{m['points_per_request']} points, {m['cpu_us_per_point']:.0f} µs of "
                        f"collector CPU per point, load {m['loadavg'][0]:.1f})",
                        file=out,
                    )
                    for p in m["problems"]:
                        print(f"    ! max run: {p}", file=out)
                    rates = [(f * top, top) for f in loads]
                for rate, top_ in rates:
                    for size in sizes:
                        r = latency(
                            backend,
                            transport,
                            rate,
                            top_,
                            size,
                            args.connections,
                            run_seconds,
                            lat_series,
                            args.seed,
                        )
                        lats.append(r)
                        print(lat_row(r), file=out, flush=True)
                        for p in r.problems:
                            print(f"    ! {p}", file=out)
    if "memory" in args.parts:
        print(
            f"# memory: {mem_series} series x {mem_rounds} exports over HTTP, VmRSS (MiB) "
            "after each export round",
            file=out,
        )
        print(f"{'ledger':<10} {'series':>7} {'rounds':>6} {'points/s':>8} {'ready':>6}", file=out)
        for backend in ledgers:
            m = memory(backend, mem_series, mem_rounds, args.seed)
            mems.append(m)
            print(mem_row(m), file=out, flush=True)
            for p in m.problems:
                print(f"    ! {p}", file=out)
    print(f"# total {time.perf_counter() - started:.0f} s, load average now {loadavg()}", file=out)
    write_json(
        args.json,
        {
            "machine": info,
            "settings": {k: v for k, v in vars(args).items() if k != "json"},
            "max": maxima,
            "latency": [asdict(r) for r in lats],
            "memory": [asdict(m) for m in mems],
        },
    )
    ok = all(not r.problems for r in lats) and all(not m.problems for m in mems)
    return 0 if ok and all(not m["problems"] for m in maxima.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
