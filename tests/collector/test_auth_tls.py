"""Bearer tokens, tenant binding (a client cannot write another tenant's records), TLS."""

from __future__ import annotations

import ssl
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from otel_tokens import semconv as sc
from otel_tokens.collector import Collector

from .conftest import (
    DELTA,
    TokenClient,
    get,
    grpc_exporter,
    http_exporter,
    otlp_request,
    post,
    quiet_exporter_logs,
    records_of,
    totals,
)

_METRICS = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"


@pytest.fixture
def secured(sqlite_url: str, tmp_path: Path) -> Iterator[Collector]:
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("globex-token=globex  # bound to globex\n")
    from otel_tokens.collector.config import resolve

    config = resolve(
        {
            "ledger": sqlite_url,
            "http_endpoint": "127.0.0.1:0",
            "grpc_endpoint": "127.0.0.1:0",
            "tokens": ["admin-token", "acme-token=acme"],
            "tokens_file": str(tokens),
        },
        {},
    )
    with Collector(config) as c:
        yield c


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_http_requires_a_valid_bearer_token(secured: Collector, sqlite_url: str) -> None:
    client = TokenClient(DELTA)
    client.add("input", 10)
    body = otlp_request(client.collect()).SerializeToString()
    url = f"{secured.http_url}/v1/metrics"
    for headers in ({}, _bearer("nope"), {"authorization": "Basic YWRtaW4="}):
        answer = post(url, body, headers=headers)
        assert answer.status == 401
        assert answer.headers["www-authenticate"] == "Bearer"
    assert records_of(sqlite_url) == []
    assert post(url, body, headers=_bearer("admin-token")).status == 200
    client.add("output", 5)
    data = client.collect()
    with quiet_exporter_logs():
        assert http_exporter(secured.http_url or "").export(data).name == "FAILURE"
    exporter = http_exporter(secured.http_url or "", headers=_bearer("admin-token"))
    assert exporter.export(data).name == "SUCCESS"
    assert totals(records_of(sqlite_url)) == {"input": 10, "output": 5}
    # /metrics needs a token that is not bound to a tenant.
    metrics = f"{secured.http_url}/metrics"
    assert get(metrics).status == 401
    assert get(metrics, _bearer("acme-token")).status == 403
    assert get(metrics, _bearer("admin-token")).status == 200
    assert get(f"{secured.http_url}/healthz").status == 200


def test_grpc_requires_a_valid_bearer_token(secured: Collector, sqlite_url: str) -> None:
    client = TokenClient(DELTA)
    client.add("input", 10)
    body = otlp_request(client.collect()).SerializeToString()
    with grpc.insecure_channel(secured.grpc_target or "") as channel:
        export = channel.unary_unary(_METRICS)
        for metadata in ((), (("authorization", "Bearer wrong"),)):
            with pytest.raises(grpc.RpcError) as err:
                export(body, metadata=metadata, timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        export(body, metadata=(("authorization", "Bearer admin-token"),), timeout=10)
    assert totals(records_of(sqlite_url)) == {"input": 10}


def test_a_tenant_token_writes_only_its_tenant(secured: Collector, sqlite_url: str) -> None:
    honest = TokenClient(DELTA, service="honest")  # no tenant attribute: gets acme
    honest.add("input", 100)
    explicit = TokenClient(DELTA, service="explicit", **{sc.BILLING_TENANT_ID: "acme"})
    explicit.add("input", 20)
    thief = TokenClient(DELTA, service="thief", **{sc.BILLING_TENANT_ID: "globex"})
    thief.add("input", 999)
    thief.add("output", 1)

    h = http_exporter(secured.http_url or "", headers=_bearer("acme-token"))
    assert h.export(honest.collect()).name == "SUCCESS"
    g = grpc_exporter(secured.grpc_target or "", headers=_bearer("acme-token"))
    assert g.export(explicit.collect()).name == "SUCCESS"
    g.shutdown()

    body = otlp_request(thief.collect()).SerializeToString()
    answer = post(f"{secured.http_url}/v1/metrics", body, headers=_bearer("acme-token"))
    assert answer.status == 200
    partial = ExportMetricsServiceResponse.FromString(answer.body).partial_success
    assert partial.rejected_data_points == 2
    assert "'globex' is not the tenant of this token" in partial.error_message
    with grpc.insecure_channel(secured.grpc_target or "") as channel:
        raw = channel.unary_unary(_METRICS)(
            body, metadata=(("authorization", "Bearer acme-token"),), timeout=10
        )
    assert ExportMetricsServiceResponse.FromString(raw).partial_success.rejected_data_points == 2

    records = records_of(sqlite_url)
    assert {r.tenant for r in records} == {"acme"}
    assert totals(records) == {"input": 120}
    # The forced tenant and an explicit one make the same stream for the same client.
    assert {r.service_name for r in records} == {"honest", "explicit"}

    # The token bound to globex (from the tokens file) may write globex.
    answer = post(f"{secured.http_url}/v1/metrics", body, headers=_bearer("globex-token"))
    assert (
        ExportMetricsServiceResponse.FromString(answer.body).partial_success.rejected_data_points
        == 0
    )
    assert totals(records_of(sqlite_url)) == {"input": 1119, "output": 1}


def test_tls_for_http_and_grpc(
    sqlite_url: str, tls_files: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = tls_files
    # requests lets these override the exporter's certificate_file (psf/requests#3829).
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    with Collector(
        ledger=sqlite_url,
        http_endpoint="127.0.0.1:0",
        grpc_endpoint="127.0.0.1:0",
        tls_cert=cert,
        tls_key=key,
        tokens={"t": None},
    ) as c:
        assert c.http_url and c.http_url.startswith("https://")
        client = TokenClient(DELTA)
        client.add("input", 64)
        h = http_exporter(c.http_url, certificate_file=cert, headers=_bearer("t"), timeout=3)
        assert h.export(client.collect()).name == "SUCCESS"
        credentials = grpc.ssl_channel_credentials(root_certificates=Path(cert).read_bytes())
        g = grpc_exporter(
            c.grpc_target or "", credentials=credentials, insecure=False, headers=_bearer("t")
        )
        client.add("output", 8)
        assert g.export(client.collect()).name == "SUCCESS"
        g.shutdown()
        context = ssl.create_default_context(cafile=cert)
        assert get(f"{c.http_url}/healthz", context=context).status == 200
        # Plain HTTP to the TLS port is refused, and the server keeps serving.
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            get(c.http_url.replace("https://", "http://") + "/healthz")
        assert get(f"{c.http_url}/metrics", _bearer("t"), context=context).status == 200
    assert totals(records_of(sqlite_url)) == {"input": 64, "output": 8}


def _with_second_tenant(first: str, second: str) -> Any:
    """A request whose one token point names the tenant twice: ``first``, then ``second``."""
    client = TokenClient(DELTA, **{sc.BILLING_TENANT_ID: first})
    client.add("input", 500)
    request = otlp_request(client.collect())
    point = request.resource_metrics[0].scope_metrics[0].metrics[0].sum.data_points[0]
    point.attributes.append(KeyValue(key=sc.BILLING_TENANT_ID, value=AnyValue(string_value=second)))
    return request


@pytest.mark.parametrize("order", [("acme", "globex"), ("globex", "acme")], ids=str)
@pytest.mark.parametrize("transport", ["protobuf", "json", "grpc"])
def test_a_repeated_tenant_attribute_is_rejected(
    secured: Collector, sqlite_url: str, transport: str, order: tuple[str, str]
) -> None:
    """The value the tenant check reads is the value billed: a point naming the tenant
    twice is rejected, whichever comes first, over every transport."""
    request = _with_second_tenant(*order)
    if transport == "grpc":
        with grpc.insecure_channel(secured.grpc_target or "") as channel:
            raw = channel.unary_unary(_METRICS)(
                request.SerializeToString(),
                metadata=(("authorization", "Bearer acme-token"),),
                timeout=10,
            )
        partial = ExportMetricsServiceResponse.FromString(raw).partial_success
    else:
        if transport == "json":
            body, content_type = json_format.MessageToJson(request).encode(), "application/json"
        else:
            body, content_type = request.SerializeToString(), "application/x-protobuf"
        answer = post(f"{secured.http_url}/v1/metrics", body, content_type, _bearer("acme-token"))
        assert answer.status == 200
        response = ExportMetricsServiceResponse()
        if transport == "json":
            json_format.Parse(answer.body, response)
        else:
            response.ParseFromString(answer.body)
        partial = response.partial_success
    assert partial.rejected_data_points == 1
    assert f"attribute '{sc.BILLING_TENANT_ID}' is repeated" in partial.error_message
    assert records_of(sqlite_url) == []


def test_a_repeated_attribute_is_rejected_for_unbound_tokens_too(
    secured: Collector, sqlite_url: str
) -> None:
    body = _with_second_tenant("acme", "globex").SerializeToString()
    answer = post(f"{secured.http_url}/v1/metrics", body, headers=_bearer("admin-token"))
    partial = ExportMetricsServiceResponse.FromString(answer.body).partial_success
    assert partial.rejected_data_points == 1
    assert "is repeated" in partial.error_message
    assert records_of(sqlite_url) == []
