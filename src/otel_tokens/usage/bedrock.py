"""Amazon Bedrock usage shapes (bedrock-runtime).

* Converse (and ConverseStream's ``metadata`` event): ``usage`` with ``inputTokens``
  (*uncached* input only), ``outputTokens``, ``cacheReadInputTokens``,
  ``cacheWriteInputTokens`` and ``cacheDetails``, the cache writes split by TTL
  (``[{"ttl": "5m"|"1h", "inputTokens": n}]``). ``totalTokens`` is the sum of all four.
* InvokeModel bodies, each model family in its own format: Anthropic Messages (the
  ``usage`` of `from_anthropic`), Amazon Nova (``usage`` with ``inputTokens``,
  ``outputTokens``, ``cacheReadInputTokenCount``, ``cacheWriteInputTokenCount``) and
  Meta Llama (``prompt_token_count``, ``generation_token_count`` at the top level).
* The ``x-amzn-bedrock-*-token-count`` response headers, sent for every InvokeModel call:
  the usage of a body that reports none.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._counts import InvalidUsageError
from ._model import TokenUsage, UsageSource
from ._read import count, field, require_mapping_like

INPUT_HEADER = "x-amzn-bedrock-input-token-count"
OUTPUT_HEADER = "x-amzn-bedrock-output-token-count"
CACHE_READ_HEADER = "x-amzn-bedrock-cache-read-input-token-count"
CACHE_WRITE_HEADER = "x-amzn-bedrock-cache-write-input-token-count"


def _split_writes(total: int, details: Any) -> tuple[int, int]:
    """(5m, 1h) cache writes of ``total``, by Converse's ``cacheDetails`` list."""
    if details is None:
        return total, 0  # no split reported: the default TTL is 5 minutes
    if not isinstance(details, list):
        raise InvalidUsageError(f"cacheDetails must be a list, got {type(details).__name__}")
    by_ttl = {"5m": 0, "1h": 0}
    for detail in details:
        ttl = field(detail, "ttl")
        if ttl not in by_ttl:
            # A lifetime we have no price bucket for: a guess would price it silently wrong.
            raise InvalidUsageError(f"cacheDetails ttl {ttl!r} is not 5m or 1h")
        by_ttl[ttl] += count(detail, "inputTokens")
    split = by_ttl["5m"] + by_ttl["1h"]
    if split > total:
        raise InvalidUsageError(
            f"cacheDetails ({by_ttl['5m']} + {by_ttl['1h']}) exceed cacheWriteInputTokens ({total})"
        )
    # A split short of the total: the rest has the default TTL (5 minutes).
    return by_ttl["5m"] + (total - split), by_ttl["1h"]


def from_bedrock_converse(usage: Any, *, source: UsageSource = "provider") -> TokenUsage:
    """Converse / ConverseStream ``usage`` (boto3's parsed dict, or the JSON)."""
    require_mapping_like(usage, "Bedrock Converse")
    write_5m, write_1h = _split_writes(
        count(usage, "cacheWriteInputTokens"), field(usage, "cacheDetails")
    )
    return TokenUsage(
        input=count(usage, "inputTokens"),
        cache_read=count(usage, "cacheReadInputTokens"),
        cache_write_5m=write_5m,
        cache_write_1h=write_1h,
        output=count(usage, "outputTokens"),
        source=source,
    )


def from_bedrock_nova(usage: Any, *, source: UsageSource = "provider") -> TokenUsage:
    """An Amazon Nova InvokeModel body's ``usage``: ``inputTokens`` is uncached input, as in
    Converse; cache writes have the default 5 minute TTL (Nova has no other)."""
    require_mapping_like(usage, "Amazon Nova")
    return TokenUsage(
        input=count(usage, "inputTokens"),
        cache_read=count(usage, "cacheReadInputTokenCount"),
        cache_write_5m=count(usage, "cacheWriteInputTokenCount"),
        output=count(usage, "outputTokens"),
        source=source,
    )


def from_bedrock_llama(body: Any, *, source: UsageSource = "provider") -> TokenUsage:
    """A Meta Llama InvokeModel body: its counts are top-level fields."""
    require_mapping_like(body, "Meta Llama")
    return TokenUsage(
        input=count(body, "prompt_token_count"),
        output=count(body, "generation_token_count"),
        source=source,
    )


def from_bedrock_headers(
    headers: Mapping[str, Any], *, source: UsageSource = "provider"
) -> TokenUsage | None:
    """The token-count headers of an InvokeModel response (names in lower case, as
    botocore keeps them); ``None`` when the response has none. The input count is uncached
    input: cache reads and writes come in their own headers."""
    if INPUT_HEADER not in headers and OUTPUT_HEADER not in headers:
        return None
    return TokenUsage(
        input=count(headers, INPUT_HEADER),
        cache_read=count(headers, CACHE_READ_HEADER),
        cache_write_5m=count(headers, CACHE_WRITE_HEADER),
        output=count(headers, OUTPUT_HEADER),
        source=source,
    )
