"""OpenAI usage shapes: Chat Completions (also legacy completions, embeddings) and Responses.

The known trap: ``prompt_tokens`` / ``input_tokens`` *include* ``cached_tokens`` (cache reads)
and ``cache_write_tokens`` (cache writes, billed above the input rate by the models that
charge for them), and ``completion_tokens`` / ``output_tokens`` *include* reasoning and audio
tokens. The modality counts (``audio_tokens``, ``image_tokens``) may overlap the cached ones.
They, and ``text_tokens`` where a model reports it, are also the provider's per-modality
breakdown (`Modalities`), copied as reported.
"""

from __future__ import annotations

from typing import Any

from ._counts import InvalidUsageError
from ._modality import with_reported
from ._model import TokenUsage, UsageSource
from ._read import count, field, reported, require_mapping_like


def from_openai_chat(usage: Any, *, source: UsageSource = "provider") -> TokenUsage:
    """Convert a Chat Completions ``usage`` object (or dict).

    Also right for legacy completions and embeddings, which report ``prompt_tokens`` only.
    """
    require_mapping_like(usage, "OpenAI chat")
    return _convert(usage, "prompt_tokens", "completion_tokens", source)


def from_openai_responses(usage: Any, *, source: UsageSource = "provider") -> TokenUsage:
    """Convert a Responses API ``usage`` object (or dict)."""
    require_mapping_like(usage, "OpenAI responses")
    return _convert(usage, "input_tokens", "output_tokens", source)


def _convert(usage: Any, in_name: str, out_name: str, source: UsageSource) -> TokenUsage:
    """Both shapes: ``<in_name>`` with ``<in_name>_details``, the same for the output."""
    in_details, out_details = f"{in_name}_details", f"{out_name}_details"
    # Each details object is looked up once (a call reads six counts out of each).
    ins, outs = field(usage, in_details), field(usage, out_details)
    audio_in = reported(ins, "audio_tokens", within=in_details)
    image_in = reported(ins, "image_tokens", within=in_details)
    audio_out = reported(outs, "audio_tokens", within=out_details)
    image_out = reported(outs, "image_tokens", within=out_details)
    split = _split(
        in_name,
        count(usage, in_name),
        count(ins, "cached_tokens", within=in_details),
        count(ins, "cache_write_tokens", within=in_details),
        audio_in or 0,
        image_in or 0,
        out_name,
        count(usage, out_name),
        count(outs, "reasoning_tokens", within=out_details),
        audio_out or 0,
        image_out or 0,
        source,
    )
    # OpenAI reports no per-modality cache reads in these shapes; its modality counts
    # include the cached tokens, as upstream's <modality>.input_tokens do.
    return with_reported(
        split,
        text_input=reported(ins, "text_tokens", within=in_details),
        image_input=image_in,
        audio_input=audio_in,
        text_output=reported(outs, "text_tokens", within=out_details),
        image_output=image_out,
        audio_output=audio_out,
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
