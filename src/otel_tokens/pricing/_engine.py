"""Exact arithmetic: one `Price` times one `TokenUsage` gives a `PriceResult`."""

from __future__ import annotations

from decimal import Context, Decimal, Inexact
from functools import partial

from ..usage import TokenUsage
from ._model import BUCKET_PRICE_KEYS, PRICE_KEYS, Price, PriceResult, Processing, Tiered, per_units

# Token counts times decimal rates over powers of ten are exact in this precision; the
# Inexact trap turns any rounding, which would be a bug, into an error instead of a
# silently wrong bill.
EXACT = Context(prec=80, traps=[Inexact])
# The context's own methods, not `localcontext`: the same results without switching the
# thread's context per call (pricing runs once per metered call).
_multiply, _divide, _add = EXACT.multiply, EXACT.divide, EXACT.add
_UNITS = {key: Decimal(per_units(key)) for key in PRICE_KEYS}
_ZERO = Decimal(0)


def units_of(key: str) -> Decimal:
    """The number of units a rate of ``key`` is for (a million tokens, a thousand requests)."""
    return _UNITS[key]


def bucket_amount(count: int, rate: Decimal, units: Decimal, fx: Decimal) -> Decimal:
    """The exact amount of ``count`` units at ``rate`` per ``units``, converted by ``fx``."""
    amount = _divide(_multiply(count, rate), units)
    return amount if fx == 1 else _multiply(amount, fx)


def bucket_total(count: int, rate: Decimal, units: Decimal, fx: Decimal) -> Decimal:
    """The total `compute` gives a usage of that one bucket (its amount, summed from zero)."""
    return _add(_ZERO, bucket_amount(count, rate, units, fx))


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
    context_tier: str | None = None,
) -> PriceResult:
    amounts: dict[str, Decimal] = {}
    unpriced: list[str] = []
    tier_start: int | None = None
    # A known context tier (from an aggregated metric point, whose single bucket does not
    # tell the call's input size) selects the tier directly.
    input_total = usage.input_total if context_tier is None else tier_input(context_tier)
    total = _ZERO
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
        amount = bucket_amount(count, rate, _UNITS[key], fx)
        amounts[bucket] = amount
        total = _add(total, amount)
    context_tier = "base" if tier_start is None else f"above_{_short(tier_start)}"
    # What the result says of the call whether or not it is priced.
    result = partial(
        PriceResult,
        usage=usage,
        model=model,
        provider=provider,
        currency=currency,
        catalog_version=catalog_version,
        price_id=price.price_id,
        processing=processing,
        context_tier=context_tier,
    )
    if unpriced:
        # Fail closed: a total without some of the billed buckets would look exact and be
        # wrong, so the call has no total at all, and the reason names what is missing.
        missing = ", ".join(
            f"{bucket} ({' or '.join(BUCKET_PRICE_KEYS[bucket])})" for bucket in unpriced
        )
        return result(
            status="unpriced",
            unpriced_buckets=tuple(unpriced),
            reason=(
                f"{price.price_id} has no rate for {missing}; the call is not priced rather "
                "than priced without them. Add the rate to a price file (OTEL_TOKENS_PRICES "
                "or --prices) to bill it"
            ),
        )
    return result(
        status="estimated" if usage.is_estimated else "priced", total=total, amounts=amounts
    )


def tier_input(context_tier: str) -> int:
    """An inclusive input size that falls in ``context_tier`` ("base", "above_200k", ...)."""
    if context_tier == "base" or not context_tier.startswith("above_"):
        return 0
    text = context_tier[len("above_") :]
    scale = {"k": 1000, "m": 1_000_000}.get(text[-1:], 1)
    digits = text[:-1] if scale != 1 else text
    if not digits.isdigit():
        raise ValueError(f"unknown context tier {context_tier!r}")
    return int(digits) * scale + 1


def _short(tokens: int) -> str:
    if tokens % 1_000_000 == 0:
        return f"{tokens // 1_000_000}m"
    if tokens % 1000 == 0:
        return f"{tokens // 1000}k"
    return str(tokens)
