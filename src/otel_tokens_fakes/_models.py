"""The model names the real APIs report: the dated snapshot of an alias, and which OpenAI
models reason."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

# Aliases and the dated snapshot the real APIs report for them.
_OPENAI_SNAPSHOTS: Final[Mapping[str, str]] = {
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4o": "gpt-4o-2024-08-06",
    "chatgpt-4o-latest": "chatgpt-4o-latest",
    "gpt-4.1": "gpt-4.1-2025-04-14",
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-nano": "gpt-4.1-nano-2025-04-14",
    "gpt-4-turbo": "gpt-4-turbo-2024-04-09",
    "gpt-4": "gpt-4-0613",
    "gpt-3.5-turbo": "gpt-3.5-turbo-0125",
    "gpt-3.5-turbo-instruct": "gpt-3.5-turbo-instruct:20230824-v2",
    "o1": "o1-2024-12-17",
    "o1-mini": "o1-mini-2024-09-12",
    "o1-preview": "o1-preview-2024-09-12",
    "o3": "o3-2025-04-16",
    "o3-mini": "o3-mini-2025-01-31",
    "o4-mini": "o4-mini-2025-04-16",
    "gpt-5": "gpt-5-2025-08-07",
    "gpt-5-mini": "gpt-5-mini-2025-08-07",
    "gpt-5-nano": "gpt-5-nano-2025-08-07",
    "gpt-5.1": "gpt-5.1-2025-11-13",
    "gpt-5.2": "gpt-5.2-2025-12-11",
    "gpt-5.2-pro": "gpt-5.2-pro-2025-12-11",
    "gpt-5.4-mini": "gpt-5.4-mini-2026-03-17",
    "gpt-5.4-nano": "gpt-5.4-nano-2026-03-17",
    "gpt-5.5": "gpt-5.5-2026-04-23",
    "text-embedding-ada-002": "text-embedding-ada-002-v2",
}


_ANTHROPIC_SNAPSHOTS: Final[Mapping[str, str]] = {
    "claude-sonnet-4-5": "claude-sonnet-4-5-20250929",
    "claude-haiku-4-5": "claude-haiku-4-5-20251001",
    "claude-opus-4-5": "claude-opus-4-5-20251101",
    "claude-opus-4-1": "claude-opus-4-1-20250805",
    "claude-opus-4-0": "claude-opus-4-20250514",
    "claude-opus-4": "claude-opus-4-20250514",
    "claude-sonnet-4-0": "claude-sonnet-4-20250514",
    "claude-sonnet-4": "claude-sonnet-4-20250514",
    "claude-3-7-sonnet-latest": "claude-3-7-sonnet-20250219",
    "claude-3-5-sonnet-latest": "claude-3-5-sonnet-20241022",
    "claude-3-5-haiku-latest": "claude-3-5-haiku-20241022",
    "claude-3-opus-latest": "claude-3-opus-20240229",
    "claude-3-haiku": "claude-3-haiku-20240307",
}


def served_model(requested: str, provider: str = "openai") -> str:
    """The model name the real API reports for ``requested`` (a dated snapshot of an alias).

    ``provider`` is ``"openai"``, ``"azure"`` or ``"anthropic"``. Names already dated, and unknown
    names, are returned unchanged.
    """
    name = requested.strip()
    if provider == "anthropic":
        return _ANTHROPIC_SNAPSHOTS.get(name, name)
    return _OPENAI_SNAPSHOTS.get(name, name)


def is_openai_reasoning_model(model: str) -> bool:
    m = model.lower()
    if "chat-latest" in m or m.startswith("gpt-5-chat"):
        return False
    return re.match(r"^(o\d|gpt-5|codex)", m) is not None
