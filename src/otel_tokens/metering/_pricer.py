"""Token points in, exactly-once cost records out.

Temporality (documented in docs/collector.md, "Exactly once"):

* delta points cover ``(start, time]``; a point is billed once because its record id is
  derived from (stream, start, time, bucket), never from its price, and the ledger ignores
  known ids: a point delivered again after a price change is still the same record;
* cumulative points are billed from the stream's mark, the (time, value) last billed for that
  (stream, start time), kept in the ledger in the same transaction as the records: a point
  at or before the mark is a duplicate or arrived out of order and changes nothing; a later
  point bills ``value - mark.value`` over ``(mark.time, time]``;
* a new start time is a restart: a new mark, billed from zero from the new start; a value
  below the mark under the same start is a reset and bills the new value;
* the first point of a stream whose start is unknown (0) is billed whole, over
  ``(time, time]``, since SDKs count from the process start.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Context, Decimal, Inexact, localcontext
from typing import Any

from ..ledger import Ledger, LedgerTransaction
from ..pricing import Catalog, PriceResult, UnitPrice, default_catalog
from ..records import CHARGE_ADJUSTMENT, CostRecord
from ..usage import TokenUsage
from ._series import BUCKET_FIELD as _BUCKET_FIELD
from ._series import Series, SeriesPricing
from .points import InvalidPointError, TokenPoint, check_times

# Differences of exact amounts are exact; a rounding would be a bug, so it raises.
_EXACT = Context(prec=80, traps=[Inexact])


@dataclass(slots=True)
class RepriceResult:
    """What `LedgerPricer.reprice` found and wrote."""

    examined: int = 0  # usage records in the selection
    adjustments: list[CostRecord] = field(default_factory=list)  # newly written
    unchanged: int = 0  # already billed at the current price
    still_unpriced: int = 0  # no price now either: nothing to adjust
    not_adjusted: list[str] = field(default_factory=list)  # why each other record was left
    # Ids of usage stored twice (unpriced, then priced) by ledgers before migration 3.
    duplicates: list[str] = field(default_factory=list)


@dataclass(slots=True)
class IngestResult:
    points: int = 0
    records: list[CostRecord] = field(default_factory=list)  # newly written
    unchanged: int = 0  # duplicates, replays, out-of-order cumulative points
    rejected: list[str] = field(default_factory=list)


_TIMES: dict[int, datetime] = {}


def _ts(ns: int) -> datetime:
    # Kept: a batch's points share a few export times (and marks), and datetimes are slow.
    at = _TIMES.get(ns)
    if at is None:
        if len(_TIMES) >= 4096:
            _TIMES.clear()
        at = _TIMES[ns] = datetime.fromtimestamp(ns / 1e9, UTC)
    return at


def _latest(
    valid: Sequence[tuple[TokenPoint, Series, int]],
) -> list[tuple[str, int, int, int]]:
    """Each cumulative stream's mark once the batch is billed (``valid`` in stream, start
    and time order): its first point of the latest time, as `_interval` leaves it (a later
    point of the same time is a duplicate). Whether it moves the stored mark is the
    ledger's to see (only a later time does)."""
    latest: dict[tuple[str, int], TokenPoint] = {}
    for point, _, _ in valid:
        if point.cumulative:
            key = (point.stream_id, point.start_ns)
            known = latest.get(key)
            if known is None or point.time_ns > known.time_ns:
                latest[key] = point
    return [(p.stream_id, p.start_ns, p.time_ns, p.value) for p in latest.values()]


class LedgerPricer:
    """Prices token points and writes their cost records to a ledger, exactly once.

    (Not a ``Meter``: that name is OpenTelemetry's, for what creates instruments.)"""

    def __init__(self, ledger: Ledger, catalog: Catalog | None = None) -> None:
        self.ledger = ledger
        self._catalog = catalog
        # List prices (FOCUS ListCost) of each pricing catalog: see `_list_catalog`.
        self._list_catalogs: dict[int, tuple[Catalog, Catalog]] = {}
        # What each series' attributes say of its records, and its prices while they hold.
        self._series = SeriesPricing()

    @property
    def catalog(self) -> Catalog:
        return self._catalog or default_catalog()

    def ingest(self, points: Iterable[TokenPoint | InvalidPointError]) -> IngestResult:
        """Price ``points`` and write their new records, in one ledger transaction."""
        return self.ingest_many([points])[0]

    def ingest_many(
        self, batches: Sequence[Iterable[TokenPoint | InvalidPointError]]
    ) -> list[IngestResult]:
        """`ingest` of several batches in one ledger transaction (one commit for all, as
        a collector does for the requests that arrive while the ledger is busy): each
        batch's own result, its rejections, new records and unchanged points (a point
        that is also in an earlier batch is billed for that one)."""
        results = [IngestResult() for _ in batches]
        valid: list[tuple[TokenPoint, Series, int]] = []
        known = self._series
        known.use(self.catalog)
        for i, points in enumerate(batches):
            result = results[i]
            for point in points:
                result.points += 1
                if isinstance(point, InvalidPointError):
                    result.rejected.append(str(point))
                    continue
                # check_point, its attribute part read once per series.
                series = known.of(point)
                problem = series.problem or check_times(point)
                if problem is not None:
                    result.rejected.append(str(problem))
                    continue
                valid.append((point, series, i))
        if not valid:  # nothing to write: no transaction (a ledger that is down is not asked)
            return results
        # A fixed order: replicas locking the same marks never deadlock. (Equal points of
        # two batches bill once, for the earlier batch: the sort is stable.)
        valid.sort(key=lambda v: (v[0].stream_id, v[0].start_ns, v[0].time_ns))
        owners: dict[int, int] = {}  # id(record) -> its batch
        with self.ledger.transaction() as tx:
            advance = getattr(tx, "advance", None)
            prefetch = getattr(tx, "prefetch", None)
            if advance is not None:  # ledgers that lock, move and read marks at once
                advance(_latest(valid))
            elif prefetch is not None:  # ledgers that can read all marks of a batch at once
                prefetch([(p.stream_id, p.start_ns) for p, _, _ in valid if p.cumulative])
            records = []
            for point, series, i in valid:
                interval = self._interval(tx, point)
                if interval is None:
                    results[i].unchanged += 1
                    continue
                start_ns, quantity = interval
                if quantity == 0:
                    continue
                record = self._record(point, start_ns, quantity, series)
                records.append(record)
                owners[id(record)] = i
            inserted = tx.insert(records) if records else []
        new = {id(r) for r in inserted}
        for record in records:
            i = owners[id(record)]
            if id(record) in new:
                results[i].records.append(record)
            else:  # its id was already in the ledger
                results[i].unchanged += 1
        return results

    def _interval(self, tx: LedgerTransaction, point: TokenPoint) -> tuple[int, int] | None:
        """(period start ns, quantity) to bill for ``point``, or None if nothing new."""
        if not point.cumulative:
            return (point.start_ns or point.time_ns), point.value
        mark = tx.mark(point.stream_id, point.start_ns)
        if mark is None:
            tx.set_mark(point.stream_id, point.start_ns, point.time_ns, point.value)
            return (point.start_ns or point.time_ns), point.value
        mark_time, mark_value = mark
        if point.time_ns <= mark_time:
            return None
        tx.set_mark(point.stream_id, point.start_ns, point.time_ns, point.value)
        if point.value < mark_value:  # reset without a new start time
            return mark_time, point.value
        return mark_time, point.value - mark_value

    def record(self, point: TokenPoint, start_ns: int, quantity: int) -> CostRecord:
        """The cost record of ``quantity`` of ``point``'s bucket over (start_ns, its time]."""
        self._series.use(self.catalog)
        return self._record(point, start_ns, quantity, self._series.of(point))

    def _record(self, point: TokenPoint, start_ns: int, quantity: int, s: Series) -> CostRecord:
        if s.problem is not None:
            raise s.problem
        at = _ts(point.time_ns)
        units = self._series.units(s, at, self._unit_prices)
        if units is not None:
            billed, listed_unit = units
            result = billed.result
            billed_cost = billed.cost(quantity)
            if billed_cost is None or listed_unit is None:
                list_cost = billed_cost
            else:
                list_cost = listed_unit.cost(quantity)
        else:  # prices that change by the time of day: priced point by point
            usage = TokenUsage(**{s.usage_field: quantity}, source=s.source)
            result, list_cost = self._price(
                usage, s.response_model, s.request_model, s.provider, at, s.processing, s.tier
            )
            billed_cost = result.total
        return CostRecord(
            stream_id=point.stream_id,
            period_start=_ts(start_ns),
            period_end=at,
            provider=s.provider,
            model=result.model,
            bucket=s.bucket,
            quantity=quantity,
            currency=result.currency,
            catalog_version=result.catalog_version,
            pricing_status=result.status,
            usage_source=s.source,
            processing=s.processing,
            context_tier=s.tier,
            price_id=result.price_id,
            priced_model=result.priced_model,
            billed_cost=billed_cost,
            list_cost=list_cost,
            tenant=s.tenant,
            feature=s.feature,
            user_id=s.user_id,
            operation=s.operation,
            service_name=s.service_name,
            tags=dict(s.tags),
        )

    def _unit_prices(self, s: Series, at: datetime) -> tuple[UnitPrice, UnitPrice | None] | None:
        """The unit prices of a series' records at ``at``: billed, and list (None when the
        list cost is the billed cost); None if they cannot be kept."""
        usage = TokenUsage(**{s.usage_field: 1}, source=s.source)
        catalog = self.catalog

        def unit(c: Catalog) -> UnitPrice | None:
            return c.unit_price(
                usage,
                s.response_model,  # read as in `_price`: empty is None
                s.request_model,
                provider=s.provider or None,
                at=at,
                processing=s.processing,
                context_tier=s.tier,
            )

        billed = unit(catalog)
        if billed is None:
            return None
        if billed.rate is None or catalog.user is None:
            return billed, None
        listed = unit(self._list_catalog(catalog))
        return None if listed is None else (billed, listed)

    def reprice(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        tenant: str | None = None,
        model: str | None = None,
        dry_run: bool = False,
    ) -> RepriceResult:
        """Price the stored usage of a period (and tenant, model) with this pricer's catalog
        and write an adjustment record for each usage whose billed cost differs.

        Nothing is edited: an adjustment carries the difference to what the usage was
        billed so far (its record plus earlier adjustments), quantity 0, and an id derived
        from what it adjusts, so running it again, or twice at once, adds nothing. Usage
        that has no price now is left as it is (never adjusted to "unpriced").
        """
        result = RepriceResult()
        stored = list(self.ledger.records(since, until))
        adjusted: dict[str, list[CostRecord]] = {}
        for record in stored:
            if record.adjusts is not None:
                adjusted.setdefault(record.adjusts, []).append(record)
        by_usage: dict[str, list[CostRecord]] = {}
        for record in stored:
            if record.adjusts is not None:
                continue
            if (tenant is not None and record.tenant != tenant) or (
                model is not None and model not in (record.model, record.priced_model)
            ):
                continue
            result.examined += 1
            key = record.usage_key
            assert key is not None
            by_usage.setdefault(key, []).append(record)
        new: list[CostRecord] = []
        for same in by_usage.values():
            if len(same) > 1:
                # One usage stored twice, before record ids stopped naming the price (ledger
                # migration 3): which one to keep is a decision, not a re-pricing. Reported.
                result.duplicates.extend(r.id for r in same)
                continue
            record = same[0]
            adjustment = self._adjustment(record, adjusted.get(record.id, []), result)
            if adjustment is not None:
                new.append(adjustment)
        if new and not dry_run:
            with self.ledger.transaction() as tx:
                result.adjustments = tx.insert(new)
            result.unchanged += len(new) - len(result.adjustments)
        elif dry_run:
            result.adjustments = new
        return result

    def _adjustment(
        self, record: CostRecord, earlier: list[CostRecord], result: RepriceResult
    ) -> CostRecord | None:
        usage = TokenUsage(
            **{_BUCKET_FIELD[record.bucket]: record.quantity},
            source=record.usage_source,  # type: ignore[arg-type]
        )
        at = record.period_end
        served = record.model
        requested = record.priced_model
        priced, listed = self._price(
            usage, served, requested, record.provider, at, record.processing, record.context_tier
        )
        if priced.total is None:
            result.still_unpriced += 1
            return None
        if priced.currency != record.currency or any(
            a.currency != record.currency for a in earlier
        ):
            result.not_adjusted.append(
                f"{record.id}: billed in {record.currency}, now priced in {priced.currency}"
            )
            return None
        with localcontext(_EXACT):
            billed_so_far = _net(record.billed_cost, (a.billed_cost for a in earlier))
            listed_so_far = _net(record.list_cost, (a.list_cost for a in earlier))
            if billed_so_far == priced.total and listed_so_far == listed:
                result.unchanged += 1
                return None
            billed_delta = priced.total - (billed_so_far or 0)
            list_delta = None if listed is None else listed - (listed_so_far or 0)
        return replace(
            record,
            quantity=0,
            catalog_version=priced.catalog_version,
            pricing_status=priced.status,
            price_id=priced.price_id,
            priced_model=priced.priced_model,
            billed_cost=billed_delta,
            list_cost=list_delta,
            charge_category=CHARGE_ADJUSTMENT,
            adjusts=record.id,
            adjusted_from=billed_so_far,
            stored_id=None,
        )

    def _list_catalog(self, catalog: Catalog) -> Catalog:
        """The bundled list prices, in ``catalog``'s reporting currency (same FX rates).

        ListCost must be in the BillingCurrency: a price file reporting in EUR converts
        list prices with its own FX rates, without its models and discounts.
        """
        cached = self._list_catalogs.get(id(catalog))
        if cached is not None and cached[0] is catalog:
            return cached[1]
        user = catalog.user
        listed = Catalog(None if user is None else replace(user, models=(), discounts=()))
        self._list_catalogs = {id(catalog): (catalog, listed)}
        return listed

    def _price(
        self,
        usage: TokenUsage,
        response_model: Any,
        request_model: Any,
        provider: str,
        at: datetime,
        processing: Any,
        tier: str,
    ) -> tuple[PriceResult, Decimal | None]:
        """The price of ``usage`` (`Catalog.price_call`: by the served model, else the
        requested one) and its list cost (FOCUS ListCost): the bundled list price when a
        price file sets what is billed, else the billed cost; None without a price."""

        def price_in(catalog: Catalog) -> PriceResult:
            return catalog.price_call(
                usage,
                _str(response_model) or None,
                _str(request_model) or None,
                provider=provider or None,
                at=at,
                processing=processing,
                context_tier=tier,
            )

        catalog = self.catalog
        result = price_in(catalog)
        if result.total is None or catalog.user is None:
            return result, result.total
        return result, price_in(self._list_catalog(catalog)).total


def _net(first: Decimal | None, adjustments: Iterable[Decimal | None]) -> Decimal | None:
    """A usage record's cost plus its adjustments' (None: never priced)."""
    total = first
    for amount in adjustments:
        if amount is not None:
            total = amount if total is None else total + amount
    return total


def _str(value: Any) -> str | None:
    return None if value is None else str(value)
