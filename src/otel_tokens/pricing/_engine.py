"""Exact arithmetic: one `Price` times one `TokenUsage` gives a `PriceResult`."""

from __future__ import annotations

from decimal import Context, Decimal, Inexact, localcontext

from ..usage import TokenUsage
from ._model import Price, PriceResult, Processing, Tiered, per_units

# Token counts times decimal rates over powers of ten are exact in this precision; the
# Inexact trap turns any rounding, which would be a bug, into an error instead of a
# silently wrong bill.
EXACT = Context(prec=80, traps=[Inexact])


def compute(
    price: Price,
    usage: TokenUsage,
    *,
    fx: Decimal,
    currency: str,
    catalog_version: str,
    processing: Processing,
    provider: str | None,
    model: str,
) -> PriceResult:
    amounts: dict[str, Decimal] = {}
    unpriced: list[str] = []
    tier_start: int | None = None
    input_total = usage.input_total
    with localcontext(EXACT):
        for bucket, count in usage.buckets():
            key = price.rate_key(bucket)
            if key is None:
                unpriced.append(bucket)
                continue
            rate = price.rates[key]
            if isinstance(rate, Tiered):
                rate, start = rate.rate_for(input_total)
                if start is not None:
                    tier_start = start if tier_start is None else max(tier_start, start)
            amount = Decimal(count) * rate / per_units(key)
            amounts[bucket] = amount * fx if fx != 1 else amount
        total = sum(amounts.values(), Decimal(0))
    context_tier = "base" if tier_start is None else f"above_{_short(tier_start)}"
    if unpriced and not amounts:
        return PriceResult(
            status="unpriced",
            usage=usage,
            model=model,
            provider=provider,
            currency=currency,
            catalog_version=catalog_version,
            price_id=price.price_id,
            processing=processing,
            context_tier=context_tier,
            unpriced_buckets=tuple(unpriced),
            reason=f"{price.price_id} has no rate for {', '.join(unpriced)}",
        )
    return PriceResult(
        status="estimated" if usage.is_estimated else "priced",
        usage=usage,
        model=model,
        provider=provider,
        currency=currency,
        catalog_version=catalog_version,
        total=total,
        amounts=amounts,
        price_id=price.price_id,
        processing=processing,
        context_tier=context_tier,
        unpriced_buckets=tuple(unpriced),
        reason=(
            f"{price.price_id} has no rate for {', '.join(unpriced)}; not included in total"
            if unpriced
            else None
        ),
    )


def _short(tokens: int) -> str:
    if tokens % 1_000_000 == 0:
        return f"{tokens // 1_000_000}m"
    if tokens % 1000 == 0:
        return f"{tokens // 1000}k"
    return str(tokens)
