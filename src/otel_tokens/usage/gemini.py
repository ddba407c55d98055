"""Gemini ``usageMetadata`` (REST camelCase, or the SDK's snake_case).

``promptTokenCount`` *includes* ``cachedContentTokenCount``; ``candidatesTokenCount``
*excludes* ``thoughtsTokenCount``; ``toolUsePromptTokenCount`` is billed as input on top.
The per-modality ``promptTokensDetails`` count the whole prompt, cached part included; the
cached part's modalities are in ``cacheTokensDetails``. The details are also the provider's
per-modality breakdown (`Modalities`), copied as reported.
"""

from __future__ import annotations

from typing import Any

from ._counts import InvalidUsageError
from ._modality import with_reported
from ._model import TokenUsage, UsageSource
from ._read import count, field, require_mapping_like


def _get_count(usage: Any, camel: str, snake: str) -> int:
    return count(usage, camel) if field(usage, camel) is not None else count(usage, snake)


def _by_modality(usage: Any, camel: str, snake: str) -> dict[str, int] | None:
    """A ``*TokensDetails`` list as ``{MODALITY: tokens}``; ``None`` when not reported."""
    details = field(usage, camel)
    if details is None:
        details = field(usage, snake)
    if details is None:
        return None
    totals: dict[str, int] = {}
    for item in details:
        name = str(field(item, "modality") or "").rsplit(".", 1)[-1].upper()
        totals[name] = totals.get(name, 0) + _get_count(item, "tokenCount", "token_count")
    return totals


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
    prompt_by = _by_modality(usage, "promptTokensDetails", "prompt_tokens_details")
    cache_by = _by_modality(usage, "cacheTokensDetails", "cache_tokens_details")
    out_by = _by_modality(usage, "candidatesTokensDetails", "candidates_tokens_details")
    tool_by = _by_modality(usage, "toolUsePromptTokensDetails", "tool_use_prompt_tokens_details")
    prompt_m, cache_m, out_m = prompt_by or {}, cache_by or {}, out_by or {}

    # Billing: the uncached prompt tokens of each modality.
    uncached = prompt - cached
    audio_in = min(max(prompt_m.get("AUDIO", 0) - cache_m.get("AUDIO", 0), 0), uncached)
    image_in = min(max(prompt_m.get("IMAGE", 0) - cache_m.get("IMAGE", 0), 0), uncached - audio_in)
    audio_out = min(out_m.get("AUDIO", 0), candidates)
    image_out = min(out_m.get("IMAGE", 0), candidates - audio_out)
    split = TokenUsage(
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
    # The input of a modality is its prompt tokens plus its tool-use prompt tokens; when a
    # part with tokens came without details, no modality's input total is known.
    inputs: dict[str, int] = {}
    if (prompt_by is not None or not prompt) and (tool_by is not None or not tool_prompt):
        inputs = dict(prompt_m)
        for name, tokens in (tool_by or {}).items():
            inputs[name] = inputs.get(name, 0) + tokens
    # VIDEO and DOCUMENT have no upstream attribute: left out.
    return with_reported(
        split,
        text_input=inputs.get("TEXT"),
        image_input=inputs.get("IMAGE"),
        audio_input=inputs.get("AUDIO"),
        text_cache_read=cache_m.get("TEXT"),
        image_cache_read=cache_m.get("IMAGE"),
        audio_cache_read=cache_m.get("AUDIO"),
        text_output=out_m.get("TEXT"),
        image_output=out_m.get("IMAGE"),
        audio_output=out_m.get("AUDIO"),
    )
