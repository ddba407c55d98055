"""Exact pricing over a versioned catalog (genai-prices data plus the user's price file)."""

from __future__ import annotations

from datetime import datetime

from ..usage import TokenUsage
from ._catalog import (
    ENV_PRICE_UPDATES,
    Catalog,
    default_catalog,
    genai_prices_provider,
    known_to_catalog,
    set_default_catalog,
    start_price_updates,
)
from ._corrections import CorrectionStatus, bundled_corrections, correction_status
from ._model import (
    PROCESSING_VALUES,
    Price,
    PriceResult,
    PricingStatus,
    Processing,
    Tiered,
    decimal_str,
)
from ._unit import UnitPrice
from ._userfile import ENV_PRICES, PriceFileError, load_user_prices, parse_user_prices

__all__ = [
    "ENV_PRICES",
    "ENV_PRICE_UPDATES",
    "PROCESSING_VALUES",
    "Catalog",
    "CorrectionStatus",
    "Price",
    "PriceFileError",
    "PriceResult",
    "PricingStatus",
    "Processing",
    "Tiered",
    "UnitPrice",
    "bundled_corrections",
    "correction_status",
    "decimal_str",
    "default_catalog",
    "genai_prices_provider",
    "known_to_catalog",
    "load_user_prices",
    "parse_user_prices",
    "price",
    "set_default_catalog",
    "start_price_updates",
]


def price(
    usage: TokenUsage,
    model: str,
    *,
    provider: str | None = None,
    at: datetime | None = None,
    processing: Processing = "standard",
    catalog: Catalog | None = None,
) -> PriceResult:
    """Price ``usage`` of ``model`` exactly, with the prices in force at ``at``."""
    return (catalog or default_catalog()).price(
        usage, model, provider=provider, at=at, processing=processing
    )
