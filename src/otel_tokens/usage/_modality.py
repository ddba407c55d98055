"""`Modalities`: the per-modality token counts a provider reported, as upstream counts them.

These are not billable buckets. Upstream (semantic-conventions-genai PR #440) counts them
inclusively and they overlap: ``text_input`` holds every text input token, the ones read from
the cache (``text_cache_read``) included, and is a part of ``gen_ai.usage.input_tokens``. So
they cannot be derived from the disjoint buckets (which split off the cache, whatever its
modality); the converters copy them from the provider's own breakdown, and only what it
reported: a count it did not report is never guessed, nor written as 0.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from .. import semconv as sc
from ._counts import MAX_TOKENS_PER_CALL, InvalidUsageError, attribute_int, check_count

if TYPE_CHECKING:
    from ._model import TokenUsage

# Field -> upstream span attribute, in the registry's order.
ATTRIBUTES: tuple[tuple[str, str], ...] = (
    ("text_input", sc.GEN_AI_USAGE_TEXT_INPUT_TOKENS),
    ("image_input", sc.GEN_AI_USAGE_IMAGE_INPUT_TOKENS),
    ("audio_input", sc.GEN_AI_USAGE_AUDIO_INPUT_TOKENS),
    ("text_cache_read", sc.GEN_AI_USAGE_TEXT_CACHE_READ_INPUT_TOKENS),
    ("image_cache_read", sc.GEN_AI_USAGE_IMAGE_CACHE_READ_INPUT_TOKENS),
    ("audio_cache_read", sc.GEN_AI_USAGE_AUDIO_CACHE_READ_INPUT_TOKENS),
    ("text_output", sc.GEN_AI_USAGE_TEXT_OUTPUT_TOKENS),
    ("image_output", sc.GEN_AI_USAGE_IMAGE_OUTPUT_TOKENS),
    ("audio_output", sc.GEN_AI_USAGE_AUDIO_OUTPUT_TOKENS),
)


@dataclass(frozen=True, slots=True)
class Modalities:
    """Reported token counts per modality; ``None``: not reported, or reported as 0.

    ``<m>_input`` includes ``<m>_cache_read``; ``<m>_output`` is a part of the inclusive
    output total. A reported 0 is kept as ``None`` so that spans carry only counts that say
    something (upstream: set only when the provider reports the modality) and a span
    attribute read back gives the same value.
    """

    text_input: int | None = None
    image_input: int | None = None
    audio_input: int | None = None
    text_cache_read: int | None = None
    image_cache_read: int | None = None
    audio_cache_read: int | None = None
    text_output: int | None = None
    image_output: int | None = None
    audio_output: int | None = None

    def __post_init__(self) -> None:
        for name in _FIELDS:
            value = getattr(self, name)
            if value is None or (type(value) is int and 0 < value <= MAX_TOKENS_PER_CALL):
                continue  # the usual cases, checked fast
            if check_count(name, value) == 0:
                object.__setattr__(self, name, None)
        for modality, total, cached in (
            ("text", self.text_input, self.text_cache_read),
            ("image", self.image_input, self.image_cache_read),
            ("audio", self.audio_input, self.audio_cache_read),
        ):
            if total is not None and cached is not None and cached > total:
                raise InvalidUsageError(
                    f"{modality} cache reads ({cached}) exceed the {modality} input "
                    f"({total}), which includes them"
                )

    @classmethod
    def reported(cls, **counts: int | None) -> Modalities | None:
        """The breakdown of ``counts``, or ``None`` when no modality has a non-zero count."""
        if not any(counts.values()):  # the usual text-only call: nothing to build
            return None
        return cls(**counts)  # a non-zero count: not empty

    def or_none(self) -> Modalities | None:
        """``self``, or ``None`` when it holds no count."""
        return self if any(getattr(self, name) is not None for name in _FIELDS) else None

    def input_sum(self) -> int:
        return (self.text_input or 0) + (self.image_input or 0) + (self.audio_input or 0)

    def cache_read_sum(self) -> int:
        return (
            (self.text_cache_read or 0)
            + (self.image_cache_read or 0)
            + (self.audio_cache_read or 0)
        )

    def output_sum(self) -> int:
        return (self.text_output or 0) + (self.image_output or 0) + (self.audio_output or 0)

    def __add__(self, other: object) -> Modalities:
        if not isinstance(other, Modalities):
            return NotImplemented
        # A sum keeps a count only where both parts reported it: where one did not, the
        # sum of that modality is unknown, and a partial sum would look exact.
        values: dict[str, int | None] = {}
        for name in _FIELDS:
            mine, theirs = getattr(self, name), getattr(other, name)
            values[name] = None if mine is None or theirs is None else mine + theirs
        return Modalities(**values)

    def to_attributes(self) -> dict[str, int]:
        attrs: dict[str, int] = {}
        for name, attr in ATTRIBUTES:
            value = getattr(self, name)
            if value is not None:
                attrs[attr] = value
        return attrs

    @classmethod
    def from_attributes(cls, attrs: Mapping[str, Any]) -> Modalities | None:
        counts = {
            name: attribute_int(attr, attrs[attr]) for name, attr in ATTRIBUTES if attr in attrs
        }
        return cls.reported(**counts) if counts else None


_FIELDS = tuple(f.name for f in fields(Modalities))


def with_reported(usage: TokenUsage, **counts: int | None) -> TokenUsage:
    """``usage`` with the breakdown a converter read, unless the breakdown contradicts itself
    or the totals.

    Such a breakdown cannot be right in every count, while the billable usage is checked on
    its own: the call keeps its usage (never lost over a count nobody bills) and its span
    gets no per-modality attribute (never a wrong one).
    """
    if not any(counts.values()):  # the usual text-only call
        return usage
    with contextlib.suppress(InvalidUsageError):
        usage._attach(Modalities(**counts))  # just built by the converter: nobody holds it yet
    return usage
