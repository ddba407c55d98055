"""Fuzzing the receiving path with hypothesis: random bytes, mutated valid protobuf and
JSON requests, random compression. Never a 5xx, never a crash, nothing written for a body
that is refused, and only valid points written for one that is accepted."""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

from otel_tokens import semconv as sc
from otel_tokens.collector import Collector
from otel_tokens.collector import decode as d
from otel_tokens.collector.core import ANONYMOUS, Pipeline

from .conftest import CUMULATIVE, DELTA, TokenClient, otlp_request, post

_FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _valid_requests() -> list[bytes]:
    out = []
    for temporality in (DELTA, CUMULATIVE):
        client = TokenClient(temporality, **{sc.BILLING_TENANT_ID: "t", sc.BILLING_FEATURE: "f"})
        client.add("input", 1234)
        client.add("cache_write_5m", 99)
        client.add("output", 5)
        out.append(otlp_request(client.collect()).SerializeToString())
        client.close()
    return out


VALID = _valid_requests()
VALID_JSON = [
    json_format.MessageToJson(ExportMetricsServiceRequest.FromString(b)).encode() for b in VALID
]


@st.composite
def mutated(draw: Any, corpus: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(corpus)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "dup"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[i : i + draw(st.integers(1, 8))]
        elif op == "truncate":
            del data[i:]
        else:
            j = draw(st.integers(i, len(data)))
            data[i:i] = data[i:j]
    return bytes(data)


@pytest.fixture(scope="module")
def fuzz_collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    path = tmp_path_factory.mktemp("fuzz") / "ledger.db"
    with Collector(
        ledger=f"sqlite:///{path}",
        http_endpoint="127.0.0.1:0",
        grpc_endpoint="none",
        max_body_bytes=1 << 20,
    ) as c:
        yield c


def _process(pipeline: Pipeline, body: bytes, kind: str, encoding: str) -> tuple[int, int]:
    """(status, records written) for one body, as the HTTP receiver would process it."""
    before = pipeline.stats.records
    try:
        raw = d.decompress(body, encoding, pipeline.config.max_body_bytes)
        request = d.parse(raw, kind, ExportMetricsServiceRequest())
    except d.ClientError as exc:
        assert 400 <= exc.status < 500
        return exc.status, pipeline.stats.records - before
    response = pipeline.export_metrics(request, ANONYMOUS)
    assert isinstance(response, ExportMetricsServiceResponse)
    return 200, pipeline.stats.records - before


def _check(pipeline: Pipeline, body: bytes, kind: str, encoding: str = "identity") -> None:
    status, written = _process(pipeline, body, kind, encoding)
    if status != 200:
        assert written == 0


@_FUZZ
@given(body=st.binary(max_size=2048))
def test_random_protobuf_bytes(fuzz_collector: Collector, body: bytes) -> None:
    assert fuzz_collector.pipeline is not None
    _check(fuzz_collector.pipeline, body, d.PROTOBUF)


@_FUZZ
@given(body=mutated(VALID))
def test_mutated_protobuf_requests(fuzz_collector: Collector, body: bytes) -> None:
    assert fuzz_collector.pipeline is not None
    _check(fuzz_collector.pipeline, body, d.PROTOBUF)


@_FUZZ
@given(body=st.one_of(mutated(VALID_JSON), st.binary(max_size=512), st.text().map(str.encode)))
def test_mutated_json_requests(fuzz_collector: Collector, body: bytes) -> None:
    assert fuzz_collector.pipeline is not None
    _check(fuzz_collector.pipeline, body, d.JSON)


@_FUZZ
@given(
    body=st.one_of(mutated([gzip.compress(v) for v in VALID]), st.binary(max_size=256)),
    encoding=st.sampled_from(["gzip", "deflate"]),
)
def test_mutated_compressed_requests(fuzz_collector: Collector, body: bytes, encoding: str) -> None:
    assert fuzz_collector.pipeline is not None
    _check(fuzz_collector.pipeline, body, d.PROTOBUF, encoding)


_ATTR_VALUES = st.one_of(
    st.text(max_size=20),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True),
    st.booleans(),
    st.binary(max_size=8),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
)
_KEYS = st.sampled_from(
    [
        sc.BILLING_TOKEN_BUCKET,
        sc.GEN_AI_RESPONSE_MODEL,
        sc.GEN_AI_REQUEST_MODEL,
        sc.GEN_AI_PROVIDER_NAME,
        sc.BILLING_PROCESSING,
        sc.BILLING_CONTEXT_TIER,
        sc.BILLING_USAGE_SOURCE,
        sc.BILLING_TENANT_ID,
        sc.BILLING_FEATURE,
        "gen_ai.billing.tag.x",
    ]
)


def _any_value(v: Any) -> dict[str, Any]:
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {
            "doubleValue": v
            if math.isfinite(v)
            else str(v).replace("nan", "NaN").replace("inf", "Infinity")
        }
    if isinstance(v, bytes):
        import base64

        return {"bytesValue": base64.b64encode(v).decode()}
    if isinstance(v, list):
        return {"arrayValue": {"values": [_any_value(x) for x in v]}}
    if isinstance(v, dict):
        return {
            "kvlistValue": {"values": [{"key": k, "value": _any_value(x)} for k, x in v.items()]}
        }
    return {"stringValue": v}


@st.composite
def structured(draw: Any) -> bytes:
    """Well-formed OTLP/JSON with hostile values: attribute types, counts, timestamps."""
    base = {
        sc.BILLING_TOKEN_BUCKET: "input",
        sc.GEN_AI_RESPONSE_MODEL: "gpt-4o",
        sc.GEN_AI_PROVIDER_NAME: "openai",
    }
    points = []
    for _ in range(draw(st.integers(1, 4))):
        attrs: dict[str, Any] = dict(base)
        for k, v in draw(st.dictionaries(_KEYS, _ATTR_VALUES, max_size=3)).items():
            attrs[k] = v
        value = draw(
            st.one_of(
                st.integers(-(2**63), 2**63 - 1).map(lambda n: {"asInt": str(n)}),
                st.floats(allow_nan=False, allow_infinity=False).map(lambda f: {"asDouble": f}),
                st.sampled_from([{"asDouble": "NaN"}, {"asDouble": "Infinity"}, {}]),
            )
        )
        times = draw(st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)))
        points.append(
            {
                "attributes": [{"key": k, "value": _any_value(v)} for k, v in attrs.items()],
                "startTimeUnixNano": str(times[0]),
                "timeUnixNano": str(times[1]),
                **value,
            }
        )
    kind = draw(st.sampled_from(["sum", "gauge", "histogram"]))
    data: dict[str, Any] = {"dataPoints": points}
    if kind == "sum":
        data["aggregationTemporality"] = draw(st.integers(0, 3))
        data["isMonotonic"] = draw(st.booleans())
    if kind == "histogram":
        data = {"dataPoints": [{"count": "1"}]}
    metric = {"name": draw(st.sampled_from([sc.METRIC_BILLING_TOKENS, "other"])), kind: data}
    body = {"resourceMetrics": [{"scopeMetrics": [{"metrics": [metric]}]}]}
    return json.dumps(body).encode()


@_FUZZ
@given(body=structured())
def test_hostile_values_are_rejected_points_not_errors(
    fuzz_collector: Collector, body: bytes
) -> None:
    assert fuzz_collector.pipeline is not None
    _check(fuzz_collector.pipeline, body, d.JSON)


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    body=st.one_of(mutated(VALID), mutated(VALID_JSON), structured()),
    content_type=st.sampled_from(["application/x-protobuf", "application/json"]),
)
def test_over_http_never_5xx(fuzz_collector: Collector, body: bytes, content_type: str) -> None:
    answer = post(f"{fuzz_collector.http_url}/v1/metrics", body, content_type)
    assert answer.status in (200, 400), answer.body[:300]
