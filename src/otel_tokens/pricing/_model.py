"""The pricing data model: a price (one catalog entry, resolved) and a price result."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal

from ..usage import TokenUsage

PricingStatus = Literal["priced", "unpriced", "estimated", "variant_unavailable"]
Processing = Literal["standard", "batch", "flex", "priority"]
PROCESSING_VALUES: tuple[Processing, ...] = ("standard", "batch", "flex", "priority")

# Per million tokens, or per thousand requests, as genai-prices defines its price keys.
TOKEN_PRICE_KEYS = (
    "input_mtok",
    "input_text_mtok",
    "input_audio_mtok",
    "input_image_mtok",
    "cache_read_mtok",
    "cache_write_mtok",
    "cache_write_5m_mtok",
    "cache_write_1h_mtok",
    "output_mtok",
    "output_text_mtok",
    "output_audio_mtok",
    "output_image_mtok",
    "output_reasoning_mtok",
)
# search_units_kcount is ours (genai-prices has no search-priced model): a user price file
# prices Cohere rerank's search units with it.
REQUEST_PRICE_KEYS = ("web_searches_kcount", "search_units_kcount")
PRICE_KEYS = TOKEN_PRICE_KEYS + REQUEST_PRICE_KEYS

# Which price keys can price a bucket, most specific first. A bucket falls back to another
# key only where every provider bills it that way: text input and output are "input" and
# "output"; reasoning tokens are billed as output tokens (OpenAI, Anthropic and Google say
# so on their price pages); a 5-minute cache write is the default cache write. Anything
# else (cache reads, 1-hour cache writes, audio, image) has a price of its own wherever it
# is billed, so a missing rate is missing, never the parent's rate: the bucket is unpriced
# and so is the call (genai-prices itself would price audio at the text rate).
BUCKET_PRICE_KEYS: Mapping[str, tuple[str, ...]] = {
    "input": ("input_text_mtok", "input_mtok"),
    "input_audio": ("input_audio_mtok",),
    "input_image": ("input_image_mtok",),
    "cache_read": ("cache_read_mtok",),
    "cache_write_5m": ("cache_write_5m_mtok", "cache_write_mtok"),
    "cache_write_1h": ("cache_write_1h_mtok",),
    "output": ("output_text_mtok", "output_mtok"),
    "output_audio": ("output_audio_mtok",),
    "output_image": ("output_image_mtok",),
    "reasoning": ("output_reasoning_mtok", "output_mtok"),
    "web_search": ("web_searches_kcount",),
    "search_units": ("search_units_kcount",),
}


def per_units(price_key: str) -> int:
    """How many units one price is quoted for."""
    return 1000 if price_key.endswith("_kcount") else 1_000_000


@dataclass(frozen=True, slots=True)
class Tiered:
    """A price that changes with the call's total input tokens.

    The whole call pays the rate of the highest tier whose ``start`` its input total
    exceeds (the "cliff" model providers use, e.g. Gemini above 200k tokens).
    """

    base: Decimal
    tiers: tuple[tuple[int, Decimal], ...]

    def rate_for(self, input_total: int) -> tuple[Decimal, int | None]:
        for start, rate in reversed(self.tiers):
            if input_total > start:
                return rate, start
        return self.base, None

    def scaled(self, factor: Decimal) -> Tiered:
        return Tiered(self.base * factor, tuple((s, r * factor) for s, r in self.tiers))


Rate = Decimal | Tiered


@dataclass(frozen=True, slots=True)
class Price:
    """Unit prices in force for one model at one instant, for one processing variant."""

    price_id: str
    provider: str
    model: str
    currency: str
    rates: Mapping[str, Rate]
    effective_from: datetime | None = None
    origin: Literal["genai-prices", "user", "correction"] = "genai-prices"

    def rate_key(self, bucket: str) -> str | None:
        for key in BUCKET_PRICE_KEYS[bucket]:
            if key in self.rates:
                return key
        return None


@dataclass(frozen=True, slots=True)
class PriceResult:
    """What a usage costs, or why it has no price.

    ``total`` is ``None`` (never zero) unless the status is ``priced`` or ``estimated``.
    Amounts are exact ``Decimal`` values in ``currency``, not rounded.
    """

    status: PricingStatus
    usage: TokenUsage
    model: str
    provider: str | None
    currency: str
    catalog_version: str
    total: Decimal | None = None
    amounts: Mapping[str, Decimal] = field(default_factory=dict)
    price_id: str | None = None
    processing: Processing = "standard"
    context_tier: str = "base"
    unpriced_buckets: tuple[str, ...] = ()
    reason: str | None = None
    # The model whose price was used when it is not ``model`` (the served model has no
    # price; `Catalog.price_call` used the requested model's): the status is then
    # ``estimated``.
    priced_model: str | None = None

    @property
    def is_priced(self) -> bool:
        return self.total is not None

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict; money as decimal strings so nothing is lost."""
        return {
            "status": self.status,
            "total": None if self.total is None else decimal_str(self.total),
            "currency": self.currency,
            "amounts": {k: decimal_str(v) for k, v in self.amounts.items()},
            "price_id": self.price_id,
            "catalog_version": self.catalog_version,
            "model": self.model,
            "provider": self.provider,
            "processing": self.processing,
            "context_tier": self.context_tier,
            "usage_source": self.usage.source,
            "unpriced_buckets": list(self.unpriced_buckets),
            "reason": self.reason,
            "priced_model": self.priced_model,
            "usage": dict(self.usage.buckets()),
        }


def decimal_str(value: Decimal) -> str:
    """Fixed-point text of an exact Decimal: no exponent, no trailing zeros (money as text)."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"
