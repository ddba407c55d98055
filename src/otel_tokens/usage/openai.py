"""OpenAI usage shapes: Chat Completions (also legacy completions, embeddings) and Responses.

The known trap: ``prompt_tokens`` / ``input_tokens`` *include* ``cached_tokens`` (cache reads)
and ``cache_write_tokens`` (cache writes, billed above the input rate by the models that
charge for them), and ``completion_tokens`` / ``output_tokens`` *include* reasoning and audio
tokens. The modality counts (``audio_tokens``, ``image_tokens``) may overlap the cached ones.
"""

from __future__ import annotations

from typing import Any

from ._model import InvalidUsageError, TokenUsage, UsageSource
from ._read import count, require_mapping_like


def from_openai_chat(usage: Any, *, source: UsageSource = "provider") -> TokenUsage:
    """Convert a Chat Completions ``usage`` object (or dict).

    Also right for legacy completions and embeddings, which report ``prompt_tokens`` only.
    """
    require_mapping_like(usage, "OpenAI chat")
    prompt = count(usage, "prompt_tokens")
    completion = count(usage, "completion_tokens")
    cached = count(usage, "prompt_tokens_details", "cached_tokens")
    cache_write = count(usage, "prompt_tokens_details", "cache_write_tokens")
    audio_in = count(usage, "prompt_tokens_details", "audio_tokens")
    image_in = count(usage, "prompt_tokens_details", "image_tokens")
    reasoning = count(usage, "completion_tokens_details", "reasoning_tokens")
    audio_out = count(usage, "completion_tokens_details", "audio_tokens")
    image_out = count(usage, "completion_tokens_details", "image_tokens")
    return _split(
        "prompt_tokens",
        prompt,
        cached,
        cache_write,
        audio_in,
        image_in,
        "completion_tokens",
        completion,
        reasoning,
        audio_out,
        image_out,
        source,
    )


def from_openai_responses(usage: Any, *, source: UsageSource = "provider") -> TokenUsage:
    """Convert a Responses API ``usage`` object (or dict)."""
    require_mapping_like(usage, "OpenAI responses")
    return _split(
        "input_tokens",
        count(usage, "input_tokens"),
        count(usage, "input_tokens_details", "cached_tokens"),
        count(usage, "input_tokens_details", "cache_write_tokens"),
        count(usage, "input_tokens_details", "audio_tokens"),
        count(usage, "input_tokens_details", "image_tokens"),
        "output_tokens",
        count(usage, "output_tokens"),
        count(usage, "output_tokens_details", "reasoning_tokens"),
        count(usage, "output_tokens_details", "audio_tokens"),
        count(usage, "output_tokens_details", "image_tokens"),
        source,
    )


def _split(
    in_name: str,
    prompt: int,
    cached: int,
    cache_write: int,
    audio_in: int,
    image_in: int,
    out_name: str,
    completion: int,
    reasoning: int,
    audio_out: int,
    image_out: int,
    source: UsageSource,
) -> TokenUsage:
    if cached + cache_write > prompt:
        raise InvalidUsageError(
            f"cached ({cached}) + cache write ({cache_write}) tokens exceed "
            f"{in_name} ({prompt}), which includes them"
        )
    if audio_in + image_in > prompt:
        raise InvalidUsageError(
            f"audio ({audio_in}) + image ({image_in}) tokens exceed "
            f"{in_name} ({prompt}), which includes them"
        )
    if reasoning + audio_out + image_out > completion:
        raise InvalidUsageError(
            f"reasoning ({reasoning}) + audio ({audio_out}) + image ({image_out}) tokens exceed "
            f"{out_name} ({completion}), which includes them"
        )
    # OpenAI does not say which modality the cached tokens were; cache is priced as cache
    # whatever its modality, so modality is carved only out of the uncached remainder.
    # OpenAI's cache writes (30-minute or extended retention) have one rate in genai-prices
    # (``cache_write_mtok``), which the short-TTL bucket takes.
    uncached = prompt - cached - cache_write
    audio_in = min(audio_in, uncached)
    image_in = min(image_in, uncached - audio_in)
    return TokenUsage(
        input=uncached - audio_in - image_in,
        input_audio=audio_in,
        input_image=image_in,
        cache_read=cached,
        cache_write_5m=cache_write,
        output=completion - reasoning - audio_out - image_out,
        output_audio=audio_out,
        output_image=image_out,
        reasoning=reasoning,
        source=source,
    )
