"""OTLP/HTTP: the real SDK exporter in, exact ledger records out; bad input; partial
success; Prometheus; traces and logs; upstream forwarding; back-pressure; ledger outages."""

from __future__ import annotations

import contextlib
import gzip
import http.client
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AGGREGATION_TEMPORALITY_DELTA,
    Metric,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)

from otel_tokens import semconv as sc
from otel_tokens.collector import Collector
from otel_tokens.ledger import LedgerError, open_ledger

from .conftest import (
    BASE_ATTRS,
    CUMULATIVE,
    DELTA,
    TokenClient,
    cost_total,
    expected_cost,
    export_until_ok,
    get,
    http_exporter,
    otlp_request,
    parse_prometheus,
    post,
    quiet_exporter_logs,
    records_of,
    totals,
)


def _url(c: Collector, path: str = "/v1/metrics") -> str:
    assert c.http_url
    return c.http_url + path


@pytest.mark.parametrize("temporality", [DELTA, CUMULATIVE], ids=["delta", "cumulative"])
def test_sdk_http_exporter_exact_totals(
    collector: Collector, sqlite_url: str, temporality: Any
) -> None:
    client = TokenClient(temporality, **{sc.BILLING_TENANT_ID: "acme", sc.BILLING_FEATURE: "chat"})
    exporter = http_exporter(collector.http_url or "", compression=Compression.Gzip)
    for i in range(5):
        client.add("input", 1000 + i)
        client.add("cache_read", 300 * i)
        client.add("output", 77 + i)
        data = client.collect()
        assert exporter.export(data).name == "SUCCESS"
        assert exporter.export(data).name == "SUCCESS"  # a duplicate changes nothing
    records = records_of(sqlite_url)
    assert totals(records) == {k: v for k, v in client.sent.items() if v}
    assert cost_total(records) == expected_cost(client.sent)
    assert {r.tenant for r in records} == {"acme"}
    assert {r.feature for r in records} == {"chat"}
    assert {r.service_name for r in records} == {client.service}
    assert {r.model for r in records} == {"gpt-4o-2024-08-06"}
    assert all(r.pricing_status == "priced" for r in records)

    page = parse_prometheus(get(_url(collector, "/metrics")).body.decode())
    tokens = {s[0]["bucket"]: s[1] for s in page["otel_tokens_tokens_total"]}
    assert tokens == {k: float(v) for k, v in client.sent.items() if v}
    cost = sum(v for labels, v in page["otel_tokens_cost_total"] if labels["tenant"] == "acme")
    assert cost == pytest.approx(float(expected_cost(client.sent)), rel=1e-12)
    assert page["otel_tokens_ingest_unchanged_points_total"][0][1] > 0
    client.close()


def test_retries_of_the_same_batch_write_once(collector: Collector, sqlite_url: str) -> None:
    client = TokenClient(DELTA)
    client.add("input", 5000)
    client.add("output", 123)
    request = otlp_request(client.collect()).SerializeToString()
    for _ in range(4):
        answer = post(_url(collector), request)
        assert answer.status == 200
        assert ExportMetricsServiceResponse.FromString(answer.body) == (
            ExportMetricsServiceResponse()
        )
    records = records_of(sqlite_url)
    assert len(records) == 2
    assert totals(records) == {"input": 5000, "output": 123}


def test_otlp_json_with_hex_ids_and_gzip(collector: Collector, sqlite_url: str) -> None:
    client = TokenClient(DELTA)
    client.add("input", 42)
    request = otlp_request(client.collect())
    body = json.loads(json_format.MessageToJson(request))
    # OTLP/JSON: int64 as strings, enum as integer, hex trace ids in exemplars.
    metric = body["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]
    point = metric["sum"]["dataPoints"][0]
    point["asInt"] = str(point["asInt"])
    metric["sum"]["aggregationTemporality"] = 1
    point["exemplars"] = [
        {
            "timeUnixNano": point["timeUnixNano"],
            "asInt": "1",
            "traceId": "5b8efff798038103d269b633813fc60c",
            "spanId": "eee19b7ec3c1b174",
        }
    ]
    body["someFutureField"] = {"ignored": True}
    raw = json.dumps(body).encode()
    answer = post(
        _url(collector),
        gzip.compress(raw),
        "application/json; charset=utf-8",
        {"Content-Encoding": "gzip"},
    )
    assert answer.status == 200, answer.body
    assert answer.headers["content-type"] == "application/json"
    assert json.loads(answer.body) == {}
    assert totals(records_of(sqlite_url)) == {"input": 42}


def _token_request(*points: NumberDataPoint, name: str = sc.METRIC_BILLING_TOKENS) -> bytes:
    metric = Metric(
        name=name,
        sum=Sum(
            data_points=list(points),
            aggregation_temporality=AGGREGATION_TEMPORALITY_DELTA,
            is_monotonic=True,
        ),
    )
    request = ExportMetricsServiceRequest(
        resource_metrics=[ResourceMetrics(scope_metrics=[ScopeMetrics(metrics=[metric])])]
    )
    data: bytes = request.SerializeToString()
    return data


def _point(bucket: str | None = "input", start: int = 0, **kw: Any) -> NumberDataPoint:
    now = time.time_ns()
    attrs = dict(BASE_ATTRS)
    if bucket is not None:
        attrs[sc.BILLING_TOKEN_BUCKET] = bucket
    kw.setdefault("time_unix_nano", now)
    p = NumberDataPoint(start_time_unix_nano=start or now - 10**9, **kw)
    for k, v in attrs.items():
        p.attributes.append(KeyValue(key=k, value=AnyValue(string_value=v)))
    return p


def test_partial_success_rejects_bad_points_and_keeps_good_ones(
    collector: Collector, sqlite_url: str
) -> None:
    weird = _point("input", as_int=9)
    weird.attributes.append(
        KeyValue(key=sc.BILLING_FEATURE, value=AnyValue(int_value=3))
    )  # not a string
    body = _token_request(
        _point("input", as_int=100),  # the good one
        _point("output", as_double=float("nan")),
        _point("output", as_int=-5),
        _point("output", as_int=10**16),
        _point("output", as_double=2.5),
        _point("bogus_bucket", as_int=1),
        _point(None, as_int=1),
        _point("input", as_int=1, time_unix_nano=2**63 + 5),
        weird,
    )
    answer = post(_url(collector), body)
    assert answer.status == 200
    response = ExportMetricsServiceResponse.FromString(answer.body)
    assert response.partial_success.rejected_data_points == 8
    message = response.partial_success.error_message
    for needle in (
        "finite",
        "negative",
        "beyond",
        "whole number",
        "bogus_bucket",
        "must be a string",
    ):
        assert needle in message, message
    assert totals(records_of(sqlite_url)) == {"input": 100}
    page = parse_prometheus(get(_url(collector, "/metrics")).body.decode())
    assert page["otel_tokens_ingest_rejected_points_total"][0][1] == 8
    assert page["otel_tokens_ingest_points_total"][0][1] == 9


def test_bad_requests_get_4xx_write_nothing_and_the_collector_keeps_serving(
    collector: Collector, sqlite_url: str
) -> None:
    url = _url(collector)
    good = _token_request(_point("input", as_int=7))
    small = Collector(
        ledger=sqlite_url.replace("ledger.db", "small.db"),
        http_endpoint="127.0.0.1:0",
        grpc_endpoint="none",
        max_body_bytes=65536,
    )
    with small:
        small_url = _url(small)
        assert post(small_url, b"\0" * 70_000).status == 413
        bomb = gzip.compress(b"\0" * 40_000_000)
        assert len(bomb) < 65536
        answer = post(small_url, bomb, headers={"Content-Encoding": "gzip"})
        assert answer.status == 413
        assert b"decompressed" in answer.body
        json_bomb = gzip.compress(b" " * 1_000_000 + b"{}")
        assert (
            post(small_url, json_bomb, "application/json", {"Content-Encoding": "gzip"}).status
            == 413
        )
        assert small.pipeline is not None
        assert small.pipeline.stats.records == 0

    cases = [
        (post(url, good, "text/plain"), 415),
        (post(url, good, None), 415),
        (post(url, good, headers={"Content-Encoding": "br"}), 415),
        (post(url, b"\xff\xfe garbage \x00\x01", "application/x-protobuf"), 400),
        (post(url, good[:-3]), 400),  # truncated
        (post(url, b'{"resourceMetrics": [', "application/json"), 400),
        (post(url, b'{"resourceMetrics": "x"}', "application/json"), 400),
        (post(url, b"[1, 2]", "application/json"), 400),
        (post(url, b'{"resourceMetrics": [{"schemaUrl": "\xff\xfe"}]}', "application/json"), 400),
        (post(url, b"not gzip at all", headers={"Content-Encoding": "gzip"}), 400),
        (post(url, gzip.compress(good)[:-10], headers={"Content-Encoding": "gzip"}), 400),
        (post(_url(collector, "/v1/nope"), good), 404),
        (post(url, b"[" * 100_000 + b"]" * 100_000, "application/json"), 400),
    ]
    for answer, status in cases:
        assert answer.status == status, (status, answer.body)
        assert answer.status != 500
    # Errors come as google.rpc.Status in the request's encoding.
    status_json = json.loads(cases[5][0].body)
    assert status_json["code"] == 3 and "malformed" in status_json["message"]

    # Missing Content-Length, chunked bodies, lies about the length.
    host, port = collector.http_url.rsplit("/", 1)[1].split(":") if collector.http_url else ("", "")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.putrequest("POST", "/v1/metrics")
    conn.putheader("Content-Type", "application/x-protobuf")
    conn.endheaders()
    assert conn.getresponse().status == 411
    conn.close()
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request(
        "POST",
        "/v1/metrics",
        body=iter([good[:10], good[10:]]),
        headers={"Content-Type": "application/x-protobuf"},
    )  # chunked
    assert conn.getresponse().status == 200  # chunked is fine
    conn.close()

    assert records_of(sqlite_url) and totals(records_of(sqlite_url)) == {"input": 7}
    assert post(url, _token_request(_point("output", as_int=3))).status == 200
    assert totals(records_of(sqlite_url)) == {"input": 7, "output": 3}


def test_prometheus_escapes_label_values(collector: Collector) -> None:
    tenant = 'ac"me\\corp\nlabs'
    client = TokenClient(DELTA, **{sc.BILLING_TENANT_ID: tenant})
    client.add("input", 1_000_000)
    assert http_exporter(collector.http_url or "").export(client.collect()).name == "SUCCESS"
    answer = get(_url(collector, "/metrics"))
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = answer.body.decode()
    assert 'tenant="ac\\"me\\\\corp\\nlabs"' in text
    page = parse_prometheus(text)
    ((labels, value),) = page["otel_tokens_cost_total"]
    assert labels["tenant"] == tenant
    assert labels["currency"] == "USD"
    assert value == float(expected_cost({"input": 1_000_000}))
    ((labels, value),) = page["otel_tokens_tokens_total"]
    assert labels == {
        "provider": "openai",
        "model": "gpt-4o-2024-08-06",
        "bucket": "input",
        "tenant": tenant,
        "feature": "",
    }
    assert value == 1_000_000
    codes = {
        (s[0]["transport"], s[0]["code"]): s[1] for s in page["otel_tokens_ingest_requests_total"]
    }
    assert codes[("http", "200")] == 1
    assert page["otel_tokens_ingest_queue_depth"] == [({}, 0.0)]


def test_unpriced_tokens_metric(collector: Collector, sqlite_url: str) -> None:
    client = TokenClient(
        DELTA,
        **{sc.GEN_AI_REQUEST_MODEL: "no-such-model", sc.GEN_AI_RESPONSE_MODEL: "no-such-model"},
    )
    client.add("output", 55)
    assert http_exporter(collector.http_url or "").export(client.collect()).name == "SUCCESS"
    (record,) = records_of(sqlite_url)
    assert record.billed_cost is None and record.pricing_status == "unpriced"
    page = parse_prometheus(get(_url(collector, "/metrics")).body.decode())
    assert page["otel_tokens_unpriced_tokens_total"] == [
        ({"provider": "openai", "model": "no-such-model", "bucket": "output"}, 55.0)
    ]
    assert "otel_tokens_cost_total" not in page or page["otel_tokens_cost_total"] == []


def test_heuristic_estimates_are_accepted_and_billed_as_estimated(
    collector: Collector, sqlite_url: str
) -> None:
    """Usage counted at 4 characters per token (no tokenizer could be loaded) is billed, marked
    as the rough estimate it is; rejecting it would lose the tokens."""
    client = TokenClient(DELTA, **{sc.BILLING_USAGE_SOURCE: "estimated_heuristic"})
    client.add("input", 900)
    client.add("output", 40)
    assert http_exporter(collector.http_url or "").export(client.collect()).name == "SUCCESS"
    records = records_of(sqlite_url)
    assert totals(records) == {"input": 900, "output": 40}
    assert cost_total(records) == expected_cost(client.sent)
    assert {(r.usage_source, r.pricing_status) for r in records} == {
        ("estimated_heuristic", "estimated")
    }
    client.close()


def test_healthz(collector: Collector) -> None:
    answer = get(_url(collector, "/healthz"))
    assert answer.status == 200
    assert json.loads(answer.body)["ledger"] == "up"
    assert get(_url(collector, "/nothing")).status == 404


def test_traces_and_logs_without_upstream_are_acknowledged(collector: Collector) -> None:
    body = ExportTraceServiceRequest().SerializeToString()
    answer = post(_url(collector, "/v1/traces"), body)
    assert answer.status == 200
    assert ExportTraceServiceResponse.FromString(answer.body) == ExportTraceServiceResponse()
    answer = post(_url(collector, "/v1/logs"), b"{}", "application/json")
    assert answer.status == 200 and json.loads(answer.body) == {}
    assert post(_url(collector, "/v1/logs"), b"{}", "text/plain").status == 415


class _Upstream:
    """A fake OTLP/HTTP backend recording what it receives; ``fail_with`` makes it fail."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        self.fail_with: int | None = None
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if outer.fail_with:
                    self.send_response(outer.fail_with)
                    self.send_header("Retry-After", "1")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                outer.received.append((self.path, dict(self.headers.items()), body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_upstream_gets_metrics_plus_cost_and_untouched_traces(
    sqlite_url: str,
) -> None:
    upstream = _Upstream()
    try:
        with Collector(
            ledger=sqlite_url,
            http_endpoint="127.0.0.1:0",
            grpc_endpoint="none",
            upstream=upstream.url,
            upstream_headers={"X-Key": "k1"},
        ) as c:
            client = TokenClient(DELTA)
            client.add("input", 2_000_000)
            data = client.collect()
            assert http_exporter(c.http_url or "").export(data).name == "SUCCESS"
            path, headers, body = upstream.received[-1]
            assert path == "/v1/metrics" and headers["X-Key"] == "k1"
            assert headers["Content-Encoding"] == "gzip"
            forwarded = ExportMetricsServiceRequest.FromString(gzip.decompress(body))
            names = [
                m.name
                for rm in forwarded.resource_metrics
                for sm in rm.scope_metrics
                for m in sm.metrics
            ]
            assert sc.METRIC_BILLING_TOKENS in names and sc.METRIC_BILLING_LEDGER_COST in names
            cost_rm = forwarded.resource_metrics[-1]
            (cost_point,) = cost_rm.scope_metrics[0].metrics[0].sum.data_points
            assert cost_point.as_double == float(expected_cost({"input": 2_000_000}))
            assert cost_rm.scope_metrics[0].metrics[0].sum.aggregation_temporality == 2

            traces = gzip.compress(b"\x0a\x00")
            answer = post(_url(c, "/v1/traces"), traces, headers={"Content-Encoding": "gzip"})
            assert answer.status == 200
            path, headers, body = upstream.received[-1]
            assert (path, body, headers["Content-Encoding"]) == ("/v1/traces", traces, "gzip")

            # Upstream down: the batch is billed but the client is told to retry; the
            # retry bills nothing twice and reaches the upstream once it is back.
            client.add("output", 10)
            request = otlp_request(client.collect()).SerializeToString()
            upstream.fail_with = 503
            answer = post(_url(c), request)
            assert answer.status == 503 and answer.headers["retry-after"] == "1"
            assert post(_url(c, "/v1/logs"), b"").status == 503
            upstream.fail_with = 400
            answer = post(_url(c), request)
            assert answer.status == 200
            assert (
                "not forwarded"
                in ExportMetricsServiceResponse.FromString(
                    answer.body
                ).partial_success.error_message
            )
            upstream.fail_with = None
            assert post(_url(c), request).status == 200
            assert totals(records_of(sqlite_url)) == {"input": 2_000_000, "output": 10}
    finally:
        upstream.close()


class _GatedLedger:
    """Wraps a ledger: transactions wait for ``gate`` and fail while ``down`` is set (as a
    ledger fails: a LedgerError, whatever its driver raised)."""

    def __init__(self, url: str) -> None:
        self.inner = open_ledger(url)
        self.url = url
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.down = False

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        self.entered.set()
        self.gate.wait(20)
        if self.down:
            raise LedgerError("disk I/O error (simulated)")
        with self.inner.transaction() as tx:
            yield tx

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_back_pressure_when_the_queue_is_full(sqlite_url: str) -> None:
    ledger = _GatedLedger(sqlite_url)
    ledger.gate.clear()
    with Collector(
        ledger=ledger,
        http_endpoint="127.0.0.1:0",  # type: ignore[arg-type]
        grpc_endpoint="127.0.0.1:0",
        max_queue=1,
        retry_after=2,
    ) as c:
        first = _token_request(_point("input", as_int=1))
        result: list[Any] = []
        t = threading.Thread(target=lambda: result.append(post(_url(c), first)))
        t.start()
        assert ledger.entered.wait(10)
        answer = post(_url(c), _token_request(_point("input", as_int=2)))
        assert answer.status == 503
        assert answer.headers["retry-after"] == "2"
        page = parse_prometheus(get(_url(c, "/metrics")).body.decode())
        assert page["otel_tokens_ingest_queue_depth"] == [({}, 1.0)]
        assert page["otel_tokens_ingest_overloaded_total"] == [({}, 1.0)]

        import grpc
        from google.rpc.error_details_pb2 import RetryInfo
        from google.rpc.status_pb2 import Status

        channel = grpc.insecure_channel(c.grpc_target or "")
        export = channel.unary_unary(
            "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
        )
        with pytest.raises(grpc.RpcError) as err:
            export(_token_request(_point("input", as_int=3)), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        trailers = dict(err.value.trailing_metadata())
        info = RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"])
        assert info.retry_delay.seconds == 2
        status = Status.FromString(trailers["grpc-status-details-bin"])
        assert status.code == grpc.StatusCode.UNAVAILABLE.value[0]
        assert status.details[0].Is(RetryInfo.DESCRIPTOR)
        channel.close()

        ledger.gate.set()
        t.join(10)
        assert result[0].status == 200
    assert totals(records_of(sqlite_url)) == {"input": 1}


def test_ledger_outage_is_retryable_and_loses_nothing(sqlite_url: str) -> None:
    ledger = _GatedLedger(sqlite_url)
    ledger.down = True
    with Collector(
        ledger=ledger,
        http_endpoint="127.0.0.1:0",  # type: ignore[arg-type]
        grpc_endpoint="none",
    ) as c:
        client = TokenClient(CUMULATIVE)
        client.add("input", 900)
        data = client.collect()
        answer = post(_url(c), otlp_request(data).SerializeToString())
        assert answer.status == 503 and answer.headers["retry-after"] == "1"
        assert json.loads(get(_url(c, "/healthz")).body)["ledger"] == "down"
        threading.Timer(0.5, lambda: setattr(ledger, "down", False)).start()
        exporter = http_exporter(c.http_url or "", timeout=5)
        with quiet_exporter_logs():
            export_until_ok(exporter, data, time.monotonic() + 20)
        page = parse_prometheus(get(_url(c, "/metrics")).body.decode())
        assert page["otel_tokens_ingest_ledger_errors_total"][0][1] >= 1
        assert page["otel_tokens_ledger_up"] == [({}, 1.0)]
    assert totals(records_of(sqlite_url)) == {"input": 900}
    assert cost_total(records_of(sqlite_url)) == expected_cost({"input": 900})


def test_user_price_file(sqlite_url: str) -> None:
    with Collector(
        ledger=sqlite_url,
        http_endpoint="127.0.0.1:0",
        grpc_endpoint="none",
        prices=str(Path(__file__).parents[1] / "data/prices/exact_decimals.yaml"),
    ) as c:
        client = TokenClient(
            DELTA,
            **{
                sc.GEN_AI_PROVIDER_NAME: "acme",
                sc.GEN_AI_REQUEST_MODEL: "thirds-llm",
                sc.GEN_AI_RESPONSE_MODEL: "thirds-llm",
            },
        )
        client.add("input", 3_000_000)
        assert http_exporter(c.http_url or "").export(client.collect()).name == "SUCCESS"
    (record,) = records_of(sqlite_url)
    assert record.billed_cost == Decimal("0.1250000000000000001")


def test_committed_but_unacknowledged_batches_are_not_billed_twice(sqlite_url: str) -> None:
    """The crash window exactly-once hinges on: the ledger committed, the answer was lost.
    The client retries the same batch; the retry changes nothing."""
    inner = open_ledger(sqlite_url)

    class LosesAnswers:
        url = sqlite_url
        failures = 0

        @contextmanager
        def transaction(self) -> Iterator[Any]:
            with inner.transaction() as tx:
                yield tx
            if LosesAnswers.failures < 2:  # committed; now "crash" before answering
                LosesAnswers.failures += 1
                raise OSError("connection to the client lost (simulated)")

        def __getattr__(self, name: str) -> Any:
            return getattr(inner, name)

    with Collector(
        ledger=LosesAnswers(),
        http_endpoint="127.0.0.1:0",  # type: ignore[arg-type]
        grpc_endpoint="none",
    ) as c:
        for temporality in (DELTA, CUMULATIVE):
            client = TokenClient(temporality, service=f"s{temporality}")
            client.add("input", 314)
            client.add("output", 27)
            with quiet_exporter_logs():
                export_until_ok(
                    http_exporter(c.http_url or "", timeout=3),
                    client.collect(),
                    time.monotonic() + 20,
                )
            assert totals(records_of(sqlite_url), f"s{temporality}") == {"input": 314, "output": 27}
        assert LosesAnswers.failures == 2
    inner.close()


def test_too_many_connections_get_a_retryable_answer(
    collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    from otel_tokens.collector import http_server

    monkeypatch.setattr(http_server, "MAX_CONNECTIONS", 2)
    host, port = (collector.http_url or "").rsplit("/", 1)[1].split(":")
    idle = [socket.create_connection((host, int(port))) for _ in range(2)]
    try:
        time.sleep(0.2)  # both accepted, each holding a connection thread
        with socket.create_connection((host, int(port))) as third:
            third.settimeout(5)
            assert third.recv(100).startswith(b"HTTP/1.1 503 ")
    finally:
        for s in idle:
            s.close()
    time.sleep(0.2)
    assert get(_url(collector, "/healthz")).status == 200


def test_overlong_attributes_are_rejected_and_kept_nowhere(
    collector: Collector, sqlite_url: str
) -> None:
    """A point with a huge tenant id is rejected (partial success says why, without
    echoing it) and leaves nothing in the ledger or on /metrics."""
    huge = _point("input", as_int=5)
    huge.attributes.append(
        KeyValue(key=sc.BILLING_TENANT_ID, value=AnyValue(string_value="x" * 2**20))
    )
    answer = post(_url(collector), _token_request(huge, _point("output", as_int=3)))
    assert answer.status == 200
    partial = ExportMetricsServiceResponse.FromString(answer.body).partial_success
    assert partial.rejected_data_points == 1
    assert "1048576 characters long, beyond the limit of 256" in partial.error_message
    assert len(partial.error_message) < 300
    assert totals(records_of(sqlite_url)) == {"output": 3}
    page = get(_url(collector, "/metrics")).body
    assert b"x" * 300 not in page


def _slow_sender(url: str, stop: threading.Event, answers: list[bytes]) -> None:
    """Announce a 1000-byte body and send one byte of it every 0.1 s, until answered."""
    import select
    import socket

    host, port = url.rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port))) as s:
        s.sendall(
            b"POST /v1/metrics HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            b"Content-Length: 1000\r\n\r\n"
        )
        for _ in range(1000):
            if stop.is_set():
                return
            if select.select([s], [], [], 0.1)[0]:  # answered: read it before we write on
                with contextlib.suppress(OSError):
                    answers.append(s.recv(200))
                return
            s.sendall(b"\x00")


def test_slow_senders_hold_no_slot_and_time_out(sqlite_url: str) -> None:
    """Trickling bodies neither fill the admission queue nor block real requests; each
    gets 408 once --body-timeout has passed."""
    with Collector(
        ledger=sqlite_url,
        http_endpoint="127.0.0.1:0",
        grpc_endpoint="none",
        max_queue=2,
        body_timeout=1.5,
    ) as c:
        stop, answers = threading.Event(), list[bytes]()
        slow = [
            threading.Thread(target=_slow_sender, args=(c.http_url, stop, answers))
            for _ in range(6)
        ]
        for t in slow:
            t.start()
        try:
            time.sleep(0.3)  # all six are trickling
            for i in range(5):
                answer = post(_url(c), _token_request(_point("input", as_int=10 + i)))
                assert answer.status == 200
            page = parse_prometheus(get(_url(c, "/metrics")).body.decode())
            assert page["otel_tokens_ingest_overloaded_total"] == [({}, 0.0)]
            for t in slow:
                t.join(10)
        finally:
            stop.set()
    assert len(answers) == 6
    assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers), answers
    assert totals(records_of(sqlite_url)) == {"input": 60}


def test_a_full_queue_refuses_before_parsing(sqlite_url: str) -> None:
    """While the queue is full a batch is refused (retryable) before it is parsed, over
    HTTP and gRPC: a body that would not even parse gets 503 / UNAVAILABLE, not 400."""
    import grpc

    ledger = _GatedLedger(sqlite_url)
    ledger.gate.clear()
    with Collector(
        ledger=ledger,
        http_endpoint="127.0.0.1:0",  # type: ignore[arg-type]
        grpc_endpoint="127.0.0.1:0",
        max_queue=1,
    ) as c:
        result: list[Any] = []
        first = _token_request(_point("input", as_int=1))
        t = threading.Thread(target=lambda: result.append(post(_url(c), first)))
        t.start()
        try:
            assert ledger.entered.wait(10)
            assert post(_url(c), b"\xff\xff\xff\xff").status == 503
            with grpc.insecure_channel(c.grpc_target or "") as channel:
                export = channel.unary_unary(
                    "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
                )
                with pytest.raises(grpc.RpcError) as err:
                    export(b"\xff\xff\xff\xff", timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            ledger.gate.set()
            t.join(10)
        assert result[0].status == 200
        # With room again, the same bad body is what it is: malformed.
        assert post(_url(c), b"\xff\xff\xff\xff").status == 400


def _large_batch(points: int, billable: int) -> bytes:
    """One delta request of ``points`` token points (one stream each, ~370 bytes a point);
    past the first ``billable`` their bucket is unknown: rejected by the meter, they cost
    memory as billable ones do but no ledger time."""
    data = []
    for i in range(points):
        p = _point("input" if i < billable else "bogus", as_int=1)
        p.attributes.append(KeyValue(key=sc.BILLING_FEATURE, value=AnyValue(string_value=f"f{i}")))
        data.append(p)
    return _token_request(*data)


def _memory_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise AssertionError(field)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_memory_per_batch_is_a_small_multiple_of_its_body(sqlite_url: str) -> None:
    """A batch's token points are metered in chunks, never all materialised at once: one
    6 MiB batch of 17,000 points raises the peak memory by about 5x its body (about 9x
    when the points were listed whole). Its series are known from an earlier batch, as
    they are at every export but a series' first: what the collector keeps of each series
    (bounded) is not what a batch costs."""
    import gc

    body = _large_batch(17_000, 50)
    assert 5 * 2**20 < len(body) < 8 * 2**20
    with Collector(
        ledger=sqlite_url, http_endpoint="127.0.0.1:0", grpc_endpoint="none", max_queue=1
    ) as c:
        assert post(_url(c), body).status == 200  # warm up: the series are known
        gc.collect()
        before = _memory_mb("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak
        answer = post(_url(c), body)
        grown = _memory_mb("VmHWM") - before
    assert answer.status == 200
    partial = ExportMetricsServiceResponse.FromString(answer.body).partial_success
    assert partial.rejected_data_points == 17_000 - 50
    assert totals(records_of(sqlite_url)) == {"input": 50}  # the second time: duplicates
    assert grown < 7 * len(body) / 2**20, (
        f"peak grew {grown:.0f} MB for {len(body) / 2**20:.1f} MiB"
    )


def test_bodies_being_read_are_bounded_in_memory(sqlite_url: str) -> None:
    """Bodies are read before admission, so the bytes they hold are bounded on their own
    (max_queue x max_body_bytes): past it a sender gets a retryable 503."""
    import socket

    with Collector(
        ledger=sqlite_url,
        http_endpoint="127.0.0.1:0",
        grpc_endpoint="none",
        max_queue=1,
        max_body_bytes=2048,
    ) as c:
        host, port = (c.http_url or "").rsplit("/", 1)[1].split(":")
        with socket.create_connection((host, int(port))) as held:
            held.sendall(
                b"POST /v1/metrics HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf"
                b"\r\nContent-Length: 2048\r\n\r\n" + b"\x00" * 2000
            )
            time.sleep(0.3)  # 2000 of the 2048 bytes allowed are in memory
            answer = post(_url(c), _token_request(_point("input", as_int=5)))
            assert answer.status == 503
            assert b"bytes of request bodies in memory" in answer.body
        time.sleep(0.3)  # that connection's bytes are released
        assert post(_url(c), _token_request(_point("input", as_int=5))).status == 200
    assert totals(records_of(sqlite_url)) == {"input": 5}


class _FailingOnce(_GatedLedger):
    """Fails its ``fail_at``-th transaction (1-based), once."""

    def __init__(self, url: str, fail_at: int) -> None:
        super().__init__(url)
        self.count_tx = 0
        self.fail_at = fail_at

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        self.count_tx += 1
        if self.count_tx == self.fail_at:
            raise LedgerError("disk I/O error (simulated)")
        with self.inner.transaction() as tx:
            yield tx


def test_a_chunk_failing_mid_batch_is_retried_without_double_billing(sqlite_url: str) -> None:
    """A batch larger than one chunk whose second ledger transaction fails is answered
    503; the client's retry bills exactly what the batch holds, nothing twice."""
    ledger = _FailingOnce(sqlite_url, fail_at=3)  # the first one is the warm-up below
    with Collector(
        ledger=ledger,
        http_endpoint="127.0.0.1:0",  # type: ignore[arg-type]
        grpc_endpoint="none",
    ) as c:
        assert c.pipeline is not None
        c.pipeline.chunk_points = 2_000
        assert post(_url(c), _large_batch(1, 1)).status == 200
        body = _large_batch(4_500, 4_500)  # three chunks
        assert post(_url(c), body).status == 503
        partly = totals(records_of(sqlite_url))["input"]
        assert 1 < partly < 4_501  # the first chunk committed
        assert post(_url(c), body).status == 200
        assert post(_url(c), body).status == 200  # and once more: a duplicate
    assert totals(records_of(sqlite_url)) == {"input": 4_501}
