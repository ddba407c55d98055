"""The collector's decoding keeps what each series' attributes read as (`SeriesCache`):
with it, every request reads as exactly the same points, and the same refusals, as
without it (issue 15), and its memory is bounded."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Exemplar, NumberDataPoint

from _points import BASE_ATTRS
from otel_tokens import semconv as sc
from otel_tokens.metering import (
    InvalidPointError,
    SeriesCache,
    TokenPoint,
    from_otlp,
)

T0 = 1_767_225_600 * 10**9

_VALUES = st.one_of(
    st.text(max_size=5),
    st.sampled_from(["input", "output", "gpt-4o", "x" * 300, "t1", "t2"]),
    st.integers(-3, 3),
    st.booleans(),
    st.lists(st.text(max_size=3), max_size=2),
)
_KEYS = st.sampled_from(
    [
        *BASE_ATTRS,
        sc.BILLING_TOKEN_BUCKET,
        sc.BILLING_TENANT_ID,
        "gen_ai.billing.tag.team",
        "k" * 300,
    ]
)


def _any(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[_any(v) for v in value]))
    return AnyValue(string_value=value)


@st.composite
def _point(draw: st.DrawFn) -> NumberDataPoint:
    attrs = [
        KeyValue(key=k, value=_any(v))
        for k, v in draw(st.lists(st.tuples(_KEYS, _VALUES), max_size=6))
    ]
    if draw(st.booleans()):  # a well-formed series, most of the time billable
        attrs = [KeyValue(key=k, value=_any(v)) for k, v in BASE_ATTRS.items()] + [
            KeyValue(
                key=sc.BILLING_TOKEN_BUCKET, value=_any(draw(st.sampled_from(["input", "output"])))
            )
        ]
    point = NumberDataPoint(
        attributes=attrs,
        start_time_unix_nano=draw(st.sampled_from([0, T0, T0 + 1])),
        time_unix_nano=draw(st.sampled_from([0, T0 + 60 * 10**9, T0 + 120 * 10**9])),
        flags=draw(st.sampled_from([0, 1])),
    )
    kind = draw(st.sampled_from(["int", "double", "none"]))
    if kind == "int":
        point.as_int = draw(st.integers(-5, 10**16))
    elif kind == "double":
        point.as_double = draw(
            st.one_of(st.floats(allow_nan=True), st.sampled_from([0.0, 5.0, 2.5, -1.0]))
        )
    if draw(st.booleans()) and draw(st.booleans()):
        point.exemplars.append(Exemplar(time_unix_nano=T0, as_int=1))
    return point


def _request(points: list[NumberDataPoint], services: list[str]) -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    for service in services:
        rm = request.resource_metrics.add()
        rm.resource.attributes.append(KeyValue(key="service.name", value=_any(service)))
        for scope in ("otel_tokens", "other"):
            sm = rm.scope_metrics.add()
            sm.scope.name = scope
            metric = sm.metrics.add()
            metric.name = sc.METRIC_BILLING_TOKENS
            metric.sum.is_monotonic = True
            metric.sum.aggregation_temporality = 2
            metric.sum.data_points.extend(points)
    return request


def _read(points: list[TokenPoint | InvalidPointError]) -> list[Any]:
    return [
        ("refused", str(p)) if isinstance(p, InvalidPointError) else (p, dict(p.attributes))
        for p in points
    ]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_point(), min_size=1, max_size=8), st.lists(_point(), max_size=8))
def test_a_cache_changes_nothing_that_is_read(
    first: list[NumberDataPoint], later: list[NumberDataPoint]
) -> None:
    cache = SeriesCache()
    for points in (first, first + later, later + first):  # cold, then partly warm
        request = _request(points, ["svc-a", "svc-b"])
        plain = _read(list(from_otlp(request)))
        assert _read(list(from_otlp(request, cache))) == plain


def test_series_of_other_resources_or_scopes_are_other_streams() -> None:
    point = NumberDataPoint(
        attributes=[KeyValue(key=k, value=_any(v)) for k, v in BASE_ATTRS.items()]
        + [KeyValue(key=sc.BILLING_TOKEN_BUCKET, value=_any("input"))],
        start_time_unix_nano=T0,
        time_unix_nano=T0 + 1,
        as_int=7,
    )
    cache = SeriesCache()
    points = list(from_otlp(_request([point], ["a", "b"]), cache))
    assert all(isinstance(p, TokenPoint) for p in points)
    assert len({p.stream_id for p in points if isinstance(p, TokenPoint)}) == 4
    assert len(cache) == 4
    again = list(from_otlp(_request([point], ["a", "b"]), cache))
    assert [p.stream_id for p in again if isinstance(p, TokenPoint)] == [
        p.stream_id for p in points if isinstance(p, TokenPoint)
    ]
    assert len(cache) == 4  # all known


def test_the_cache_is_bounded() -> None:
    cache = SeriesCache(max_series=10)
    for n in range(25):
        point = NumberDataPoint(
            attributes=[KeyValue(key=k, value=_any(v)) for k, v in BASE_ATTRS.items()]
            + [KeyValue(key=sc.BILLING_TENANT_ID, value=_any(f"t{n}"))],
            time_unix_nano=T0,
            as_int=1,
        )
        list(from_otlp(_request([point], ["a"]), cache))
        assert len(cache) <= 10


def _billable(**fields: Any) -> NumberDataPoint:
    point = NumberDataPoint(
        attributes=[KeyValue(key=k, value=_any(v)) for k, v in BASE_ATTRS.items()]
        + [KeyValue(key=sc.BILLING_TOKEN_BUCKET, value=_any("input"))],
        **fields,
    )
    return point


@pytest.mark.parametrize(
    "fields",
    [
        {"time_unix_nano": T0, "as_int": -5},
        {"time_unix_nano": T0, "as_int": 0},
        {"time_unix_nano": T0, "as_int": 2**62},
        {"time_unix_nano": T0, "as_double": float("nan")},
        {"time_unix_nano": T0, "as_double": 2.5},
        {"time_unix_nano": T0, "as_double": 4.0},
        {"time_unix_nano": T0},
        {"as_int": 3},
        {"start_time_unix_nano": T0, "time_unix_nano": T0 + 1, "as_int": 3, "flags": 1},
        {"time_unix_nano": T0, "as_int": 3, "exemplars": [Exemplar(time_unix_nano=T0)]},
        {"time_unix_nano": 2**64 - 1, "as_int": 3},
    ],
)
def test_each_kind_of_point_reads_the_same_from_the_cache(fields: dict[str, Any]) -> None:
    cache = SeriesCache()
    request = _request([_billable(**fields)], ["a"])
    plain = _read(list(from_otlp(request)))
    for _ in range(2):  # cold, then warm
        assert _read(list(from_otlp(request, cache))) == plain


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_point(), min_size=1, max_size=8), st.lists(_point(), max_size=8))
def test_a_tenant_is_bound_the_same_with_a_cache(
    first: list[NumberDataPoint], later: list[NumberDataPoint]
) -> None:
    from otel_tokens.collector.core import bind_tenant

    cache = SeriesCache()
    for points in (first, first + later, later + first):
        plain, cached = _request(points, ["a"]), _request(points, ["a"])
        assert bind_tenant(cached, "t1", cache) == bind_tenant(plain, "t1")
        assert cached == plain  # the same points dropped, the same tenant added


def test_each_kind_of_tenant_attribute_is_bound_the_same_with_a_cache() -> None:
    from otel_tokens.collector.core import bind_tenant

    def with_tenant(*values: Any) -> NumberDataPoint:
        point = _billable(time_unix_nano=T0, as_int=1)
        for value in values:
            point.attributes.append(KeyValue(key=sc.BILLING_TENANT_ID, value=_any(value)))
        return point

    points = [with_tenant("t1"), with_tenant("t2"), with_tenant(), with_tenant(7)]
    points.append(with_tenant("t1", "t1"))  # a repeated key
    cache = SeriesCache()
    for _ in range(2):  # cold, then warm
        plain, cached = _request(points, ["a"]), _request(points, ["a"])
        reasons = bind_tenant(cached, "t1", cache)
        assert reasons == bind_tenant(plain, "t1")
        assert cached == plain
        assert len(reasons) == 2 * 3  # t2, 7 and the repeated key, in both scopes


def test_the_collector_can_run_without_the_cache(tmp_path: Any) -> None:
    """--series-cache 0: the points are read in full each time, billed the same."""
    from otel_tokens.collector import Collector

    point = _billable(time_unix_nano=T0, start_time_unix_nano=T0 - 1, as_int=5)
    body = _request([point], ["a"]).SerializeToString()
    import urllib.request

    for size in (0, 10):
        url = f"sqlite:///{tmp_path}/ledger-{size}.db"
        with Collector(
            ledger=url, http_endpoint="127.0.0.1:0", grpc_endpoint="none", series_cache=size
        ) as c:
            assert c.pipeline is not None
            assert (c.pipeline._series is None) == (size == 0)
            for _ in range(2):
                request = urllib.request.Request(
                    f"{c.http_url}/v1/metrics",
                    data=body,
                    headers={"Content-Type": "application/x-protobuf"},
                )
                with urllib.request.urlopen(request) as answer:
                    assert answer.status == 200
            assert c.pipeline.stats.records == 2  # the two scopes' streams, once each
