"""Deterministic prompt token estimates shared by the OpenAI and Anthropic wire formats:
one token per four characters, a fixed count per image."""

from __future__ import annotations

import json
from typing import Any, Final

OPENAI_IMAGE_TOKENS: Final = 85


ANTHROPIC_IMAGE_TOKENS: Final = 1600


def estimate_tokens(text: str) -> int:
    """Deterministic token estimate of ``text``: one token per 4 characters, rounded up."""
    return (len(text) + 3) // 4


def part_tokens(part: Any, image_tokens: int) -> int:
    if isinstance(part, str):
        return estimate_tokens(part)
    if not isinstance(part, dict):
        return estimate_tokens(json.dumps(part, sort_keys=True))
    ptype = str(part.get("type", ""))
    if "image" in ptype:
        return image_tokens
    for key in ("text", "thinking", "refusal"):
        value = part.get(key)
        if isinstance(value, str):
            return estimate_tokens(value)
    if ptype in {"tool_use", "server_tool_use"}:
        return estimate_tokens(str(part.get("name", ""))) + estimate_tokens(
            json.dumps(part.get("input", {}), sort_keys=True, separators=(",", ":"))
        )
    if "content" in part:
        return content_tokens(part["content"], image_tokens)
    return estimate_tokens(json.dumps(part, sort_keys=True, separators=(",", ":")))


def content_tokens(content: Any, image_tokens: int) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return estimate_tokens(content)
    if isinstance(content, list):
        return sum(part_tokens(p, image_tokens) for p in content)
    return part_tokens(content, image_tokens)


def tools_tokens(tools: Any) -> int:
    if not tools:
        return 0
    return estimate_tokens(json.dumps(tools, sort_keys=True, separators=(",", ":")))


def text_inputs(value: Any) -> list[Any]:
    """Normalise a ``prompt``/``input`` of completions or embeddings into a list of inputs."""
    if value is None:
        return [""]
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        if value and all(isinstance(v, int) for v in value):
            return [value]
        return list(value) or [""]
    return [str(value)]


def text_input_tokens(item: Any) -> int:
    if isinstance(item, list):
        return len(item)
    return estimate_tokens(str(item))
