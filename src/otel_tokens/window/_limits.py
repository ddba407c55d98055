"""Context windows and output limits of models, for pre-flight and the context-window guard.

genai-prices (the pricing data) carries no context windows, so this is a small table of the
providers' published limits, matched by the longest model-name prefix. A model not in it has
an unknown window: nothing is guessed, the guard lets its requests through and pre-flight
reports ``context_window=None``. `register_context_window` adds or overrides an entry (a
self-hosted model, a newer snapshot).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ModelLimits:
    """``context_window``: input plus output tokens a request may use; ``max_output``: the
    most output tokens the model produces in one response (None: only the window bounds it)."""

    context_window: int
    max_output: int | None = None


# Providers' published limits (model pages of OpenAI, Anthropic, Google), by name prefix.
_TABLE: dict[str, ModelLimits] = {
    "gpt-3.5-turbo": ModelLimits(16_385, 4_096),
    "gpt-4": ModelLimits(8_192, 8_192),
    "gpt-4-32k": ModelLimits(32_768, 32_768),
    "gpt-4-turbo": ModelLimits(128_000, 4_096),
    "gpt-4-1106": ModelLimits(128_000, 4_096),
    "gpt-4-0125": ModelLimits(128_000, 4_096),
    "gpt-4o": ModelLimits(128_000, 16_384),
    "chatgpt-4o": ModelLimits(128_000, 16_384),
    "gpt-4.1": ModelLimits(1_047_576, 32_768),
    "gpt-4.5": ModelLimits(128_000, 16_384),
    "gpt-5": ModelLimits(400_000, 128_000),
    "o1": ModelLimits(200_000, 100_000),
    "o1-mini": ModelLimits(128_000, 65_536),
    "o3": ModelLimits(200_000, 100_000),
    "o4-mini": ModelLimits(200_000, 100_000),
    "claude-3": ModelLimits(200_000, 4_096),
    "claude-3-5": ModelLimits(200_000, 8_192),
    "claude-3-7": ModelLimits(200_000, 64_000),
    "claude-sonnet-4": ModelLimits(200_000, 64_000),
    "claude-opus-4": ModelLimits(200_000, 32_000),
    "claude-haiku-4": ModelLimits(200_000, 64_000),
    "gemini-1.5-pro": ModelLimits(2_097_152, 8_192),
    "gemini-1.5-flash": ModelLimits(1_048_576, 8_192),
    "gemini-2.0-flash": ModelLimits(1_048_576, 8_192),
    "gemini-2.5": ModelLimits(1_048_576, 65_536),
}
_lock = threading.Lock()


def register_context_window(
    model_prefix: str, context_window: int, max_output: int | None = None
) -> None:
    """Use these limits for models whose name starts with ``model_prefix``."""
    if context_window <= 0 or (max_output is not None and max_output <= 0):
        raise ValueError("context_window and max_output must be positive token counts")
    with _lock:
        _TABLE[model_prefix.lower()] = ModelLimits(context_window, max_output)


def limits_of(model: str | None) -> ModelLimits | None:
    """The limits of ``model`` (a provider prefix such as ``openai/`` or a Bedrock region
    and vendor prefix is ignored), or None when unknown."""
    name = (model or "").lower()
    for part in (name, name.rsplit("/", 1)[-1], name.rsplit(".", 1)[-1]):
        best: tuple[int, ModelLimits] | None = None
        with _lock:
            items = list(_TABLE.items())
        for prefix, limits in items:
            if part.startswith(prefix) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), limits)
        if best is not None:
            return best[1]
    return None
