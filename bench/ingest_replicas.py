"""Several pricing collectors on one PostgreSQL ledger: throughput with 1, 2, 3 replicas, and
exactly-once while replicas are killed (SIGKILL) and restarted during the run.

The workload is ``ingest.py``'s (cumulative ``gen_ai.billing.tokens`` points of N series,
exported several times). Each request carries one resource's streams and always goes to the
same replica (request k to replica k mod N), as the OpenTelemetry Collector's
``loadbalancing`` exporter with ``routing_key: streamID`` keeps a stream on one replica
(collector/otelcol-loadbalancing.yaml). Each replica gets ``--concurrency`` keep-alive
connections; a request that fails (connection refused or reset, 503) is sent again until
it is answered 200, as an exporter with ``max_elapsed_time: 0`` does, to the replica that
owns it (restarted, it listens on a new port).

With ``--chaos SECONDS``, every SECONDS one replica (in turn) is killed with SIGKILL and
started again. After each run the ledger must hold exactly the records and the token
quantity the workload implies, and one stream mark per series.

    python bench/ingest_replicas.py --replicas 1 2 3 --series 10000
    python bench/ingest_replicas.py --replicas 2 3 --series 10000 --chaos 1.5
"""

from __future__ import annotations

import argparse
import http.client
import os
import queue
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import ingest  # the workload and the ledgers of the ingest benchmark


class Replicas:
    def __init__(self, url: str, workdir: Path, n: int) -> None:
        self.procs = []
        for i in range(n):
            d = workdir / f"replica-{i}"
            d.mkdir()
            self.procs.append(ingest.CollectorProcess(url, d))
        for p in self.procs:
            p.start()
        self.kills = 0

    def restart(self, i: int) -> None:
        p = self.procs[i]
        p.kill()  # SIGKILL
        self.kills += 1
        time.sleep(0.2)
        p.start()

    def close(self) -> list[int]:
        codes = [p.stop() for p in self.procs]
        for p in self.procs:
            p.close()
        return codes


def post(replicas: Replicas, i: int, body: bytes, conns: dict[int, tuple[int, object]]) -> int:
    """Send ``body`` to replica ``i`` until it is acknowledged; the attempts it took."""
    attempts = 0
    while True:
        attempts += 1
        port = replicas.procs[i].port
        held = conns.get(i)
        if held is None or held[0] != port:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            conns[i] = (port, conn)
        conn = conns[i][1]  # type: ignore[assignment]
        try:
            conn.request(  # type: ignore[attr-defined]
                "POST", "/v1/metrics", body=body, headers={"Content-Type": "application/x-protobuf"}
            )
            resp = conn.getresponse()  # type: ignore[attr-defined]
            resp.read()
            if resp.status == 200:
                return attempts
            if resp.status != 503:
                raise RuntimeError(f"answer {resp.status}")
        except (OSError, http.client.HTTPException):
            conn.close()  # type: ignore[attr-defined]
            conns.pop(i, None)
        time.sleep(0.1)


def run(w: ingest.Workload, n: int, concurrency: int, chaos: float | None) -> dict[str, object]:
    with (
        tempfile.TemporaryDirectory(prefix="otel-tokens-replicas-") as tmp,
        ingest.ledger_url("postgresql", Path(tmp)) as url,
    ):
        replicas = Replicas(url, Path(tmp), n)
        stop = threading.Event()
        retries = 0
        lock = threading.Lock()

        def chaos_loop() -> None:
            k = 0
            assert chaos is not None
            while not stop.wait(chaos):
                replicas.restart(k % n)
                k += 1

        monkey = threading.Thread(target=chaos_loop) if chaos else None
        t0 = time.perf_counter()
        if monkey:
            monkey.start()
        try:
            for bodies in w.bodies:
                queues: list[queue.SimpleQueue[bytes | None]] = [
                    queue.SimpleQueue() for _ in range(n)
                ]
                for k, body in enumerate(bodies):
                    queues[k % n].put(body)

                def worker(i: int, q: queue.SimpleQueue[bytes | None]) -> None:
                    nonlocal retries
                    conns: dict[int, tuple[int, object]] = {}
                    while (body := q.get()) is not None:
                        extra = post(replicas, i, body, conns) - 1
                        if extra:
                            with lock:
                                retries += extra

                threads = []
                for i, q in enumerate(queues):
                    for _ in range(concurrency):
                        q.put(None)
                        threads.append(threading.Thread(target=worker, args=(i, q)))
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
            seconds = time.perf_counter() - t0
        finally:
            stop.set()
            if monkey:
                monkey.join()
            codes = replicas.close()
        n_records, quantity, _, marks = ingest.ledger_totals(url)
    problems = []
    if n_records != w.expected_records:
        problems.append(f"{n_records} records, expected {w.expected_records}")
    if quantity != w.expected_quantity:
        problems.append(f"quantity {quantity}, expected {w.expected_quantity}")
    if marks != w.series:
        problems.append(f"{marks} stream marks for {w.series} series")
    return {
        "replicas": n,
        "points": w.points,
        "seconds": seconds,
        "points_per_s": w.points / seconds,
        "kills": replicas.kills,
        "retries": retries,
        "exit_codes": codes,
        "problems": problems,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--exports", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1000, help="max points per request (1000)")
    parser.add_argument("--concurrency", type=int, default=2, help="connections per replica (2)")
    parser.add_argument("--chaos", type=float, metavar="SECONDS", help="kill a replica every ...")
    args = parser.parse_args(argv)
    if reason := ingest.pg_available():
        print(f"PostgreSQL not available: {reason}", file=sys.stderr)
        return 1
    w = ingest.build(args.series, args.exports, args.batch, 10, 20260101)
    every = f"every {args.chaos:.1f} s" if args.chaos else "off"
    print(
        f"# {w.points} points in {w.requests} requests ({args.series} series x {args.exports} "
        f"exports), {args.concurrency} connection(s) per replica, chaos "
        f"{every}, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    ok = True
    for n in args.replicas:
        r = run(w, n, args.concurrency, args.chaos)
        problems = r["problems"]
        assert isinstance(problems, list)
        ok = ok and not problems
        print(
            f"replicas {n}: {r['points_per_s']:,.0f} points/s ({r['seconds']:.2f} s), "
            f"{r['kills']} kills, {r['retries']} retried requests, ledger "
            f"{'exact' if not problems else '; '.join(problems)}, load average "
            f"{os.getloadavg()[0]:.2f}",
            flush=True,
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
