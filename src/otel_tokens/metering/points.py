"""`TokenPoint`: one data point of ``gen_ai.billing.tokens``, from any source.

Sources: the OpenTelemetry SDK's in-process `MetricsData` (the in-process exporter) and
OTLP ``ExportMetricsServiceRequest`` messages, protobuf or JSON (the collector).
"""

from __future__ import annotations

import math
import re
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


# What the ledger can take and the metering core can price: the one check of a point,
# made by `LedgerPricer.ingest` for points of any source (the collector's included).
BUCKETS = frozenset(sc.TOKEN_BUCKETS) | frozenset(sc.REQUEST_BUCKETS)
# Attributes read as strings; anything else (an OTLP list or map, a number) is rejected.
_STRING_ATTRIBUTES = (
    sc.BILLING_TOKEN_BUCKET,
    sc.GEN_AI_PROVIDER_NAME,
    sc.GEN_AI_REQUEST_MODEL,
    sc.GEN_AI_RESPONSE_MODEL,
    sc.GEN_AI_OPERATION_NAME,
    sc.BILLING_USAGE_SOURCE,
    sc.BILLING_PROCESSING,
    sc.BILLING_CONTEXT_TIER,
    sc.BILLING_TENANT_ID,
    sc.BILLING_FEATURE,
    sc.BILLING_USER_ID,
)
_CONTEXT_TIER = re.compile(r"base|above_[0-9]+[km]?")  # cost-record schema x_ContextTier
_PROCESSING = (
    sc.PROCESSING_STANDARD,
    sc.PROCESSING_BATCH,
    sc.PROCESSING_FLEX,
    sc.PROCESSING_PRIORITY,
)
# Times are stored as signed 64-bit integers (SQLite INTEGER, PostgreSQL BIGINT).
_MAX_TIME_NS = 2**63 - 1


def check_point(point: TokenPoint) -> InvalidPointError | None:
    """Why ``point`` cannot be billed, or None: its attributes and times (its value was
    checked when it was read, by `check_value`)."""
    return check_attributes(point.attributes) or check_times(point)


def check_attributes(a: Mapping[str, Any]) -> InvalidPointError | None:
    """Why a point with these attributes cannot be billed, or None (`check_point`'s part
    that is the same for every point of a series)."""
    bad = next((k for k in _STRING_ATTRIBUTES if k in a and not isinstance(a[k], str)), None)
    if bad is not None:
        return InvalidPointError(f"attribute {bad} must be a string")
    problem = _check_attributes(a)
    return None if problem is None else InvalidPointError(problem)


def check_times(point: TokenPoint) -> InvalidPointError | None:
    """Why ``point``'s times cannot be billed, or None (`check_point`'s part of each point)."""
    problem = _check_times(point)
    return None if problem is None else InvalidPointError(problem)


def _check_times(point: TokenPoint) -> str | None:
    if not 0 < point.time_ns <= _MAX_TIME_NS:
        return f"token point time_unix_nano out of range: {point.time_ns}"
    if not 0 <= point.start_ns <= point.time_ns:
        return (
            f"token point start_time_unix_nano {point.start_ns} is not between 0 and "
            f"time_unix_nano {point.time_ns}"
        )
    return None


def _check_attributes(a: Mapping[str, Any]) -> str | None:
    bucket = a.get(sc.BILLING_TOKEN_BUCKET)
    if bucket not in BUCKETS:
        return f"unknown or missing {sc.BILLING_TOKEN_BUCKET}: {bucket!r}"
    if not (a.get(sc.GEN_AI_RESPONSE_MODEL) or a.get(sc.GEN_AI_REQUEST_MODEL)):
        return "token point without gen_ai.response.model or gen_ai.request.model"
    if not a.get(sc.GEN_AI_PROVIDER_NAME):
        return f"token point without {sc.GEN_AI_PROVIDER_NAME}"
    if a.get(sc.BILLING_USAGE_SOURCE, sc.USAGE_SOURCE_PROVIDER) not in sc.USAGE_SOURCES:
        return f"unknown {sc.BILLING_USAGE_SOURCE}: {a.get(sc.BILLING_USAGE_SOURCE)!r}"
    if a.get(sc.BILLING_PROCESSING, sc.PROCESSING_STANDARD) not in _PROCESSING:
        return f"unknown {sc.BILLING_PROCESSING}: {a.get(sc.BILLING_PROCESSING)!r}"
    tier = a.get(sc.BILLING_CONTEXT_TIER, "base")
    # tier_input reads any other text as base: accept only what it (and FOCUS) knows.
    if not _CONTEXT_TIER.fullmatch(tier):
        return f"unknown {sc.BILLING_CONTEXT_TIER}: {tier!r}"
    return None


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


# OTLP attributes of a token point are kept (ledger columns, tags, Prometheus labels), so
# their size is bounded: the instrumentation itself cuts attribution values at 256
# characters, and no provider, model or bucket name comes near it.
MAX_ATTRIBUTE_LENGTH = 256
