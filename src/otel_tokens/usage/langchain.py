"""LangChain's ``usage_metadata`` (``UsageMetadata`` of an ``AIMessage``), whatever the
provider behind it.

``input_tokens`` is the whole prompt: it includes ``input_token_details.cache_read`` and the
cache writes, and ``output_tokens`` includes ``output_token_details.reasoning``. The cache
writes are ``cache_creation`` plus, where the integration splits them by lifetime
(langchain-anthropic), ``ephemeral_5m_input_tokens`` and ``ephemeral_1h_input_tokens``: the
split entries are *not* inside ``cache_creation``, which then holds only the writes of no
stated lifetime (the default five minutes). Audio counts are inside the totals too.
"""

from __future__ import annotations

from typing import Any

from ._counts import InvalidUsageError
from ._model import TokenUsage, UsageSource
from ._read import count, field, require_mapping_like


def from_langchain(usage: Any, *, source: UsageSource = "provider") -> TokenUsage:
    """Convert a LangChain ``usage_metadata`` mapping."""
    require_mapping_like(usage, "LangChain")
    prompt = count(usage, "input_tokens")
    completion = count(usage, "output_tokens")
    details = field(usage, "input_token_details") or {}
    read = count(details, "cache_read")
    write_5m = count(details, "cache_creation") + count(details, "ephemeral_5m_input_tokens")
    write_1h = count(details, "ephemeral_1h_input_tokens")
    audio_in = count(details, "audio")
    if read + write_5m + write_1h + audio_in > prompt:
        raise InvalidUsageError(
            f"cache reads ({read}), cache writes ({write_5m} + {write_1h}) and audio "
            f"({audio_in}) exceed input_tokens ({prompt}), which includes them"
        )
    out_details = field(usage, "output_token_details") or {}
    reasoning = count(out_details, "reasoning")
    audio_out = count(out_details, "audio")
    if reasoning + audio_out > completion:
        raise InvalidUsageError(
            f"reasoning ({reasoning}) + audio ({audio_out}) tokens exceed output_tokens "
            f"({completion}), which includes them"
        )
    return TokenUsage(
        input=prompt - read - write_5m - write_1h - audio_in,
        input_audio=audio_in,
        cache_read=read,
        cache_write_5m=write_5m,
        cache_write_1h=write_1h,
        output=completion - reasoning - audio_out,
        output_audio=audio_out,
        reasoning=reasoning,
        source=source,
    )
