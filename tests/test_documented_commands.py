"""The documented `opentelemetry-instrument` commands, run as a user runs them: the command
text is read from docs/collector.md (the README's quick start repeats it) and
collector/README.md and run by a shell, in a subprocess, against a real collector on
loopback (the pricing collector, which speaks OTLP/HTTP and gRPC like the OpenTelemetry
Collector and forwards traces to an OTLP sink of this test)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from _processes import BIN, OPENAI_APP, OtlpSink, run, stop
from otel_tokens import semconv as sc
from otel_tokens.ledger import open_ledger
from otel_tokens_fakes import ProviderServer

ROOT = Path(__file__).resolve().parents[1]


def documented(readme: Path, marker: str) -> list[str]:
    """The shell commands of the ```sh block of ``readme`` that contains ``marker``, with
    backslash continuations joined (one string per command)."""
    blocks = re.findall(r"```sh\n(.*?)```", readme.read_text(encoding="utf-8"), re.S)
    found = [b for b in blocks if marker in b]
    assert len(found) == 1, f"{readme.name}: one ```sh block with {marker!r}, got {len(found)}"
    joined = found[0].replace("\\\n", " ")
    return [" ".join(line.split()) for line in joined.splitlines() if line.strip()]


def extras() -> dict[str, list[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    result: dict[str, list[str]] = project["optional-dependencies"]
    return result


def requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=\[;! ]", r, maxsplit=1)[0].lower() for r in requirements}


# --- an OTLP/HTTP sink: what the collector forwards upstream --------------------------------
class Sink(OtlpSink):
    def spans(self, service: str) -> list[tuple[str, str]]:
        """(scope, span name) of every span the sink received from ``service``."""
        found = []
        for request in self.requests("/v1/traces", ExportTraceServiceRequest):
            for rs in request.resource_spans:
                attrs = {a.key: a.value.string_value for a in rs.resource.attributes}
                if attrs.get("service.name") != service:
                    continue
                for ss in rs.scope_spans:
                    found.extend((ss.scope.name, s.name) for s in ss.spans)
        return found

    def metric_scopes(self, service: str) -> set[tuple[str, str]]:
        """(scope, metric name) of every metric forwarded from ``service``."""
        found = set()
        for request in self.requests("/v1/metrics", ExportMetricsServiceRequest):
            for rm in request.resource_metrics:
                attrs = {a.key: a.value.string_value for a in rm.resource.attributes}
                if attrs.get("service.name") != service:
                    continue
                for sm in rm.scope_metrics:
                    found.update((sm.scope.name, m.name) for m in sm.metrics)
        return found


@dataclass
class Collector:
    http_url: str
    grpc_url: str
    ledger_url: str
    sink: Sink


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_for(what: str, check: Callable[[], bool], proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{what}: the collector exited with {proc.returncode}"
        try:
            if check():
                return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    tmp = tmp_path_factory.mktemp("collector")
    http_port, grpc_port = _free_port(), _free_port()
    ledger_url = f"sqlite:///{tmp / 'collector.db'}"
    sink = Sink()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    with open(tmp / "collector.log", "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "otel_tokens.collector",
                "--http-endpoint",
                f"127.0.0.1:{http_port}",
                "--grpc-endpoint",
                f"127.0.0.1:{grpc_port}",
                "--ledger",
                ledger_url,
                "--upstream",
                sink.url,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp,
            env=env,
        )
        try:
            url = f"http://127.0.0.1:{http_port}"

            def healthy() -> bool:
                with urllib.request.urlopen(f"{url}/healthz", timeout=1) as resp:
                    return bool(resp.status == 200)

            _wait_for("the collector's /healthz", healthy, proc)
            yield Collector(url, f"http://127.0.0.1:{grpc_port}", ledger_url, sink)
        finally:
            stop(proc)
            sink.close()


@pytest.fixture(scope="module")
def server() -> Iterator[ProviderServer]:
    with ProviderServer() as srv:
        yield srv


@dataclass
class Run:
    usages: list[dict[str, Any]]
    stderr: str


def run_documented(command: str, cwd: Path, server: ProviderServer, **env_vars: str) -> Run:
    """Run ``command`` with a shell, as a user would from ``cwd`` holding app.py; the
    environment has the provider server's URL and key, and nothing of OpenTelemetry's."""
    (cwd / "app.py").write_text(OPENAI_APP, encoding="utf-8")
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OPENAI_", "ANTHROPIC_"))
    }
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        OPENAI_API_KEY="test",
        OPENAI_BASE_URL=server.openai_base_url,
        **env_vars,
    )
    done = run(["bash", "-c", command], cwd=cwd, env=env)
    assert done.returncode == 0, done.stderr
    assert "Failed to auto initialize" not in done.stderr, done.stderr
    usages: list[dict[str, Any]] = json.loads(done.stdout.splitlines()[0])
    return Run(usages, done.stderr)


def ledger_tokens(url: str, service: str) -> dict[str, int]:
    ledger = open_ledger(url)
    try:
        records = [r for r in ledger.records() if r.service_name == service]
    finally:
        ledger.close()
    totals: dict[str, int] = {}
    for r in records:
        assert r.pricing_status == "priced", r
        totals[r.bucket] = totals.get(r.bucket, 0) + r.quantity
    return totals


def billed(usages: list[dict[str, Any]]) -> int:
    return sum(u["total_tokens"] for u in usages)


# --- collector/README: point applications at the collector ------------------------------------
def test_collector_readme_application_command(
    collector: Collector, server: ProviderServer, tmp_path: Path
) -> None:
    """The documented command sends every metric and span to the collector's OTLP/HTTP
    port; with the distro's default protocol (gRPC) every metric was lost."""
    commands = documented(ROOT / "collector" / "README.md", "opentelemetry-instrument python")
    installs = [c for c in commands if c.startswith("pip install")]
    (command,) = [c for c in commands if not c.startswith("pip install")]
    assert "http://localhost:4318" in command
    for install in installs:  # what it installs is enough for the command
        for extra in re.findall(r"otel-tokens\[([^\]]*)\]", install):
            names = set().union(*(requirement_names(extras()[e]) for e in extra.split(",")))
            assert {"opentelemetry-distro", "opentelemetry-exporter-otlp-proto-http"} <= names
    command = command.replace("http://localhost:4318", collector.http_url)
    service = re.search(r"OTEL_SERVICE_NAME=(\S+)", command)
    assert service is not None
    run = run_documented(command, tmp_path, server)

    assert sum(ledger_tokens(collector.ledger_url, service.group(1)).values()) == billed(run.usages)
    spans = collector.sink.spans(service.group(1))
    assert len([s for s in spans if s[0] == "otel_tokens"]) == len(run.usages), spans


# --- docs/collector.md and the README: the in-process pricing exporter ------------------------
def in_process_command() -> str:
    (command,) = documented(ROOT / "docs" / "collector.md", "OTEL_METRICS_EXPORTER=otel_tokens")
    return command


def test_the_readme_quick_start_shows_the_tested_in_process_command() -> None:
    """The README's quick start repeats the reference page's command: the one run below."""
    (quick_start,) = documented(ROOT / "README.md", "OTEL_METRICS_EXPORTER=otel_tokens")
    assert quick_start == in_process_command()


def test_readme_in_process_exporter_command(
    collector: Collector, server: ProviderServer, tmp_path: Path
) -> None:
    """`OTEL_METRICS_EXPORTER=otel_tokens` writes the ledger and hands the metrics to the
    OTLP exporter the SDK would have used (gRPC by default): it looked for an entry point
    named "otlp", which no exporter package registers, and opentelemetry-instrument then
    gave up on all telemetry (no spans, no metrics, no ledger, exit 0)."""
    service = "in-process-default"
    run = run_documented(
        in_process_command(),
        tmp_path,
        server,
        OTEL_SERVICE_NAME=service,
        OTEL_EXPORTER_OTLP_ENDPOINT=collector.grpc_url,  # where the default (gRPC) goes
    )
    assert sum(ledger_tokens(f"sqlite:///{tmp_path / 'ledger.db'}", service).values()) == (
        billed(run.usages)
    )
    # The wrapped OTLP exporter delivered the metrics and our cost metric to the collector.
    scopes = collector.sink.metric_scopes(service)
    assert ("otel_tokens.exporter", sc.METRIC_BILLING_LEDGER_COST) in scopes, scopes
    assert len([s for s in collector.sink.spans(service) if s[0] == "otel_tokens"]) == 2


def test_in_process_exporter_over_http_protobuf(
    collector: Collector, server: ProviderServer, tmp_path: Path
) -> None:
    """`otlp` follows OTEL_EXPORTER_OTLP_PROTOCOL, as the SDK's own exporters do."""
    service = "in-process-http"
    run_documented(
        in_process_command(),
        tmp_path,
        server,
        OTEL_SERVICE_NAME=service,
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_EXPORTER_OTLP_ENDPOINT=collector.http_url,
    )
    scopes = collector.sink.metric_scopes(service)
    assert ("otel_tokens.exporter", sc.METRIC_BILLING_LEDGER_COST) in scopes, scopes


def test_a_missing_wrapped_exporter_is_a_clear_error_that_keeps_traces(
    collector: Collector, server: ProviderServer, tmp_path: Path
) -> None:
    """A wrapped exporter that is not installed is logged as an error naming it; spans and
    the ledger keep working (it used to take every signal down)."""
    service = "in-process-missing"
    run = run_documented(
        in_process_command(),
        tmp_path,
        server,
        OTEL_SERVICE_NAME=service,
        OTEL_EXPORTER_OTLP_ENDPOINT=collector.grpc_url,
        OTEL_TOKENS_METRICS_EXPORTER="prometheus",  # opentelemetry-exporter-prometheus: absent
    )
    assert "the metric exporter to wrap cannot be created" in run.stderr
    assert "OTEL_TOKENS_METRICS_EXPORTER='prometheus'" in run.stderr
    assert sum(ledger_tokens(f"sqlite:///{tmp_path / 'ledger.db'}", service).values()) == (
        billed(run.usages)
    )
    assert len([s for s in collector.sink.spans(service) if s[0] == "otel_tokens"]) == 2
    assert collector.sink.metric_scopes(service) == set()  # nothing to export them with
