"""Cohere ``usage`` (API v2: chat, chat stream's ``message-end``, embed, rerank).

Cohere reports two sets of counts: ``tokens`` (what the model read and wrote, the prompt
template included) and ``billed_units`` (what Cohere bills). We bill ``billed_units``, as
the semantic conventions say usage is what the provider bills. The counts are JSON numbers
that the SDK types as floats (``5.0``); a fraction is refused, not rounded.

``cached_tokens`` (prompt tokens served from Cohere's cache) is not split out of the billed
input: Cohere publishes no separate rate for it, and its ``billed_units.input_tokens`` is
what it charges. ``search_units`` (rerank) go to the ``search_units`` bucket, a request
bucket priced per thousand units (``search_units_kcount``), never as tokens.
``classifications`` and ``images`` have no bucket: `cohere_units` reads them, and the
adapter keeps a call that bills them unpriced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._model import TokenUsage, UsageSource
from ._read import count, field, require_mapping_like


@dataclass(frozen=True, slots=True)
class CohereUnits:
    """What a Cohere call billed that no bucket holds."""

    classifications: int = 0
    images: int = 0


def from_cohere(usage: Any, *, source: UsageSource = "provider") -> TokenUsage:
    """The billed tokens of a v2 ``usage`` object (or dict)."""
    require_mapping_like(usage, "Cohere")
    billed = field(usage, "billed_units")
    if billed is None:
        return TokenUsage(source=source)
    return TokenUsage(
        input=count(billed, "input_tokens"),
        output=count(billed, "output_tokens"),
        search_units=count(billed, "search_units"),
        source=source,
    )


def cohere_units(usage: Any) -> CohereUnits:
    """The billed units of a v2 ``usage`` object that no bucket holds."""
    billed = field(usage, "billed_units")
    return CohereUnits(
        classifications=count(billed, "classifications"),
        images=count(billed, "images"),
    )
