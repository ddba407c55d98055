"""Ollama's native API counts (``/api/chat``, ``/api/generate``, ``/api/embed``).

The counts are top-level fields of the response (of a stream's final ``done`` chunk):
``prompt_eval_count`` is the whole prompt, and *includes* ``prompt_eval_cached_count`` (the
prompt tokens served from the KV cache, reported by Ollama releases from late 2026, ollama
PR #17943); ``eval_count`` is every generated token, thinking included (Ollama reports no
split). Embeddings report ``prompt_eval_count`` only.

Older servers omit ``prompt_eval_count`` when the prompt was cached (ollama issues #2068,
#3427): that is not a prompt of 0 tokens, and `from_ollama` refuses it (`has_prompt_count`
lets the adapter count the prompt itself instead).
"""

from __future__ import annotations

from typing import Any

from ._counts import InvalidUsageError
from ._model import TokenUsage, UsageSource
from ._read import count, field, require_mapping_like


def has_prompt_count(response: Any) -> bool:
    """The response reports its prompt's tokens (old servers omit it for a cached prompt)."""
    return field(response, "prompt_eval_count") is not None


def from_ollama(response: Any, *, source: UsageSource = "provider") -> TokenUsage:
    """Convert an Ollama response (decoded JSON or the ``ollama`` library's model) holding
    ``prompt_eval_count`` and ``eval_count``."""
    require_mapping_like(response, "Ollama")
    if not has_prompt_count(response):
        raise InvalidUsageError(
            "prompt_eval_count is missing (an Ollama server omits it for a cached prompt): "
            "the prompt's tokens are unknown, not 0"
        )
    prompt = count(response, "prompt_eval_count")
    cached = count(response, "prompt_eval_cached_count")
    if cached > prompt:
        raise InvalidUsageError(
            f"prompt_eval_cached_count ({cached}) exceeds prompt_eval_count ({prompt}), "
            "which includes it"
        )
    return TokenUsage(
        input=prompt - cached,
        cache_read=cached,
        output=count(response, "eval_count"),
        source=source,
    )
