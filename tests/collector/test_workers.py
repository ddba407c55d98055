"""``otel-tokens collector --workers N``: real supervisor and worker processes on one port
pair, SQLite and PostgreSQL ledgers. Connections spread over the workers, totals stay exact
under concurrent senders, /metrics and /healthz sum every worker, SIGTERM drains them all,
a killed worker is replaced, and a collector whose workers cannot start fails fast."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest

from _processes import OtlpSink, run
from otel_tokens._arguments import EXIT_BAD_INPUT
from otel_tokens.collector.config import ConfigError, resolve
from otel_tokens.collector.stats import MAX_LABELLED_SERIES, Snapshot

from .conftest import (
    CUMULATIVE,
    DELTA,
    CollectorProcess,
    TokenClient,
    cost_total,
    expected_cost,
    get,
    grpc_exporter,
    http_exporter,
    otlp_request,
    parse_prometheus,
    post,
    records_of,
    totals,
)


def _workers(spawn: Callable[..., CollectorProcess], ledger: str, *args: str) -> CollectorProcess:
    return spawn(
        "--ledger",
        ledger,
        "--http-endpoint",
        "127.0.0.1:0",
        "--grpc-endpoint",
        "127.0.0.1:0",
        "--workers",
        "2",
        *args,
    )


def _children(pid: int) -> set[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.add(int(entry))
    return out


def _page(proc: CollectorProcess) -> dict[str, list[tuple[dict[str, str], float]]]:
    return parse_prometheus(get(f"{proc.http_url}/metrics").body.decode())


def _total(page: dict[str, list[tuple[dict[str, str], float]]], name: str) -> float:
    return sum(v for _, v in page.get(name, []))


def _wait_for(check: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def _linux_only() -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc")


# --- settings ------------------------------------------------------------------------------
def test_workers_setting_from_flag_environment_and_file(tmp_path: Path) -> None:
    assert resolve({}, {}).workers == 1
    config_file = tmp_path / "collector.yaml"
    config_file.write_text("workers: 3\n")
    assert resolve({}, {}, str(config_file)).workers == 3
    env = {"OTEL_TOKENS_COLLECTOR_WORKERS": "4"}
    assert resolve({}, env, str(config_file)).workers == 4
    assert resolve({"workers": "2"}, env, str(config_file)).workers == 2
    for bad in ("0", "-1", "two", "65"):
        with pytest.raises(ConfigError, match="workers"):
            resolve({"workers": bad}, {})


def test_summed_counters_keep_their_label_cap() -> None:
    """Each worker caps its label sets; their sum is capped again, not N times the cap."""
    a, b = Snapshot(), Snapshot()
    for i in range(MAX_LABELLED_SERIES):
        a.tokens[("openai", "m", "input", f"a{i}", "")] = 1
        b.tokens[("openai", "m", "input", f"b{i}", "")] = 2
        a.cost[("openai", "m", "input", f"a{i}", "", "USD", "priced")] = Decimal("0.1")
        b.cost[("openai", "m", "input", f"b{i}", "", "USD", "priced")] = Decimal("0.2")
    a.counts["points"], b.counts["points"] = 5, 7
    a.requests[("http", "metrics", "200")] = 1
    b.requests[("http", "metrics", "200")] = 2
    total = Snapshot()
    total.add(a)
    total.add(b)
    assert len(total.tokens) <= MAX_LABELLED_SERIES + 1
    assert sum(total.tokens.values()) == 3 * MAX_LABELLED_SERIES
    assert sum(total.cost.values()) == Decimal("0.3") * MAX_LABELLED_SERIES  # exact
    assert total.tokens[("openai", "m", "input", "other", "other")] == 2 * MAX_LABELLED_SERIES
    assert total.counts["points"] == 12
    assert total.requests == {("http", "metrics", "200"): 3}


# --- processes -----------------------------------------------------------------------------
def _instances(sink: OtlpSink) -> set[str]:
    """The service.instance.id of each cost metric the collector forwarded to ``sink``."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )

    out = set()
    for request in sink.requests("/v1/metrics", ExportMetricsServiceRequest):
        for rm in request.resource_metrics:
            attrs = {kv.key: kv.value.string_value for kv in rm.resource.attributes}
            if attrs.get("service.name") == "otel-tokens-collector":
                out.add(attrs["service.instance.id"])
    return out


def test_two_workers_share_one_port_and_page(
    spawn: Callable[..., CollectorProcess], sqlite_url: str
) -> None:
    _linux_only()
    sink = OtlpSink()
    try:
        proc = _workers(spawn, sqlite_url, "--log-level", "DEBUG", "--upstream", sink.url)
        _serve_and_page(proc, sqlite_url)
        # Each worker forwards its own cumulative cost series, under its own instance.
        assert len(_instances(sink)) == 2
    finally:
        sink.close()


def _serve_and_page(proc: CollectorProcess, sqlite_url: str) -> None:
    assert proc.proc is not None
    assert len(_children(proc.proc.pid)) == 2
    client = TokenClient(DELTA)
    sent = 0
    for i in range(40):  # one connection each: the kernel spreads them over the workers
        client.add("input", 100 + i)
        sent += 100 + i
        answer = post(
            f"{proc.http_url}/v1/metrics", otlp_request(client.collect()).SerializeToString()
        )
        assert answer.status == 200
    log = proc.log_text()
    served = {int(n) for n in re.findall(r"\[worker (\d)\]: batch committed", log)}
    assert served == {1, 2}, log[-2000:]
    health = json.loads(get(f"{proc.http_url}/healthz").body)
    assert health["status"] == "ok" and health["workers"] == 2

    def page_sums_both() -> bool:
        # Each worker writes its counters at most once a second, and counts a request
        # after its answer has gone: wait for the page to have caught up with all of it.
        page = _page(proc)
        requests = page.get("otel_tokens_ingest_requests_total", [])
        return (
            _total(page, "otel_tokens_tokens_total") == sent
            and _total(page, "otel_tokens_ingest_points_total") == 40
            and sum(v for labels, v in requests if labels["code"] == "200") == 40
        )

    _wait_for(page_sums_both)
    page = _page(proc)
    assert _total(page, "otel_tokens_collector_workers") == 2
    assert _total(page, "otel_tokens_ingest_queue_capacity") == 2 * 16
    assert proc.terminate() == 0
    assert totals(records_of(sqlite_url)) == {"input": sent}


def test_concurrent_senders_exact_totals(
    spawn: Callable[..., CollectorProcess], ledger_url: str
) -> None:
    """Four applications over HTTP and gRPC at once, each export sent twice (a retry), a
    cumulative series through both workers: every token billed once, on either ledger."""
    proc = _workers(spawn, ledger_url)
    clients = [TokenClient(CUMULATIVE if i % 2 else DELTA, service=f"app-{i}") for i in range(4)]
    errors: list[BaseException] = []

    def send(i: int) -> None:
        client = clients[i]
        exporters = [http_exporter(proc.http_url), grpc_exporter(proc.grpc_target)]
        try:
            for n in range(6):
                client.add("input", 1000 + 17 * n + i)
                client.add("output", 300 + n)
                data = client.collect()
                for exporter in exporters:  # the same batch twice, over each transport
                    assert exporter.export(data).name == "SUCCESS"
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            exporters[1].shutdown()

    threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert proc.terminate() == 0
    records = records_of(ledger_url)
    for client in clients:
        assert totals(records, client.service) == dict(client.sent)
        assert cost_total(records, client.service) == expected_cost(client.sent)


def test_sigterm_drains_every_worker(
    spawn: Callable[..., CollectorProcess], sqlite_url: str
) -> None:
    proc = spawn(
        "--ledger",
        sqlite_url,
        "--http-endpoint",
        "127.0.0.1:0",
        "--grpc-endpoint",
        "none",
        "--workers",
        "2",
        ack_delay=1.5,
    )
    assert proc.proc is not None
    clients = [TokenClient(DELTA, service=f"app-{i}") for i in range(4)]
    answers: list[int] = []

    def send(client: TokenClient) -> None:
        client.add("input", 2500)
        answers.append(
            post(
                f"{proc.http_url}/v1/metrics", otlp_request(client.collect()).SerializeToString()
            ).status
        )

    threads = [threading.Thread(target=send, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    # Every batch is in a worker, committed and waiting to be answered, when SIGTERM comes.
    _wait_for(lambda: len(records_of(sqlite_url)) == 4)
    proc.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(20)
    assert proc.proc.wait(20) == 0
    assert answers == [200] * 4
    assert totals(records_of(sqlite_url)) == {"input": 10000}
    assert "otel-tokens collector stopped" in (proc.proc.stdout.read() if proc.proc.stdout else "")


def test_killed_worker_is_replaced_and_counters_stay(
    spawn: Callable[..., CollectorProcess], sqlite_url: str
) -> None:
    _linux_only()
    proc = _workers(spawn, sqlite_url)
    assert proc.proc is not None
    client = TokenClient(DELTA)
    for _ in range(10):
        client.add("input", 50)
        assert (
            post(
                f"{proc.http_url}/v1/metrics", otlp_request(client.collect()).SerializeToString()
            ).status
            == 200
        )
    _wait_for(lambda: _total(_page(proc), "otel_tokens_tokens_total") == 500)
    before = _children(proc.proc.pid)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    pid = proc.proc.pid
    _wait_for(lambda: len(_children(pid) - before) == 1, 10)
    (replacement,) = _children(pid) - before
    _wait_for(lambda: f"ready (pid {replacement})" in proc.log_text(), 10)
    assert f"(pid {victim}) was killed by SIGKILL; starting another" in proc.log_text()
    # The dead worker's counters are still in the sums: they never go down.
    page = _page(proc)
    assert _total(page, "otel_tokens_tokens_total") == 500
    _wait_for(lambda: json.loads(get(f"{proc.http_url}/healthz").body)["workers"] == 2)
    for _ in range(10):
        client.add("output", 7)
        assert (
            post(
                f"{proc.http_url}/v1/metrics", otlp_request(client.collect()).SerializeToString()
            ).status
            == 200
        )
    _wait_for(lambda: _total(_page(proc), "otel_tokens_tokens_total") == 570)
    assert proc.terminate() == 0
    assert totals(records_of(sqlite_url)) == {"input": 500, "output": 70}


def test_workers_that_keep_dying_stop_the_collector(
    spawn: Callable[..., CollectorProcess], sqlite_url: str
) -> None:
    _linux_only()
    proc = _workers(spawn, sqlite_url)
    assert proc.proc is not None
    deadline = time.monotonic() + 20
    while proc.proc.poll() is None and time.monotonic() < deadline:
        for pid in _children(proc.proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    assert proc.proc.wait(10) == 1
    assert "times in a row soon after it started; stopping" in proc.log_text()


def _running(pid: int) -> bool:
    """``pid`` exists and is not a zombie (an orphan's reaper may be slow to reap)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def test_workers_stop_when_the_supervisor_is_gone(
    spawn: Callable[..., CollectorProcess], sqlite_url: str
) -> None:
    """A supervisor killed outright leaves no worker holding the ports."""
    _linux_only()
    proc = _workers(spawn, sqlite_url)
    assert proc.proc is not None
    workers = _children(proc.proc.pid)
    assert len(workers) == 2
    proc.kill()
    _wait_for(lambda: not any(_running(pid) for pid in workers), 10)
    assert "the supervisor is gone; stopping" in proc.log_text()


def test_fails_fast_when_workers_cannot_start(tmp_path: Path, sqlite_url: str) -> None:
    base = [sys.executable, "-m", "otel_tokens.collector", "--workers", "2"]
    ports = ["--http-endpoint", "127.0.0.1:0", "--grpc-endpoint", "none"]
    # The ledger is opened once, by the supervisor, before any worker: as without workers.
    started = time.monotonic()
    bad_ledger = run(
        [*base, *ports, "--ledger", "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"],
        timeout=30,
    )
    assert bad_ledger.returncode == EXIT_BAD_INPUT, bad_ledger.stderr
    assert "otel-tokens collector: cannot open ledger" in bad_ledger.stderr
    # What only a worker finds out (its TLS files): it exits, the collector stops.
    missing = str(tmp_path / "missing.pem")
    bad_tls = run(
        [*base, *ports, "--ledger", sqlite_url, "--tls-cert", missing, "--tls-key", missing],
        timeout=30,
    )
    assert bad_tls.returncode == EXIT_BAD_INPUT, bad_tls.stderr
    assert "cannot load TLS certificate" in bad_tls.stderr
    assert "before it was ready; stopping" in bad_tls.stderr
    assert "ready:" not in bad_tls.stdout
    assert time.monotonic() - started < 20
