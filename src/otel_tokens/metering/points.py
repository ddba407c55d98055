"""`TokenPoint`: one data point of ``gen_ai.billing.tokens``, from any source.

Sources: the OpenTelemetry SDK's in-process `MetricsData` (the in-process exporter) and
OTLP ``ExportMetricsServiceRequest`` messages, protobuf or JSON (the collector).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .. import semconv as sc
from ..records import stream_id

# OTLP AggregationTemporality values.
TEMPORALITY_DELTA = 1
TEMPORALITY_CUMULATIVE = 2


class InvalidPointError(ValueError):
    """A token point that cannot be billed (negative, not a whole number, absurd, ...)."""


# A single point adding more than this many tokens is a bug, not usage.
MAX_POINT_VALUE = 10**15


@dataclass(frozen=True, slots=True)
class TokenPoint:
    stream_id: str
    attributes: Mapping[str, Any]
    resource: Mapping[str, Any]
    start_ns: int
    time_ns: int
    value: int
    cumulative: bool


def check_value(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidPointError(f"token count must be a number, got {value!r}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidPointError(f"token count must be finite, got {value!r}")
        if not value.is_integer():
            raise InvalidPointError(f"token count must be a whole number, got {value!r}")
        value = int(value)
    if value < 0:
        raise InvalidPointError(f"token count must not be negative, got {value}")
    if value > MAX_POINT_VALUE:
        raise InvalidPointError(f"token count {value} is beyond any real usage")
    return int(value)


def _identity(resource: Mapping[str, Any], scope: str, attributes: Mapping[str, Any]) -> str:
    return stream_id(
        {
            "resource": dict(resource),
            "scope": scope,
            "metric": sc.METRIC_BILLING_TOKENS,
            "attributes": dict(attributes),
        }
    )


def from_sdk(metrics_data: Any) -> Iterator[TokenPoint | InvalidPointError]:
    """Token points of an SDK `MetricsData` (what a MetricExporter receives)."""
    from opentelemetry.sdk.metrics.export import AggregationTemporality, Sum

    for rm in metrics_data.resource_metrics:
        resource = dict(rm.resource.attributes)
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name != sc.METRIC_BILLING_TOKENS:
                    continue
                # As from_otlp: an UpDownCounter or histogram of that name is not billable
                # (a cumulative up-down sum going down would read as resets, and be billed).
                if not isinstance(metric.data, Sum):
                    yield InvalidPointError(
                        f"{sc.METRIC_BILLING_TOKENS} must be a Sum, got "
                        f"{type(metric.data).__name__.lower()}"
                    )
                    continue
                if not metric.data.is_monotonic:
                    yield InvalidPointError(f"{sc.METRIC_BILLING_TOKENS} must be monotonic")
                    continue
                cumulative = (
                    metric.data.aggregation_temporality == AggregationTemporality.CUMULATIVE
                )
                for p in metric.data.data_points:
                    attributes = dict(p.attributes or {})
                    try:
                        value = check_value(p.value)
                    except InvalidPointError as exc:
                        yield exc
                        continue
                    yield TokenPoint(
                        stream_id=_identity(resource, sm.scope.name, attributes),
                        attributes=attributes,
                        resource=resource,
                        start_ns=int(p.start_time_unix_nano or 0),
                        time_ns=int(p.time_unix_nano),
                        value=value,
                        cumulative=cumulative,
                    )


def _any_value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return tuple(_any_value(x) for x in v.array_value.values)
    if kind == "kvlist_value":
        return {kv.key: _any_value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind)


def attributes_of(kvs: Any) -> dict[str, Any]:
    return {kv.key: _any_value(kv.value) for kv in kvs}


def from_otlp(request: Any) -> Iterator[TokenPoint | InvalidPointError]:
    """Token points of an OTLP ``ExportMetricsServiceRequest`` (protobuf message)."""
    for rm in request.resource_metrics:
        resource = attributes_of(rm.resource.attributes)
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name != sc.METRIC_BILLING_TOKENS:
                    continue
                if metric.WhichOneof("data") != "sum":
                    yield InvalidPointError(
                        f"{sc.METRIC_BILLING_TOKENS} must be a Sum, got {metric.WhichOneof('data')}"
                    )
                    continue
                data = metric.sum
                if not data.is_monotonic:
                    yield InvalidPointError(f"{sc.METRIC_BILLING_TOKENS} must be monotonic")
                    continue
                if data.aggregation_temporality not in (
                    TEMPORALITY_DELTA,
                    TEMPORALITY_CUMULATIVE,
                ):
                    yield InvalidPointError("unspecified aggregation temporality")
                    continue
                cumulative = data.aggregation_temporality == TEMPORALITY_CUMULATIVE
                for p in data.data_points:
                    attributes = attributes_of(p.attributes)
                    kind = p.WhichOneof("value")
                    try:
                        value = check_value(getattr(p, kind) if kind else None)
                    except InvalidPointError as exc:
                        yield exc
                        continue
                    if p.time_unix_nano <= 0:
                        yield InvalidPointError("data point without time_unix_nano")
                        continue
                    yield TokenPoint(
                        stream_id=_identity(resource, sm.scope.name, attributes),
                        attributes=attributes,
                        resource=resource,
                        start_ns=int(p.start_time_unix_nano),
                        time_ns=int(p.time_unix_nano),
                        value=value,
                        cumulative=cumulative,
                    )
