"""Token points of OTLP ``ExportMetricsServiceRequest`` messages (protobuf or JSON, parsed).

A collector sees the same series again at every export of every application instance, so
what a series' attributes say (their map, their stream id, or why they are refused) is
kept in a `SeriesCache`, keyed by the attributes' own protobuf bytes. A point of a known
series then costs one serialisation of the point and a dictionary lookup, instead of
reading each attribute through the protobuf runtime and hashing the series again: that
reading was most of the collector's decoding time.
"""

from __future__ import annotations

import hashlib
import json
import struct
import threading
from collections.abc import Callable, Iterator, Mapping
from sys import intern
from types import MappingProxyType
from typing import Any

from .. import semconv as sc
from .points import (
    MAX_ATTRIBUTE_LENGTH,
    MAX_POINT_VALUE,
    TEMPORALITY_CUMULATIVE,
    TEMPORALITY_DELTA,
    InvalidPointError,
    TokenPoint,
    check_value,
)

# Series kept by default: about 1 KB each (the attribute bytes and map, the stream id).
DEFAULT_MAX_SERIES = 200_000


def _any_value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return tuple(_any_value(x) for x in v.array_value.values)
    if kind == "kvlist_value":
        return {kv.key: _any_value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind)


def _size(value: Any) -> int:
    """Characters (bytes for bytes) of an attribute value, nested ones summed."""
    if isinstance(value, (str, bytes)):
        return len(value)
    if isinstance(value, tuple):
        return sum(_size(v) for v in value)
    if isinstance(value, dict):
        return sum(len(k) + _size(v) for k, v in value.items())
    return 0


def _shown(key: str) -> str:
    return repr(key if len(key) <= 64 else key[:61] + "...")


def attributes_of(kvs: Any, max_length: int | None = None) -> dict[str, Any]:
    """The attribute map of OTLP ``KeyValue``s.

    A repeated key is an `InvalidPointError` (OTLP requires unique keys, and which of the
    values counts would otherwise depend on who reads it); so, with ``max_length``, is a key
    or a value longer than that many characters.
    """
    # String values (nearly all of them) read inline: this runs for every attribute of every
    # point, and a call per attribute was a fifth of decoding.
    out = {
        kv.key: (
            kv.value.string_value
            if kv.value.WhichOneof("value") == "string_value"
            else _any_value(kv.value)
        )
        for kv in kvs
    }
    if len(out) != len(kvs):
        seen: set[str] = set()
        for kv in kvs:
            if kv.key in seen:
                raise InvalidPointError(f"attribute {_shown(kv.key)} is repeated")
            seen.add(kv.key)
    if max_length is not None:
        for key, value in out.items():
            # Strings first and inline: this runs for every attribute of every point.
            if len(key) > max_length or (
                len(value) > max_length if type(value) is str else _size(value) > max_length
            ):
                raise _too_long(key, value, max_length)
    return out


def _too_long(key: str, value: Any, max_length: int) -> InvalidPointError:
    if len(key) > max_length:
        return InvalidPointError(
            f"attribute key {_shown(key)} is {len(key)} characters long, "
            f"beyond the limit of {max_length}"
        )
    return InvalidPointError(
        f"attribute {_shown(key)} is {_size(value)} characters long, "
        f"beyond the limit of {max_length}"
    )


def _resource_of(kvs: Any) -> dict[str, Any] | InvalidPointError:
    """A resource's attributes. Only ``service.name`` is kept (in cost records), so only it
    is held to the length limit: detectors put long values (command lines) in others."""
    try:
        resource = attributes_of(kvs)
    except InvalidPointError as exc:
        return InvalidPointError(f"resource: {exc}")
    name = resource.get("service.name")
    if name is not None and _size(name) > MAX_ATTRIBUTE_LENGTH:
        return InvalidPointError(
            f"resource attribute 'service.name' is {_size(name)} characters long, "
            f"beyond the limit of {MAX_ATTRIBUTE_LENGTH}"
        )
    return resource


def _scope_identity(
    resource: Mapping[str, Any], scope: str
) -> tuple[str, Callable[[Mapping[str, Any]], str]]:
    """The stream id function for the points of one resource and scope, and the text that
    names that resource and scope. Their JSON after the attributes is the same for all the
    points, so it is encoded once, not once per point (the same text as
    `otel_tokens.records.stream_id`: it sorts keys, and "attributes" comes first)."""
    tail = json.dumps(
        {"metric": sc.METRIC_BILLING_TOKENS, "resource": dict(resource), "scope": scope},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    tail = "," + tail[1:]
    dumps = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str).encode
    sha256 = hashlib.sha256

    def identity(attributes: Mapping[str, Any]) -> str:
        text = '{"attributes":' + dumps(dict(attributes)) + tail
        return sha256(text.encode()).hexdigest()[:32]

    return tail, identity


# What a series' attributes read as: their map and stream id, or why they are refused.
_Series = tuple[Mapping[str, Any], str] | InvalidPointError
_ABSENT: Any = object()  # not there (a cache entry, a number in a point's bytes)


class _Missing:
    def __repr__(self) -> str:
        return "SeriesCache.MISSING"


_MISSING: Any = _Missing()


class SeriesCache:
    """What each series' attributes read as, by (resource and scope, attribute bytes).

    Bounded: past ``max_series`` series it starts again empty (a series costs about 1 KB),
    so memory stays flat whatever the number of series; the cost of a miss is only the
    reading that a cache-less decode does for every point. Thread-safe: the transports
    decode on several threads, and at worst two of them read the same series once each.
    """

    # What `attribute` returns for an attribute the point does not have.
    MISSING: Any = _MISSING

    def __init__(self, max_series: int = DEFAULT_MAX_SERIES) -> None:
        self.max_series = max_series
        self._scopes: dict[str, dict[bytes, _Series]] = {}
        self._attributes: dict[str, dict[bytes, Any]] = {}
        self._size = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._size

    def scope(self, tail: str) -> dict[bytes, _Series]:
        series = self._scopes.get(tail)
        if series is None:
            series = self._scopes.setdefault(tail, {})
        return series

    def added(self) -> None:
        """Count one more series; start again empty past the bound."""
        with self._lock:
            self._size += 1
            if self._size > self.max_series:
                self._scopes, self._attributes = {}, {}
                self._size = 0

    def attribute(self, point: Any, name: str) -> Any:
        """The value of ``point``'s attribute ``name`` (`MISSING` if it has none), read once
        per series; `InvalidPointError` if its attributes do not read as one map (a
        repeated key). ``point`` is an OTLP ``NumberDataPoint`` (of a sum or a gauge: the
        points of a series differ only in their times and value)."""
        key = _split(point.SerializeToString())[3]
        known = self._attributes.get(name)
        if known is None:
            known = self._attributes.setdefault(name, {})
        found = known.get(key, _ABSENT)
        if found is _ABSENT:
            try:
                found = attributes_of(point.attributes).get(name, _MISSING)
            except InvalidPointError as exc:
                found = exc
            known[key] = found
            self.added()
        if isinstance(found, InvalidPointError):
            raise found
        return found


# A NumberDataPoint's fields as the protobuf runtime serialises them, in field order: the
# fixed-width start time (2), time (3), as_double (4) and as_int (6), each a one-byte tag
# and 8 bytes, come before the attributes (7). What follows them is the series' key.
_START, _TIME, _DOUBLE, _INT = 0x11, 0x19, 0x21, 0x31
_U64 = struct.Struct("<Q").unpack_from
_I64 = struct.Struct("<q").unpack_from
_F64 = struct.Struct("<d").unpack_from


def _split(raw: bytes) -> tuple[int | None, int | None, Any, bytes]:
    """(start, time, value, key) of a serialised point: the fixed-width fields found before
    anything else (None or _ABSENT if not there), and the bytes after them.

    Only whole fixed-width fields of those four numbers are skipped, so the key holds every
    attribute byte: equal keys are equal attributes. A runtime that ordered fields
    otherwise would only make the key longer (fewer cache hits) and the numbers be read
    from the message instead."""
    start = time = None
    value = _ABSENT
    i, n = 0, len(raw) - 8
    while i < n:
        tag = raw[i]
        if tag == _TIME:
            (time,) = _U64(raw, i + 1)
        elif tag == _START:
            (start,) = _U64(raw, i + 1)
        elif tag == _INT:
            (value,) = _I64(raw, i + 1)
        elif tag == _DOUBLE:
            (value,) = _F64(raw, i + 1)
        else:
            break
        i += 9
    return start, time, value, raw[i:]


def from_otlp(
    request: Any, cache: SeriesCache | None = None
) -> Iterator[TokenPoint | InvalidPointError]:
    """Token points of an OTLP ``ExportMetricsServiceRequest`` (protobuf message).

    With ``cache``, what each series' attributes read as is kept there for the next
    requests (the collector); the points are the same with or without it."""
    for rm in request.resource_metrics:
        resource = _resource_of(rm.resource.attributes)
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name != sc.METRIC_BILLING_TOKENS:
                    continue
                if isinstance(resource, InvalidPointError):
                    kind = metric.WhichOneof("data")
                    points = getattr(metric, kind).data_points if kind else ()
                    for _ in points:
                        yield resource
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
                tail, identity = _scope_identity(resource, sm.scope.name)
                if cache is None:
                    yield from _read(data.data_points, resource, identity, cumulative)
                else:
                    yield from _read_cached(
                        data.data_points, resource, identity, cumulative, cache, tail
                    )


def _series(p: Any, identity: Callable[[Mapping[str, Any]], str]) -> _Series:
    try:
        attributes = attributes_of(p.attributes, MAX_ATTRIBUTE_LENGTH)
    except InvalidPointError as exc:
        return exc
    return attributes, identity(attributes)


def _kept(attributes: Mapping[str, Any]) -> Mapping[str, Any]:
    """``attributes`` as a cache keeps them: read-only, their text interned (series share
    keys, and most values: a series then costs its own strings only once)."""
    return MappingProxyType(
        {intern(k): intern(v) if type(v) is str else v for k, v in attributes.items()}
    )


def _point(
    series: _Series,
    value: Any,
    start: int,
    time: int,
    resource: Mapping[str, Any],
    cumulative: bool,
) -> TokenPoint | InvalidPointError:
    """The point, or why it is refused: its attributes, then its value, then its time."""
    if isinstance(series, InvalidPointError):
        return series
    try:
        count = check_value(value)
    except InvalidPointError as exc:
        return exc
    if time <= 0:
        return InvalidPointError("data point without time_unix_nano")
    attributes, stream = series
    return TokenPoint(
        stream_id=stream,
        attributes=attributes,
        resource=resource,
        start_ns=start,
        time_ns=time,
        value=count,
        cumulative=cumulative,
    )


def _value(p: Any) -> Any:
    kind = p.WhichOneof("value")
    return getattr(p, kind) if kind else None


def _read(
    points: Any,
    resource: Mapping[str, Any],
    identity: Callable[[Mapping[str, Any]], str],
    cumulative: bool,
) -> Iterator[TokenPoint | InvalidPointError]:
    for p in points:
        yield _point(
            _series(p, identity),
            _value(p),
            int(p.start_time_unix_nano),
            int(p.time_unix_nano),
            resource,
            cumulative,
        )


def _read_cached(
    points: Any,
    resource: Mapping[str, Any],
    identity: Callable[[Mapping[str, Any]], str],
    cumulative: bool,
    cache: SeriesCache,
    tail: str,
) -> Iterator[TokenPoint | InvalidPointError]:
    known = cache.scope(tail)
    for p in points:
        start, time, value, key = _split(p.SerializeToString())
        series = known.get(key)
        if series is None:
            series = _series(p, identity)
            if not isinstance(series, InvalidPointError):
                series = (_kept(series[0]), series[1])
            known[key] = series
            cache.added()
        if (
            type(series) is tuple
            and time is not None
            and time > 0
            and type(value) is int
            and 0 <= value <= MAX_POINT_VALUE
        ):
            # The usual point, inline (as `_point` reads it): a known series, a whole
            # count, a time.
            yield TokenPoint(
                stream_id=series[1],
                attributes=series[0],
                resource=resource,
                start_ns=int(p.start_time_unix_nano) if start is None else start,
                time_ns=time,
                value=value,
                cumulative=cumulative,
            )
            continue
        yield _point(
            series,
            _value(p) if value is _ABSENT else value,
            int(p.start_time_unix_nano) if start is None else start,
            int(p.time_unix_nano) if time is None else time,
            resource,
            cumulative,
        )
