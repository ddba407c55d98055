"""Mistral AI ``usage`` (La Plateforme's chat, FIM and embeddings responses).

OpenAI-shaped: ``prompt_tokens`` *includes* the cache reads, which newer responses report
as ``prompt_tokens_details.cached_tokens`` (older ones as ``num_cached_tokens``);
``completion_tokens`` is the whole output. ``prompt_audio_seconds`` (audio input) is billed
by the second, not by the token, and is not read here: the adapter keeps such a call
unpriced rather than price it as if its audio were free (see docs/mistral.md).
"""

from __future__ import annotations

from typing import Any

from ._counts import InvalidUsageError
from ._model import TokenUsage, UsageSource
from ._read import count, field, require_mapping_like


def from_mistral(usage: Any, *, source: UsageSource = "provider") -> TokenUsage:
    """Convert a Mistral AI ``usage`` object (or dict): cache reads split out of the prompt."""
    require_mapping_like(usage, "Mistral")
    prompt = count(usage, "prompt_tokens")
    completion = count(usage, "completion_tokens")
    if field(usage, "prompt_tokens_details", "cached_tokens") is not None:
        cached = count(usage, "prompt_tokens_details", "cached_tokens")
    else:
        cached = count(usage, "num_cached_tokens")
    if cached > prompt:
        raise InvalidUsageError(
            f"cached tokens ({cached}) exceed prompt_tokens ({prompt}), which includes them"
        )
    return TokenUsage(input=prompt - cached, cache_read=cached, output=completion, source=source)
