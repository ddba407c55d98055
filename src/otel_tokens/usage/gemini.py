"""Gemini ``usageMetadata`` (REST camelCase, or the SDK's snake_case).

``promptTokenCount`` *includes* ``cachedContentTokenCount``; ``candidatesTokenCount``
*excludes* ``thoughtsTokenCount``; ``toolUsePromptTokenCount`` is billed as input on top.
The per-modality ``promptTokensDetails`` count the whole prompt, cached part included; the
cached part's modalities are in ``cacheTokensDetails``.
"""

from __future__ import annotations

from typing import Any

from ._model import InvalidUsageError, TokenUsage, UsageSource
from ._read import count, field, require_mapping_like


def _get_count(usage: Any, camel: str, snake: str) -> int:
    return count(usage, camel) if field(usage, camel) is not None else count(usage, snake)


def _modality(usage: Any, camel: str, snake: str, modality: str) -> int:
    details = field(usage, camel)
    if details is None:
        details = field(usage, snake)
    total = 0
    for item in details or ():
        name = str(field(item, "modality") or "").rsplit(".", 1)[-1].upper()
        if name == modality:
            total += _get_count(item, "tokenCount", "token_count")
    return total


def _uncached_modality(usage: Any, modality: str) -> int:
    """Prompt tokens of ``modality`` that were not read from the cache."""
    prompt = _modality(usage, "promptTokensDetails", "prompt_tokens_details", modality)
    cached = _modality(usage, "cacheTokensDetails", "cache_tokens_details", modality)
    return max(prompt - cached, 0)


def from_gemini(usage: Any, *, source: UsageSource = "provider") -> TokenUsage:
    require_mapping_like(usage, "Gemini")
    prompt = _get_count(usage, "promptTokenCount", "prompt_token_count")
    cached = _get_count(usage, "cachedContentTokenCount", "cached_content_token_count")
    tool_prompt = _get_count(usage, "toolUsePromptTokenCount", "tool_use_prompt_token_count")
    candidates = _get_count(usage, "candidatesTokenCount", "candidates_token_count")
    thoughts = _get_count(usage, "thoughtsTokenCount", "thoughts_token_count")
    if cached > prompt:
        raise InvalidUsageError(
            f"cachedContentTokenCount ({cached}) exceeds promptTokenCount ({prompt}), "
            "which includes it"
        )
    uncached = prompt - cached
    audio_in = min(_uncached_modality(usage, "AUDIO"), uncached)
    image_in = min(_uncached_modality(usage, "IMAGE"), uncached - audio_in)
    audio_out = min(
        _modality(usage, "candidatesTokensDetails", "candidates_tokens_details", "AUDIO"),
        candidates,
    )
    image_out = min(
        _modality(usage, "candidatesTokensDetails", "candidates_tokens_details", "IMAGE"),
        candidates - audio_out,
    )
    return TokenUsage(
        input=uncached - audio_in - image_in + tool_prompt,
        input_audio=audio_in,
        input_image=image_in,
        cache_read=cached,
        output=candidates - audio_out - image_out,
        output_audio=audio_out,
        output_image=image_out,
        reasoning=thoughts,
        source=source,
    )
