"""What a series' attributes say of its cost records, and the unit prices that hold for it.

Every point of a series (a stream of ``gen_ai.billing.tokens``) has the same attributes,
so whether they can be billed, and the record's provider, model, bucket, attribution and
tags, are read once per series, not once per point. Its prices are kept as `UnitPrice`s
by what prices them (models, provider, bucket, processing, tier, source), for as long as
the catalog says they hold: a point then costs one exact multiplication, the same
arithmetic `Catalog.price_call` would do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .. import semconv as sc
from ..pricing import Catalog, UnitPrice
from .points import InvalidPointError, TokenPoint, check_attributes

# Series and price keys kept; past that they start again empty, so memory stays flat.
MAX_SERIES = 200_000

BUCKET_FIELD = (
    {b: b for b in sc.TOKEN_BUCKETS}
    | {sc.BUCKET_WEB_SEARCH: "web_search_requests"}
    | {sc.BUCKET_SEARCH_UNITS: "search_units"}
)

Units = tuple[UnitPrice, UnitPrice | None]


@dataclass(frozen=True, slots=True)
class Series:
    """A series' attributes as its cost records use them (``problem``: why its points
    cannot be billed; the other fields are then empty)."""

    attributes: Mapping[str, Any]
    service_name: str | None
    problem: InvalidPointError | None
    bucket: str = ""
    usage_field: str = ""
    source: Any = sc.USAGE_SOURCE_PROVIDER
    provider: str = ""
    response_model: str | None = None
    request_model: str | None = None
    processing: Any = sc.PROCESSING_STANDARD
    tier: str = "base"
    tenant: str | None = None
    feature: str | None = None
    user_id: str | None = None
    operation: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    # What prices its records (the unit prices' key), made once per series, not per point.
    price_key: tuple[Any, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        key = (
            self.bucket,
            self.source,
            self.provider,
            self.response_model,
            self.request_model,
            self.processing,
            self.tier,
        )
        object.__setattr__(self, "price_key", key)


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def read_series(attributes: Mapping[str, Any], resource: Mapping[str, Any]) -> Series:
    a = attributes
    service_name = _str(resource.get("service.name"))
    problem = check_attributes(a)
    if problem is not None:
        return Series(a, service_name, problem)
    bucket = str(a[sc.BILLING_TOKEN_BUCKET])
    return Series(
        attributes=a,
        service_name=service_name,
        problem=None,
        bucket=bucket,
        usage_field=BUCKET_FIELD[bucket],
        source=a.get(sc.BILLING_USAGE_SOURCE, sc.USAGE_SOURCE_PROVIDER),
        provider=str(a.get(sc.GEN_AI_PROVIDER_NAME, "")),
        response_model=_str(a.get(sc.GEN_AI_RESPONSE_MODEL)) or None,
        request_model=_str(a.get(sc.GEN_AI_REQUEST_MODEL)) or None,
        processing=a.get(sc.BILLING_PROCESSING, sc.PROCESSING_STANDARD),
        tier=str(a.get(sc.BILLING_CONTEXT_TIER, "base")),
        tenant=_str(a.get(sc.BILLING_TENANT_ID)),
        feature=_str(a.get(sc.BILLING_FEATURE)),
        user_id=_str(a.get(sc.BILLING_USER_ID)),
        operation=_str(a.get(sc.GEN_AI_OPERATION_NAME)),
        tags={
            k[len(sc.BILLING_TAG_PREFIX) :]: str(v)
            for k, v in a.items()
            if k.startswith(sc.BILLING_TAG_PREFIX)
        },
    )


class SeriesPricing:
    """`Series` by stream id, and unit prices by price key, each bounded by ``max_series``.

    A stream id names its attributes and resource (a hash of them), but a point is only
    taken for a known series when its attributes are those read, so that a source naming
    its streams otherwise cannot be billed with another series' attributes."""

    def __init__(self, max_series: int = MAX_SERIES) -> None:
        self.max_series = max_series
        self._series: dict[str, Series] = {}
        self._units: dict[tuple[Any, ...], Units] = {}
        self._catalog: Catalog | None = None
        self._version: str | None = None

    def use(self, catalog: Catalog) -> None:
        """Price with ``catalog`` from now on: its prices, at its version (an update of the
        price data, or another catalog, drops the unit prices kept)."""
        version = catalog.version
        if catalog is not self._catalog or version != self._version:
            self._units = {}
            self._catalog, self._version = catalog, version

    def of(self, point: TokenPoint) -> Series:
        s = self._series.get(point.stream_id)
        a = point.attributes
        if s is not None and (s.attributes is a or s.attributes == a):
            name = point.resource.get("service.name")
            if s.service_name == (None if name is None else str(name)):
                return s
        s = read_series(a, point.resource)
        if len(self._series) >= self.max_series:
            self._series = {}
        self._series[point.stream_id] = s
        return s

    def units(
        self, s: Series, at: datetime, make: Callable[[Series, datetime], Units | None]
    ) -> Units | None:
        """The unit prices of ``s`` at ``at`` (``make``'s, kept while they hold)."""
        key = s.price_key
        units = self._units.get(key)
        if units is not None and _holds(units, at):
            return units
        units = make(s, at)
        if units is not None:
            if len(self._units) >= self.max_series:
                self._units = {}
            self._units[key] = units
        return units


def _holds(units: Units, at: datetime) -> bool:
    billed, listed = units
    return billed.valid_from <= at < billed.valid_until and (
        listed is None or listed.valid_from <= at < listed.valid_until
    )
