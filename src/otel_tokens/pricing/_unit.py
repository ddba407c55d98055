"""`UnitPrice`: how any count of one bucket is priced, for as long as its price holds.

A pricing collector prices the same few (model, bucket, processing, tier) again and again,
each with a different count. `Catalog.price_call` would resolve the price, build the usage
and the result every time; a `UnitPrice` keeps what does not depend on the count (the
result's description) and does the count's arithmetic exactly as `compute` does, with the
same functions, so that every amount is the one `price_call` would give.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from ..usage import TokenUsage
from ._engine import bucket_total, tier_input, units_of
from ._model import Price, PriceResult, Processing, Tiered

if TYPE_CHECKING:
    from ._catalog import Catalog

_ONE = Decimal(1)


@dataclass(frozen=True, slots=True)
class UnitPrice:
    """What `Catalog.price_call` says of any count of one bucket between ``valid_from``
    (inclusive) and ``valid_until``: ``result`` is its answer for a count of one, and
    `cost` the total for any count (None: unpriced)."""

    result: PriceResult
    valid_from: datetime
    valid_until: datetime
    rate: Decimal | None = None
    units: Decimal = _ONE
    fx: Decimal = _ONE

    def cost(self, count: int) -> Decimal | None:
        if self.rate is None:
            return None
        return bucket_total(count, self.rate, self.units, self.fx)


def unit_price(
    catalog: Catalog,
    usage: TokenUsage,
    served_model: str | None,
    requested_model: str | None,
    *,
    provider: str | None,
    at: datetime,
    processing: Processing,
    context_tier: str,
) -> UnitPrice | None:
    """The `UnitPrice` of ``usage`` (a count of one in one bucket), or None when its price
    may change at any instant (time-of-day prices) or its arithmetic is not the plain one."""
    ((bucket, count),) = usage.buckets()
    result = catalog.price_call(
        usage,
        served_model,
        requested_model,
        provider=provider,
        at=at,
        processing=processing,
        context_tier=context_tier,
    )
    # price_call may consult both models: the result holds while neither's price changes.
    window = catalog.stable_window(served_model or requested_model or "", provider, at)
    if window is not None and requested_model:
        other = catalog.stable_window(requested_model, provider, at)
        window = None if other is None else (max(window[0], other[0]), min(window[1], other[1]))
    if window is None or count != 1:
        return None
    if result.total is None:
        return UnitPrice(result, *window)
    price = catalog.resolve(
        result.priced_model or result.model, provider=provider, at=at, processing=processing
    )
    if not isinstance(price, Price):
        return None
    rate_key = price.rate_key(bucket)
    fx = catalog.fx_rate(price.currency)
    if rate_key is None or fx is None:
        return None
    rate = price.rates[rate_key]
    if isinstance(rate, Tiered):
        rate, _ = rate.rate_for(tier_input(context_tier))
    unit = UnitPrice(result, *window, rate=rate, units=units_of(rate_key), fx=fx)
    # The same arithmetic as compute's, checked once: anything else is priced call by call.
    return unit if unit.cost(1) == result.total else None
