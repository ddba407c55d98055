"""OTLP/gRPC: the real SDK exporter in, exact ledger records out; status codes."""

from __future__ import annotations

import gzip
import time
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from otel_tokens.collector import Collector

from .conftest import (
    CUMULATIVE,
    DELTA,
    TokenClient,
    cost_total,
    expected_cost,
    grpc_exporter,
    otlp_request,
    records_of,
    totals,
)
from .test_http import _point, _token_request

_METRICS = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
_TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
_LOGS = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"


def _call(target: str, method: str, body: bytes, **kwargs: Any) -> bytes:
    with grpc.insecure_channel(target) as channel:
        result: bytes = channel.unary_unary(method)(body, timeout=10, **kwargs)
        return result


@pytest.mark.parametrize("temporality", [DELTA, CUMULATIVE], ids=["delta", "cumulative"])
def test_sdk_grpc_exporter_exact_totals(
    collector: Collector, sqlite_url: str, temporality: Any
) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.exporter import Compression

    client = TokenClient(temporality)
    exporter = grpc_exporter(collector.grpc_target or "", compression=Compression.Gzip)
    for i in range(4):
        client.add("input", 10_000 * (i + 1))
        client.add("output", 500)
        client.add("reasoning", 321 * i)
        data = client.collect()
        assert exporter.export(data).name == "SUCCESS"
        assert exporter.export(data).name == "SUCCESS"  # retried: nothing new
    exporter.shutdown()
    records = records_of(sqlite_url)
    assert totals(records) == {k: v for k, v in client.sent.items() if v}
    assert cost_total(records) == expected_cost(client.sent)


def test_grpc_partial_success_and_malformed(collector: Collector, sqlite_url: str) -> None:
    target = collector.grpc_target or ""
    body = _token_request(
        _point("input", as_int=11), _point("output", as_int=-1), _point("nope", as_int=1)
    )
    response = ExportMetricsServiceResponse.FromString(_call(target, _METRICS, body))
    assert response.partial_success.rejected_data_points == 2
    assert "negative" in response.partial_success.error_message
    for bad in (b"\xff\xff\xff\xff", body[:-2]):
        with pytest.raises(grpc.RpcError) as err:
            _call(target, _METRICS, bad)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert totals(records_of(sqlite_url)) == {"input": 11}


def test_grpc_message_limits_apply_after_decompression(sqlite_url: str) -> None:
    with Collector(
        ledger=sqlite_url, http_endpoint="none", grpc_endpoint="127.0.0.1:0", max_body_bytes=65536
    ) as c:
        target = c.grpc_target or ""
        assert _call(target, _METRICS, _token_request(_point("input", as_int=1))) is not None
        # A message over the limit, and one over it only once decompressed.
        filler = bytes(200_000)
        oversized = b"\x0a" + _varint(len(filler) + 3) + b"\x1a" + _varint(len(filler)) + filler
        with pytest.raises(grpc.RpcError) as err:
            _call(target, _METRICS, oversized)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert len(gzip.compress(oversized)) < 65536
        with pytest.raises(grpc.RpcError) as err:
            _call(target, _METRICS, oversized, compression=grpc.Compression.Gzip)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # Still serving.
        assert _call(target, _METRICS, _token_request(_point("output", as_int=2))) is not None
    assert totals(records_of(sqlite_url)) == {"input": 1, "output": 2}


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def test_grpc_traces_and_logs_without_upstream(collector: Collector) -> None:
    target = collector.grpc_target or ""
    assert ExportTraceServiceResponse.FromString(_call(target, _TRACES, b"")) == (
        ExportTraceServiceResponse()
    )
    assert ExportLogsServiceResponse.FromString(_call(target, _LOGS, b"\x0a\x00")) == (
        ExportLogsServiceResponse()
    )


def test_http_and_grpc_share_one_cumulative_stream(collector: Collector, sqlite_url: str) -> None:
    """The same cumulative series arriving over both transports is billed once."""
    from .conftest import http_exporter

    client = TokenClient(CUMULATIVE)
    h = http_exporter(collector.http_url or "")
    g = grpc_exporter(collector.grpc_target or "")
    for i in range(6):
        client.add("input", 100 + i)
        data = client.collect()
        exporter = h if i % 2 else g
        assert exporter.export(data).name == "SUCCESS"
        assert (g if i % 2 else h).export(data).name == "SUCCESS"
    old = otlp_request(client.collect()).SerializeToString()
    client.add("input", 1)
    assert g.export(client.collect()).name == "SUCCESS"
    _call(collector.grpc_target or "", _METRICS, old)  # an older cumulative point: nothing
    g.shutdown()
    assert totals(records_of(sqlite_url)) == {"input": client.sent["input"]}


def test_periodic_exporting_readers(collector: Collector, sqlite_url: str) -> None:
    """Applications as configured in production: PeriodicExportingMetricReader, HTTP with
    the default (cumulative) temporality and gRPC with delta; totals exact after shutdown."""
    from opentelemetry.sdk.metrics import Counter, MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource

    from otel_tokens import semconv as sc

    from .conftest import BASE_ATTRS, http_exporter

    exporters = {
        "periodic-http": http_exporter(collector.http_url or ""),
        "periodic-grpc": grpc_exporter(
            collector.grpc_target or "", preferred_temporality={Counter: DELTA}
        ),
    }
    providers, counters = [], []
    for service, exporter in exporters.items():
        reader = PeriodicExportingMetricReader(exporter, export_interval_millis=50)
        provider = MeterProvider(
            metric_readers=[reader], resource=Resource.create({"service.name": service})
        )
        providers.append(provider)
        counters.append(provider.get_meter("otel_tokens").create_counter(sc.METRIC_BILLING_TOKENS))
    sent = 0
    for i in range(20):
        for counter in counters:
            counter.add(1000 + i, {**BASE_ATTRS, sc.BILLING_TOKEN_BUCKET: "input"})
        sent += 1000 + i
        time.sleep(0.01)
    for provider in providers:
        provider.shutdown()  # the final collection is exported too
    records = records_of(sqlite_url)
    for service in exporters:
        assert totals(records, service) == {"input": sent}
