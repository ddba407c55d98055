"""`TokenUsage`: the one canonical shape of billable usage."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

from .. import semconv as sc
from . import _stability

UsageSource = Literal["provider", "estimated"]

# A single call reporting more than this in one bucket is a bug upstream, not usage.
MAX_TOKENS_PER_CALL = 1_000_000_000


class InvalidUsageError(ValueError):
    """Raised for usage that cannot be real: negative counts, cache larger than input, ..."""


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Billable usage of one call (or a sum of calls), in disjoint buckets.

    Every field counts something the provider bills separately, and no token is in two
    fields, so the fields add up to everything billed. ``input`` is uncached input that is
    not audio or image; ``output`` is output that is not reasoning, audio or image.
    ``input_total`` and ``output_total`` give the GenAI semantic conventions' inclusive
    totals.
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
    source: UsageSource = "provider"

    def __post_init__(self) -> None:
        for name in _COUNT_FIELDS:
            value = getattr(self, name)
            if type(value) is int and value >= 0:  # the usual case, checked fast
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidUsageError(
                    f"{name} must be an int, got {type(value).__name__} {value!r}"
                )
            if value < 0:
                raise InvalidUsageError(f"{name} must not be negative, got {value}")
        if self.source not in (sc.USAGE_SOURCE_PROVIDER, sc.USAGE_SOURCE_ESTIMATED):
            raise InvalidUsageError(
                f"source must be 'provider' or 'estimated', got {self.source!r}"
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
        return self.uncached_input + self.cache_read + self.cache_write

    @property
    def output_total(self) -> int:
        """``gen_ai.usage.output_tokens``: includes reasoning."""
        return self.output + self.output_audio + self.output_image + self.reasoning

    @property
    def total_tokens(self) -> int:
        return self.input_total + self.output_total

    @property
    def is_estimated(self) -> bool:
        return self.source == sc.USAGE_SOURCE_ESTIMATED

    def buckets(self) -> Iterator[tuple[str, int]]:
        """Non-zero billable buckets as ``(bucket name, count)``, tokens then requests."""
        for name in sc.TOKEN_BUCKETS:
            value: int = getattr(self, name)
            if value:
                yield name, value
        if self.web_search_requests:
            yield sc.BUCKET_WEB_SEARCH, self.web_search_requests

    def __add__(self, other: object) -> TokenUsage:
        if not isinstance(other, TokenUsage):
            return NotImplemented
        values = {
            f.name: getattr(self, f.name) + getattr(other, f.name)
            for f in fields(self)
            if f.name != "source"
        }
        source: UsageSource = "estimated" if self.is_estimated or other.is_estimated else "provider"
        return TokenUsage(**values, source=source)

    def with_source(self, source: UsageSource) -> TokenUsage:
        return replace(self, source=source)

    # --- semantic-convention attributes ------------------------------------------------
    def to_attributes(self, *, latest_only: bool | None = None) -> dict[str, int | str]:
        """Span attributes: upstream inclusive totals plus our disjoint buckets.

        The disjoint buckets make the conversion lossless; ``from_attributes`` inverts it.
        Deprecated upstream names are emitted beside their replacements unless
        ``latest_only`` (default: ``OTEL_SEMCONV_STABILITY_OPT_IN`` lists
        ``gen_ai_latest_experimental``).
        """
        attrs: dict[str, int | str] = {
            sc.GEN_AI_USAGE_INPUT_TOKENS: self.input_total,
            sc.GEN_AI_USAGE_OUTPUT_TOKENS: self.output_total,
            sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: self.cache_read,
            sc.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS: self.cache_write,
            sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: self.reasoning,
            sc.BILLING_USAGE_SOURCE: self.source,
        }
        if not (_stability.latest_only() if latest_only is None else latest_only):
            attrs[sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] = self.cache_write
        for name, value in self.buckets():
            attrs[sc.BILLING_USAGE_PREFIX + name] = value
        return attrs

    @classmethod
    def from_attributes(cls, attrs: Mapping[str, Any]) -> TokenUsage:
        """Rebuild usage from ``to_attributes`` output (disjoint buckets are authoritative)."""
        values: dict[str, int] = {}
        for name in (*sc.TOKEN_BUCKETS, sc.BUCKET_WEB_SEARCH):
            key = sc.BILLING_USAGE_PREFIX + name
            field_name = "web_search_requests" if name == sc.BUCKET_WEB_SEARCH else name
            values[field_name] = _attribute_int(key, attrs.get(key, 0))
        source = attrs.get(sc.BILLING_USAGE_SOURCE, sc.USAGE_SOURCE_PROVIDER)
        usage = cls(**values, source=source)
        declared_in = attrs.get(sc.GEN_AI_USAGE_INPUT_TOKENS)
        declared_out = attrs.get(sc.GEN_AI_USAGE_OUTPUT_TOKENS)
        if (
            declared_in is not None
            and _attribute_int(sc.GEN_AI_USAGE_INPUT_TOKENS, declared_in) != usage.input_total
        ):
            raise InvalidUsageError(
                f"{sc.GEN_AI_USAGE_INPUT_TOKENS}={declared_in} disagrees with the buckets "
                f"(which add up to {usage.input_total})"
            )
        if (
            declared_out is not None
            and _attribute_int(sc.GEN_AI_USAGE_OUTPUT_TOKENS, declared_out) != usage.output_total
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
            _check_count(name, value)
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


_COUNT_FIELDS = tuple(f.name for f in fields(TokenUsage) if f.name != "source")


def _check_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidUsageError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < 0:
        raise InvalidUsageError(f"{name} must not be negative, got {value}")
    if value > MAX_TOKENS_PER_CALL:
        raise InvalidUsageError(
            f"{name}={value} is more than any single call can use ({MAX_TOKENS_PER_CALL})"
        )
    return value


def _attribute_int(key: str, raw: object) -> int:
    """An int attribute value; OTLP/JSON sends int64 as a string. Never truncates."""
    if isinstance(raw, str) and raw.strip().isdigit():
        return int(raw)
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise InvalidUsageError(f"{key} must be a whole number, got {raw!r}")
    return raw
