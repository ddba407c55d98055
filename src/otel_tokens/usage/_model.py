"""`TokenUsage`: the one canonical shape of billable usage."""

from __future__ import annotations

import operator
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from .. import semconv as sc
from . import _stability
from ._counts import InvalidUsageError, attribute_int, check_count
from ._modality import Modalities

# "estimated_heuristic": counted at four characters per token, without a tokenizer.
UsageSource = Literal["provider", "estimated", "estimated_heuristic"]


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Billable usage of one call (or a sum of calls), in disjoint buckets.

    Every field counts something the provider bills separately, and no token is in two
    fields, so the fields add up to everything billed. ``input`` is uncached input that is
    not audio or image; ``output`` is output that is not reasoning, audio or image.
    ``input_total`` and ``output_total`` give the GenAI semantic conventions' inclusive
    totals. ``modalities`` is the provider's own per-modality breakdown, when it reported
    one: not billing, overlapping, checked against the totals (see `Modalities`).
    """

    input: int = 0
    input_audio: int = 0
    input_image: int = 0
    cache_read: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    output: int = 0
    output_audio: int = 0
    output_image: int = 0
    reasoning: int = 0
    web_search_requests: int = 0
    search_units: int = 0  # Cohere rerank's billed search units
    source: UsageSource = "provider"
    # Set by with_modalities(), not by __init__: TokenUsage(**{bucket: count}) stays a call
    # with int counts only.
    modalities: Modalities | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        # All counts in one C call, then checked: this runs once per metered call or more.
        for name, value in zip(_COUNT_FIELDS, _field_counts(self), strict=True):
            if type(value) is int and value >= 0:  # the usual case, checked fast
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidUsageError(
                    f"{name} must be an int, got {type(value).__name__} {value!r}"
                )
            if value < 0:
                raise InvalidUsageError(f"{name} must not be negative, got {value}")
        if self.source not in sc.USAGE_SOURCES:
            raise InvalidUsageError(
                f"source must be one of {', '.join(map(repr, sc.USAGE_SOURCES))}, "
                f"got {self.source!r}"
            )

    def with_modalities(self, modalities: Modalities | None) -> TokenUsage:
        """This usage with the provider's per-modality breakdown (``None``: none reported)."""
        if modalities is None and self.modalities is None:
            return self  # frozen: nothing to copy
        usage = replace(self)  # with no breakdown: `modalities` is not an __init__ argument
        if modalities is not None:
            usage._attach(modalities)
        return usage

    def _attach(self, modalities: Modalities) -> None:
        """Set the breakdown of a usage just built, before anyone holds it (frozen after)."""
        self._check_modalities(modalities)
        object.__setattr__(self, "modalities", modalities.or_none())

    def _check_modalities(self, modalities: Modalities) -> None:
        if not isinstance(modalities, Modalities):
            raise InvalidUsageError(
                f"modalities must be Modalities, got {type(modalities).__name__}"
            )
        for what, part, total in (
            ("input", modalities.input_sum(), self.input_total),
            ("cache read", modalities.cache_read_sum(), self.cache_read),
            ("output", modalities.output_sum(), self.output_total),
        ):
            if part > total:
                raise InvalidUsageError(
                    f"the per-modality {what} counts add up to {part}, more than the {what} "
                    f"total ({total}) that includes them"
                )

    # --- inclusive totals, as the GenAI semantic conventions count them -----------------
    @property
    def cache_write(self) -> int:
        return self.cache_write_5m + self.cache_write_1h

    @property
    def uncached_input(self) -> int:
        return self.input + self.input_audio + self.input_image

    @property
    def input_total(self) -> int:
        """``gen_ai.usage.input_tokens``: includes cache reads and cache writes."""
        # The fields themselves, not the other properties: read several times per call.
        return (
            self.input
            + self.input_audio
            + self.input_image
            + self.cache_read
            + self.cache_write_5m
            + self.cache_write_1h
        )

    @property
    def output_total(self) -> int:
        """``gen_ai.usage.output_tokens``: includes reasoning."""
        return self.output + self.output_audio + self.output_image + self.reasoning

    @property
    def total_tokens(self) -> int:
        return self.input_total + self.output_total

    @property
    def is_estimated(self) -> bool:
        """Counted locally, with a tokenizer or at four characters per token."""
        return self.source != sc.USAGE_SOURCE_PROVIDER

    def buckets(self) -> Iterator[tuple[str, int]]:
        """Non-zero billable buckets as ``(bucket name, count)``, tokens then requests."""
        # All counts in one C call: this runs several times per metered call.
        found = [(n, v) for n, v in zip(_BUCKET_NAMES, _bucket_counts(self), strict=True) if v]
        return iter(found)

    def __add__(self, other: object) -> TokenUsage:
        if not isinstance(other, TokenUsage):
            return NotImplemented
        values = {name: getattr(self, name) + getattr(other, name) for name in _COUNT_FIELDS}
        source = _merged_source(self.source, other.source)
        modalities = None  # a breakdown only where both parts have one
        if self.modalities is not None and other.modalities is not None:
            modalities = (self.modalities + other.modalities).or_none()
        return TokenUsage(**values, source=source).with_modalities(modalities)

    def with_source(self, source: UsageSource) -> TokenUsage:
        return replace(self, source=source).with_modalities(self.modalities)

    # --- semantic-convention attributes ------------------------------------------------
    def to_attributes(self, *, latest_only: bool | None = None) -> dict[str, int | str]:
        """Span attributes: upstream inclusive totals plus our disjoint buckets.

        The disjoint buckets make the conversion lossless; ``from_attributes`` inverts it.
        Deprecated upstream names are emitted beside their replacements unless
        ``latest_only`` (default: ``OTEL_SEMCONV_STABILITY_OPT_IN`` lists
        ``gen_ai_latest_experimental``).
        """
        # The totals from the counts at once (not through the properties): once per call.
        counts = _bucket_counts(self)
        (input_, input_audio, input_image, cache_read, cache_5m, cache_1h) = counts[:6]
        (output, output_audio, output_image, reasoning) = counts[6:10]
        cache_write = cache_5m + cache_1h
        input_total = input_ + input_audio + input_image + cache_read + cache_write
        attrs: dict[str, int | str] = {
            sc.GEN_AI_USAGE_INPUT_TOKENS: input_total,
            sc.GEN_AI_USAGE_OUTPUT_TOKENS: output + output_audio + output_image + reasoning,
            sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: cache_read,
            sc.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS: cache_write,
            sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: reasoning,
            sc.BILLING_USAGE_SOURCE: self.source,
        }
        if not (_stability.latest_only() if latest_only is None else latest_only):
            attrs[sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] = cache_write
        if self.modalities is not None:
            attrs.update(self.modalities.to_attributes())
        for name, value in zip(_BUCKET_NAMES, counts, strict=True):
            if value:
                attrs[_BUCKET_ATTRIBUTES[name]] = value
        return attrs

    @classmethod
    def from_attributes(cls, attrs: Mapping[str, Any]) -> TokenUsage:
        """Rebuild usage from ``to_attributes`` output (disjoint buckets are authoritative)."""
        values: dict[str, int] = {}
        for name in (*sc.TOKEN_BUCKETS, *sc.REQUEST_BUCKETS):
            key = sc.BILLING_USAGE_PREFIX + name
            values[_BUCKET_FIELDS.get(name, name)] = attribute_int(key, attrs.get(key, 0))
        source = attrs.get(sc.BILLING_USAGE_SOURCE, sc.USAGE_SOURCE_PROVIDER)
        usage = cls(**values, source=source).with_modalities(Modalities.from_attributes(attrs))
        declared_in = attrs.get(sc.GEN_AI_USAGE_INPUT_TOKENS)
        declared_out = attrs.get(sc.GEN_AI_USAGE_OUTPUT_TOKENS)
        if (
            declared_in is not None
            and attribute_int(sc.GEN_AI_USAGE_INPUT_TOKENS, declared_in) != usage.input_total
        ):
            raise InvalidUsageError(
                f"{sc.GEN_AI_USAGE_INPUT_TOKENS}={declared_in} disagrees with the buckets "
                f"(which add up to {usage.input_total})"
            )
        if (
            declared_out is not None
            and attribute_int(sc.GEN_AI_USAGE_OUTPUT_TOKENS, declared_out) != usage.output_total
        ):
            raise InvalidUsageError(
                f"{sc.GEN_AI_USAGE_OUTPUT_TOKENS}={declared_out} disagrees with the buckets "
                f"(which add up to {usage.output_total})"
            )
        return usage

    @classmethod
    def from_inclusive(
        cls,
        *,
        input_total: int,
        output_total: int,
        cache_read: int = 0,
        cache_write_5m: int = 0,
        cache_write_1h: int = 0,
        reasoning: int = 0,
        web_search_requests: int = 0,
        source: UsageSource = "provider",
    ) -> TokenUsage:
        """Build from inclusive totals (the semantic conventions' and the CLI's form)."""
        for name, value in (
            ("input", input_total),
            ("output", output_total),
            ("cache_read", cache_read),
            ("cache_write_5m", cache_write_5m),
            ("cache_write_1h", cache_write_1h),
            ("reasoning", reasoning),
        ):
            check_count(name, value)
        cached = cache_read + cache_write_5m + cache_write_1h
        if cached > input_total:
            raise InvalidUsageError(
                f"cache reads and writes ({cached}) exceed the input total ({input_total}); "
                "input counts are inclusive of cache reads and writes"
            )
        if reasoning > output_total:
            raise InvalidUsageError(
                f"reasoning tokens ({reasoning}) exceed the output total ({output_total}); "
                "output counts are inclusive of reasoning"
            )
        return cls(
            input=input_total - cached,
            cache_read=cache_read,
            cache_write_5m=cache_write_5m,
            cache_write_1h=cache_write_1h,
            output=output_total - reasoning,
            reasoning=reasoning,
            web_search_requests=web_search_requests,
            source=source,
        )


def _merged_source(a: UsageSource, b: UsageSource) -> UsageSource:
    """The source of a sum: as uncertain as its least certain part."""
    if "estimated_heuristic" in (a, b):
        return "estimated_heuristic"
    if "estimated" in (a, b):
        return "estimated"
    return "provider"


# The billable buckets in order (tokens, then requests), and the fields that count them: the
# token buckets are named after their fields.
_BUCKET_NAMES = (*sc.TOKEN_BUCKETS, sc.BUCKET_WEB_SEARCH, sc.BUCKET_SEARCH_UNITS)
_bucket_counts = operator.attrgetter(*sc.TOKEN_BUCKETS, "web_search_requests", "search_units")
_BUCKET_ATTRIBUTES = {name: sc.BILLING_USAGE_PREFIX + name for name in _BUCKET_NAMES}
# A bucket whose TokenUsage field has another name.
_BUCKET_FIELDS = {sc.BUCKET_WEB_SEARCH: "web_search_requests"}
_COUNT_FIELDS = tuple(f.name for f in fields(TokenUsage) if f.name not in ("source", "modalities"))
_field_counts = operator.attrgetter(*_COUNT_FIELDS)
