"""LiteLLM's usage: the OpenAI Chat Completions shape, whatever the provider behind it.

LiteLLM maps every provider's usage onto ``prompt_tokens`` / ``completion_tokens``, both
inclusive as OpenAI's are: ``prompt_tokens`` includes the cache reads
(``prompt_tokens_details.cached_tokens``, also top-level ``cache_read_input_tokens``) and the
cache writes (``prompt_tokens_details.cache_write_tokens`` or ``cache_creation_tokens``, also
top-level ``cache_creation_input_tokens``, with a TTL breakdown in
``prompt_tokens_details.cache_creation_token_details``); ``completion_tokens`` includes
``completion_tokens_details.reasoning_tokens``. An Anthropic call whose ``input_tokens`` was
8 with 3 tokens read and 2 written is ``prompt_tokens`` 13 here.

Counts that contradict that (reads and writes above ``prompt_tokens``) are an
`InvalidUsageError`, never a guess.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ._counts import InvalidUsageError
from ._model import TokenUsage, UsageSource
from ._read import count, field, reported, require_mapping_like
from .openai import from_openai_chat


def from_litellm(usage: Any, *, source: UsageSource = "provider") -> TokenUsage:
    """Convert a LiteLLM ``Usage`` (of a completion, a stream's last chunk or an embedding),
    or its dict."""
    require_mapping_like(usage, "LiteLLM")
    details = field(usage, "prompt_tokens_details")
    read = reported(details, "cached_tokens") if details is not None else None
    if read is None:
        read = count(usage, "cache_read_input_tokens")
    written = _cache_writes(usage, details)
    prompt = count(usage, "prompt_tokens")
    if read + written > prompt:
        raise InvalidUsageError(
            f"cache reads ({read}) + cache writes ({written}) exceed prompt_tokens ({prompt}), "
            "which includes them"
        )
    # The OpenAI converter reads the details' cached_tokens and cache_write_tokens; LiteLLM
    # may report them only top-level or under other names, so they are given explicitly.
    converted = from_openai_chat(
        {
            "prompt_tokens": prompt,
            "completion_tokens": count(usage, "completion_tokens"),
            "prompt_tokens_details": {
                "cached_tokens": read,
                "cache_write_tokens": written,
                "audio_tokens": count(details, "audio_tokens") if details is not None else 0,
                "image_tokens": count(details, "image_tokens") if details is not None else 0,
            },
            "completion_tokens_details": _completion_details(usage),
        },
        source=source,
    )
    long = _long_writes(details)
    if long > written:
        raise InvalidUsageError(
            f"1-hour cache writes ({long}) exceed the cache writes ({written}), which include them"
        )
    if long:
        converted = replace(converted, cache_write_5m=written - long, cache_write_1h=long)
    return converted


def _cache_writes(usage: Any, details: Any) -> int:
    if details is not None:
        for name in ("cache_write_tokens", "cache_creation_tokens"):
            value = reported(details, name)
            if value is not None:
                return value
    return count(usage, "cache_creation_input_tokens")


def _long_writes(details: Any) -> int:
    """Writes with a one-hour lifetime (Anthropic's extended cache), billed above the 5m rate."""
    if details is None:
        return 0
    breakdown = field(details, "cache_creation_token_details")
    if breakdown is None:
        return 0
    return count(breakdown, "ephemeral_1h_input_tokens")


def _completion_details(usage: Any) -> dict[str, int]:
    details = field(usage, "completion_tokens_details")
    if details is None:
        return {}
    return {
        name: count(details, name) for name in ("reasoning_tokens", "audio_tokens", "image_tokens")
    }
