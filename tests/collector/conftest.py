"""Helpers for the collector tests: a real OpenTelemetry SDK client producing
``gen_ai.billing.tokens`` points, in-process and subprocess collectors, ledgers (SQLite and
a fresh PostgreSQL schema per test), TLS material and a Prometheus text parser."""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import Counter, MeterProvider, ObservableCounter
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    InMemoryMetricReader,
    MetricExportResult,
    MetricsData,
)
from opentelemetry.sdk.resources import Resource

from _points import BASE_ATTRS
from otel_tokens import semconv as sc
from otel_tokens.collector import Collector
from otel_tokens.instrumentation._recording import Sums
from otel_tokens.ledger import open_ledger
from otel_tokens.pricing import Catalog
from otel_tokens.records import CostRecord
from otel_tokens.usage import TokenUsage

DELTA = AggregationTemporality.DELTA
CUMULATIVE = AggregationTemporality.CUMULATIVE


class TokenClient:
    """An application's SDK meter provider counting billing tokens as the instrumentation
    does (its `Sums` behind an asynchronous counter), with what it sent."""

    def __init__(
        self,
        temporality: AggregationTemporality = DELTA,
        service: str | None = None,
        **attrs: str,
    ) -> None:
        self.service = service or f"svc-{uuid.uuid4().hex[:8]}"
        self.reader = InMemoryMetricReader(
            preferred_temporality={Counter: temporality, ObservableCounter: temporality}
        )
        self.provider = MeterProvider(
            metric_readers=[self.reader],
            resource=Resource.create({"service.name": self.service}),
        )
        self.sums = Sums()
        self.provider.get_meter("otel_tokens").create_observable_counter(
            sc.METRIC_BILLING_TOKENS, callbacks=[self.sums.observe], unit="{token}"
        )
        self.attrs = {**BASE_ATTRS, **attrs}
        self.sent: dict[str, int] = defaultdict(int)

    def add(self, bucket: str, n: int, **attrs: str) -> None:
        self.sums.add(n, {**self.attrs, **attrs, sc.BILLING_TOKEN_BUCKET: bucket})
        self.sent[bucket] += n

    def collect(self) -> MetricsData:
        data = self.reader.get_metrics_data()
        return data if data is not None else MetricsData(resource_metrics=[])

    def close(self) -> None:
        self.provider.shutdown()


def export_until_ok(exporter: Any, data: MetricsData, deadline: float) -> int:
    """Export the same data until the exporter reports success (a client retrying);
    returns the number of attempts."""
    attempts = 0
    while True:
        attempts += 1
        if exporter.export(data) == MetricExportResult.SUCCESS:
            return attempts
        if time.monotonic() > deadline:
            raise AssertionError(f"export still failing after {attempts} attempts")
        time.sleep(0.05)


def http_exporter(base_url: str, **kwargs: Any) -> Any:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    return OTLPMetricExporter(endpoint=f"{base_url}/v1/metrics", **kwargs)


def grpc_exporter(target: str, **kwargs: Any) -> Any:
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

    kwargs.setdefault("insecure", "credentials" not in kwargs)
    scheme = "http" if kwargs["insecure"] else "https"
    return OTLPMetricExporter(endpoint=f"{scheme}://{target}", **kwargs)


# --- ledgers -------------------------------------------------------------------------------
def records_of(url: str) -> list[CostRecord]:
    ledger = open_ledger(url)
    try:
        return list(ledger.records())
    finally:
        ledger.close()


def totals(records: list[CostRecord], service: str | None = None) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for r in records:
        if service is None or r.service_name == service:
            out[r.bucket] += r.quantity
    return dict(out)


def cost_total(records: list[CostRecord], service: str | None = None) -> Decimal:
    return sum(
        (
            r.billed_cost
            for r in records
            if r.billed_cost is not None and (service is None or r.service_name == service)
        ),
        Decimal(0),
    )


def expected_cost(sent: Mapping[str, int], model: str = "gpt-4o-2024-08-06") -> Decimal:
    """What the catalog charges for ``sent`` (exact: prices are linear in the count), bucket
    by bucket as records are priced: a bucket without a rate (gpt-4o has no cache-write
    rate) is an unpriced record, not in the total."""
    catalog = Catalog.load(None, use_env=False)
    total = Decimal(0)
    for bucket, n in sent.items():
        if n:
            result = catalog.price(TokenUsage(**{bucket: n}), model, provider="openai")
            total += result.total if result.total is not None else 0
    return total


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


# --- collectors ----------------------------------------------------------------------------
@pytest.fixture
def collector(sqlite_url: str) -> Iterator[Collector]:
    with Collector(
        ledger=sqlite_url, http_endpoint="127.0.0.1:0", grpc_endpoint="127.0.0.1:0"
    ) as c:
        yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_READY = re.compile(r"ready: http=(\S+) grpc=(\S+)")

# Run the collector with its answers delayed after each ledger commit: a kill then often
# falls in the window exactly-once hinges on (committed, not yet acknowledged).
_SLOW_ACK = """
import sys, time
from otel_tokens.collector import core
_ingest = core.Pipeline._ingest
def slow(self, points):
    result = _ingest(self, points)
    time.sleep({delay})
    return result
core.Pipeline._ingest = slow
from otel_tokens.collector.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


@dataclass
class CollectorProcess:
    """``python -m otel_tokens.collector`` as a child process."""

    args: list[str]
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[str] | None = None
    http_url: str = ""
    grpc_target: str = ""
    starts: int = 0
    ack_delay: float = 0.0

    def start(self, timeout: float = 20.0) -> CollectorProcess:
        env = {**os.environ, **self.env}
        command = ["-m", "otel_tokens.collector"]
        if self.ack_delay:
            command = ["-c", _SLOW_ACK.format(delay=self.ack_delay)]
        self.proc = subprocess.Popen(
            [sys.executable, *command, *self.args],
            cwd=self.cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=open(self.cwd / f"collector-{id(self)}.log", "a"),  # noqa: SIM115
            text=True,
        )
        self.starts += 1
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if ready:
                line = self.proc.stdout.readline()
                m = _READY.search(line)
                if m:
                    self.http_url, self.grpc_target = m.group(1), m.group(2)
                    return self
                if not line and self.proc.poll() is not None:
                    break
            elif self.proc.poll() is not None:
                break
        self.kill()
        raise AssertionError(f"collector did not start: see {self.log_text()[-2000:]}")

    def log_text(self) -> str:
        return (self.cwd / f"collector-{id(self)}.log").read_text()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def close(self) -> None:
        self.kill()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Any]:
    started: list[CollectorProcess] = []

    def _spawn(
        *args: str, env: dict[str, str] | None = None, ack_delay: float = 0.0
    ) -> CollectorProcess:
        p = CollectorProcess(list(args), tmp_path, env or {}, ack_delay=ack_delay)
        started.append(p)
        return p.start()

    yield _spawn
    for p in started:
        p.close()


# --- HTTP helpers --------------------------------------------------------------------------
@dataclass
class Answer:
    status: int
    body: bytes
    headers: dict[str, str]


def post(
    url: str,
    body: bytes,
    content_type: str | None = "application/x-protobuf",
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
    context: Any = None,
) -> Answer:
    all_headers = dict(headers or {})
    if content_type is not None:
        all_headers["Content-Type"] = content_type
    req = urllib.request.Request(url, data=body, headers=all_headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            return Answer(resp.status, resp.read(), {k.lower(): v for k, v in resp.headers.items()})
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, exc.read(), {k.lower(): v for k, v in exc.headers.items()})


def get(url: str, headers: Mapping[str, str] | None = None, context: Any = None) -> Answer:
    req = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=10, context=context) as resp:
            return Answer(resp.status, resp.read(), {k.lower(): v for k, v in resp.headers.items()})
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, exc.read(), {k.lower(): v for k, v in exc.headers.items()})


def otlp_request(data: MetricsData) -> Any:
    """The ExportMetricsServiceRequest the SDK exporters send for ``data``."""
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics

    return encode_metrics(data)


# --- Prometheus ----------------------------------------------------------------------------
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Samples by name; prometheus_client's parser when installed, else a strict regex."""
    out: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            m = _SAMPLE.match(line)
            assert m, f"not a Prometheus sample line: {line!r}"
            labels = {
                k: re.sub(r"\\(.)", lambda e: "\n" if e.group(1) == "n" else e.group(1), v)
                for k, v in _LABEL.findall(m.group(2) or "")
            }
            out[m.group(1)].append((labels, float(m.group(3))))
        return dict(out)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name].append((dict(s.labels), float(s.value)))
    return dict(out)


# --- TLS -----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for localhost / 127.0.0.1: (cert path, key path)."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    try:
        _cert_with_cryptography(cert, key)
    except ImportError:
        openssl = shutil.which("openssl")
        if openssl is None:
            pytest.skip("neither the cryptography package nor the openssl CLI is available")
        subprocess.run(
            [
                openssl,
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                str(key),
                "-out",
                str(cert),
                "-days",
                "2",
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost,IP:127.0.0.1",
            ],
            check=True,
            capture_output=True,
        )
    return str(cert), str(key)


def _cert_with_cryptography(cert_path: Path, key_path: Path) -> None:
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


@contextlib.contextmanager
def quiet_exporter_logs() -> Iterator[None]:
    """The SDK exporters log every failed attempt; the retry tests expect many."""
    import logging

    names = [
        "opentelemetry.exporter.otlp.proto.grpc.exporter",
        "opentelemetry.exporter.otlp.proto.http.metric_exporter",
        "opentelemetry.exporter.otlp.common.http",
    ]
    saved = [(n, logging.getLogger(n).level) for n in names]
    for n in names:
        logging.getLogger(n).setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for n, level in saved:
            logging.getLogger(n).setLevel(level)
