"""Anthropic Messages usage.

The known trap: ``input_tokens`` *excludes* cache reads and cache writes, which come as
``cache_read_input_tokens`` and ``cache_creation_input_tokens`` (with a 5m/1h breakdown in
``cache_creation``). Thinking tokens are inside ``output_tokens``; newer responses also report
them apart in ``output_tokens_details.thinking_tokens``, which makes them the reasoning bucket
(billed at the output rate either way).
"""

from __future__ import annotations

from typing import Any

from ._counts import InvalidUsageError
from ._model import TokenUsage, UsageSource
from ._read import count, field, require_mapping_like


def from_anthropic(usage: Any, *, source: UsageSource = "provider") -> TokenUsage:
    """Convert a Messages API ``usage`` object (or dict), streamed or not."""
    require_mapping_like(usage, "Anthropic")
    creation_total = count(usage, "cache_creation_input_tokens")
    breakdown = field(usage, "cache_creation")
    if breakdown is not None:
        write_5m = count(breakdown, "ephemeral_5m_input_tokens")
        write_1h = count(breakdown, "ephemeral_1h_input_tokens")
        if write_5m + write_1h != creation_total:
            if write_5m + write_1h > creation_total and creation_total:
                raise InvalidUsageError(
                    f"cache_creation breakdown ({write_5m} + {write_1h}) exceeds "
                    f"cache_creation_input_tokens ({creation_total})"
                )
            # A breakdown short of the total: the rest has the default TTL (5 minutes).
            write_5m += max(creation_total - write_5m - write_1h, 0)
    else:
        write_5m, write_1h = creation_total, 0  # no breakdown: the default TTL is 5 minutes
    output = count(usage, "output_tokens")
    thinking = count(usage, "output_tokens_details", "thinking_tokens")
    if thinking > output:
        raise InvalidUsageError(
            f"output_tokens_details.thinking_tokens ({thinking}) exceeds output_tokens "
            f"({output}), which includes it"
        )
    return TokenUsage(
        input=count(usage, "input_tokens"),
        cache_read=count(usage, "cache_read_input_tokens"),
        cache_write_5m=write_5m,
        cache_write_1h=write_1h,
        output=output - thinking,
        reasoning=thinking,
        web_search_requests=count(usage, "server_tool_use", "web_search_requests"),
        source=source,
    )
