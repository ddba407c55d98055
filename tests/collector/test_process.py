"""The collector as a process: graceful SIGTERM, and THE key property: killed with SIGKILL at
random moments and restarted while SDK clients keep exporting with retries, the ledger ends
with exactly the tokens the clients sent (SQLite; PostgreSQL with two replicas)."""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from otel_tokens import semconv as sc
from otel_tokens.ledger import open_ledger

from .conftest import (
    CUMULATIVE,
    DELTA,
    CollectorProcess,
    TokenClient,
    cost_total,
    expected_cost,
    free_port,
    get,
    grpc_exporter,
    http_exporter,
    parse_prometheus,
    quiet_exporter_logs,
    records_of,
    totals,
)

_BUCKETS = ("input", "cache_read", "cache_write_5m", "output", "reasoning")


def test_subprocess_serves_and_stops_gracefully(
    spawn: Callable[..., CollectorProcess], sqlite_url: str
) -> None:
    proc = spawn(
        "--ledger",
        sqlite_url,
        "--http-endpoint",
        "127.0.0.1:0",
        "--grpc-endpoint",
        "127.0.0.1:0",
        "--token",
        "k",
    )
    headers = {"authorization": "Bearer k"}
    client = TokenClient(DELTA, **{sc.BILLING_TENANT_ID: "acme"})
    client.add("input", 4000)
    assert http_exporter(proc.http_url, headers=headers).export(client.collect()).name == "SUCCESS"
    client.add("output", 600)
    g = grpc_exporter(proc.grpc_target, headers=headers)
    assert g.export(client.collect()).name == "SUCCESS"
    g.shutdown()
    page = parse_prometheus(get(f"{proc.http_url}/metrics", headers).body.decode())
    assert sum(v for _, v in page["otel_tokens_tokens_total"]) == 4600
    assert proc.terminate() == 0
    records = records_of(sqlite_url)
    assert totals(records) == {"input": 4000, "output": 600}
    assert cost_total(records) == expected_cost(client.sent)


def _export(exporters: Sequence[Any], start: int, data: Any, deadline: float) -> int:
    """Export ``data`` until one of ``exporters`` (tried in turn from ``start``) succeeds."""
    i = start
    while True:
        if exporters[i % len(exporters)].export(data).name == "SUCCESS":
            return i
        assert time.monotonic() < deadline, "exports kept failing"
        i += 1
        time.sleep(0.05)


class _Chaos:
    """Kills ``procs`` with SIGKILL and restarts them on the same ports and ledger, until
    stopped. Every other kill comes right after a commit shows in the ledger and takes every
    process down, so the one that committed dies while its answer is on its way: the window
    exactly-once depends on, hit on purpose rather than by luck. The others kill one process
    at a random moment."""

    def __init__(
        self,
        procs: Sequence[CollectorProcess],
        ledger_url: str,
        seed: int,
        pause: tuple[float, float],
    ) -> None:
        self.procs = procs
        self.ledger_url = ledger_url
        self.rng = random.Random(seed)
        self.pause = pause
        self.kills = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        ledger = open_ledger(self.ledger_url)
        try:
            while not self.stop.wait(self.rng.uniform(*self.pause)):
                victims: Sequence[CollectorProcess] = [self.rng.choice(self.procs)]
                if self.kills % 2 == 0:
                    victims = self.procs
                    before, until = ledger.count(), time.monotonic() + 1
                    while ledger.count() == before and time.monotonic() < until:
                        time.sleep(0.001)
                for proc in victims:
                    proc.kill()
                self.kills += 1
                time.sleep(self.rng.uniform(0, 0.2))  # clients find nobody there
                for proc in victims:
                    proc.start()
        except BaseException as exc:  # surfaced by the test
            self.error = exc
        finally:
            ledger.close()

    def __enter__(self) -> _Chaos:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)
        assert self.error is None, self.error


_LONGEST = 90.0  # seconds a chaos run may take to reach its kills on a loaded machine


def _chaos_run(
    procs: Sequence[CollectorProcess],
    ledger_url: str,
    seed: int,
    seconds: float,
    rounds: int,
    min_kills: int = 3,
) -> tuple[TokenClient, TokenClient, int, int]:
    """Two applications (delta and cumulative) exporting over HTTP and gRPC to ``procs``
    (alternating) while they are being killed; returns the clients, kills and rounds.

    It runs for ``seconds``, and on past them until ``min_kills`` kills have happened (a
    loaded machine restarts collectors slowly), for at most ``_LONGEST`` seconds."""
    rng = random.Random(seed)
    delta = TokenClient(DELTA, service="delta-app", **{sc.BILLING_TENANT_ID: "acme"})
    cumulative = TokenClient(CUMULATIVE, service="cumulative-app")
    start = time.monotonic()
    deadline, longest = start + seconds, start + _LONGEST
    done = 0
    with quiet_exporter_logs(), _Chaos(procs, ledger_url, seed, (0.3, 0.8)) as chaos:
        http = [http_exporter(p.http_url, timeout=0.5) for p in procs]
        grpc = [grpc_exporter(p.grpc_target, timeout=0.5) for p in procs]
        while time.monotonic() < longest:
            over = done >= rounds or time.monotonic() >= deadline
            if over and chaos.kills >= min_kills:
                break
            for client in (delta, cumulative):
                for bucket in rng.sample(_BUCKETS, 2):
                    client.add(bucket, rng.randint(1, 5000))
            give_up = time.monotonic() + 30
            _export(http + grpc, done, delta.collect(), give_up)
            _export(grpc + http, done, cumulative.collect(), give_up)
            done += 1
            time.sleep(0.01)
        kills = chaos.kills
    for exporter in grpc:
        exporter.shutdown()
    return delta, cumulative, kills, done


def _retried_commits(procs: Sequence[CollectorProcess]) -> int:
    """Batches that arrived again after they had been committed (their answer was lost
    to a kill): the collectors' debug log shows them billing nothing new."""
    pattern = re.compile(r"records written, [1-9][0-9]* unchanged")
    return sum(len(pattern.findall(p.log_text())) for p in procs)


def _check_ledger(url: str, delta: TokenClient, cumulative: TokenClient) -> None:
    records = records_of(url)
    assert totals(records, "delta-app") == dict(delta.sent)
    assert totals(records, "cumulative-app") == dict(cumulative.sent)
    assert cost_total(records, "delta-app") == expected_cost(delta.sent)
    assert cost_total(records, "cumulative-app") == expected_cost(cumulative.sent)
    assert {r.tenant for r in records if r.service_name == "delta-app"} == {"acme"}


def test_sigkill_at_random_moments_loses_nothing_and_bills_nothing_twice(
    spawn: Callable[..., CollectorProcess], sqlite_url: str
) -> None:
    proc = spawn(
        "--ledger",
        sqlite_url,
        "--http-endpoint",
        f"127.0.0.1:{free_port()}",
        "--grpc-endpoint",
        f"127.0.0.1:{free_port()}",
        "--log-level",
        "DEBUG",
        ack_delay=0.02,
    )
    delta, cumulative, kills, rounds = _chaos_run(
        [proc], sqlite_url, seed=7, seconds=5, rounds=1000
    )
    assert kills >= 3, f"only {kills} kills in {rounds} rounds"
    assert proc.terminate() == 0
    # Some batches were committed and then lost their answer to a kill; their retries
    # billed nothing new (and the totals below prove nothing was billed twice).
    assert _retried_commits([proc]) >= 1
    _check_ledger(sqlite_url, delta, cumulative)


def test_two_postgres_replicas_killed_at_random(
    spawn: Callable[..., CollectorProcess], pg_url: str
) -> None:
    procs = [
        spawn(
            "--ledger",
            pg_url,
            "--http-endpoint",
            f"127.0.0.1:{free_port()}",
            "--grpc-endpoint",
            f"127.0.0.1:{free_port()}",
            "--log-level",
            "DEBUG",
            ack_delay=0.02,
        )
        for _ in range(2)
    ]
    delta, cumulative, kills, rounds = _chaos_run(procs, pg_url, seed=11, seconds=5, rounds=1000)
    assert kills >= 3, f"only {kills} kills in {rounds} rounds"
    for proc in procs:
        assert proc.terminate() == 0
    assert _retried_commits(procs) >= 1
    _check_ledger(pg_url, delta, cumulative)


def test_a_busy_port_exits_non_zero_naming_it(tmp_path: Any) -> None:
    """A port in use, gRPC (with the HTTP one free) or HTTP: exit 5 at once, naming it."""
    import socket
    import subprocess
    import sys

    from otel_tokens.collector.cli import EXIT_LISTEN

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for args in (
            ["--grpc-endpoint", f"127.0.0.1:{port}", "--http-endpoint", f"127.0.0.1:{free_port()}"],
            ["--http-endpoint", f"127.0.0.1:{port}", "--grpc-endpoint", f"127.0.0.1:{free_port()}"],
        ):
            run = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "otel_tokens.collector",
                    "--ledger",
                    "sqlite:///l.db",
                    *args,
                ],
                check=False,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert run.returncode == EXIT_LISTEN, run.stderr
            assert f"cannot listen on 127.0.0.1:{port}" in run.stderr, run.stderr


def _gone_mid_body(url: str) -> None:
    """Announce a large body, send a little of it, hang up."""
    import socket

    host, port = url.rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port))) as s:
        s.sendall(
            b"POST /v1/metrics HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            b"Content-Length: 100000\r\n\r\n" + b"\x00" * 100
        )


def test_clients_gone_mid_body_leave_no_traceback(
    spawn: Callable[..., CollectorProcess], sqlite_url: str
) -> None:
    proc = spawn(
        "--ledger",
        sqlite_url,
        "--http-endpoint",
        f"127.0.0.1:{free_port()}",
        "--grpc-endpoint",
        "none",
        "--log-level",
        "WARNING",
    )
    for _ in range(20):
        _gone_mid_body(proc.http_url)
    time.sleep(0.5)
    assert get(f"{proc.http_url}/healthz").status == 200
    assert proc.terminate() == 0
    log = proc.log_text()
    assert "Traceback" not in log and "Error" not in log, log[-2000:]


def test_rejected_points_are_explained_at_info_rate_limited(
    spawn: Callable[..., CollectorProcess], sqlite_url: str
) -> None:
    from .conftest import post
    from .test_http import _point, _token_request

    proc = spawn(
        "--ledger",
        sqlite_url,
        "--http-endpoint",
        f"127.0.0.1:{free_port()}",
        "--grpc-endpoint",
        "none",
    )
    for i in range(5):
        body = _token_request(_point("input", as_int=5), _point("bogus_bucket", as_int=i + 1))
        assert post(f"{proc.http_url}/v1/metrics", body).status == 200
    assert proc.terminate() == 0
    lines = [line for line in proc.log_text().splitlines() if "data point(s)" in line]
    assert len(lines) == 1, lines  # five batches in well under 10 s: one line
    assert " INFO " in lines[0]
    assert "rejected 1 data point(s)" in lines[0]
    assert "unknown or missing gen_ai.billing.token.bucket: 'bogus_bucket'" in lines[0]
