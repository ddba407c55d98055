"""The project's corrections over genai-prices: a price file shipped in the package.

Each entry carries its provenance (``source``, ``date``). `correction_status` tells whether
genai-prices now has the same rates, so a correction can be dropped once upstream has it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib.resources import files
from typing import Literal

from ._model import Rate, Tiered
from ._userfile import PriceFileError, UserPrice, UserPrices, parse_user_prices

CORRECTIONS_FILE = "corrections.yaml"

CorrectionState = Literal["needed", "covered_upstream", "differs_upstream"]


@dataclass(frozen=True, slots=True)
class CorrectionStatus:
    """One correction and how genai-prices' data now compares with it."""

    entry: UserPrice
    state: CorrectionState
    detail: str


@cache
def bundled_corrections() -> UserPrices:
    """The corrections shipped with this release (parsed once; a broken file is our bug)."""
    resource = files(__package__ or "otel_tokens.pricing").joinpath(CORRECTIONS_FILE)
    prices = parse_user_prices(resource.read_bytes(), f"otel_tokens/pricing/{CORRECTIONS_FILE}")
    for entry in prices.models:
        if entry.source is None or entry.date is None or entry.model is None:
            raise PriceFileError(
                f"{prices.path} at models[{entry.index}]: a correction needs 'model', "
                "'source' (the provider's price page) and 'date'"
            )
    return prices


def correction_status(entry: UserPrice, at: datetime) -> CorrectionStatus:
    """Does genai-prices (the data in use) now have this correction's rates?"""
    from ._catalog import catalog_rates  # the catalog imports this module

    assert entry.model is not None
    upstream = catalog_rates(entry.model, entry.provider, at)
    if upstream is None:
        return CorrectionStatus(entry, "needed", "genai-prices has no price for this model")
    missing, tiers, different = [], [], []
    for key, ours in entry.rates.items():
        theirs = upstream.get(key)
        if theirs is None:
            missing.append(key)
        elif _same(ours, theirs):
            continue
        elif isinstance(ours, Tiered) and not isinstance(theirs, Tiered) and ours.base == theirs:
            tiers.append(key)  # upstream has the base rate, not the long-context tiers
        else:
            different.append(key)
    if not (missing or tiers or different):
        return CorrectionStatus(
            entry, "covered_upstream", "genai-prices now has the same rates: remove it"
        )
    parts = []
    if missing:
        parts.append(f"lacks {', '.join(sorted(missing))}")
    if tiers:
        parts.append(f"lacks the tiers of {', '.join(sorted(tiers))}")
    if different:
        parts.append(f"has other rates for {', '.join(sorted(different))}: check the source")
    state: CorrectionState = "differs_upstream" if different else "needed"
    return CorrectionStatus(entry, state, "genai-prices " + "; ".join(parts))


def _same(a: Rate, b: Rate) -> bool:
    if isinstance(a, Tiered) and isinstance(b, Tiered):
        return a.base == b.base and a.tiers == b.tiers
    return not isinstance(a, Tiered) and not isinstance(b, Tiered) and a == b
