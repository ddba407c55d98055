"""OpenAI's input tokens of a request, counted locally as OpenAI counts them.

Messages: OpenAI's cookbook framing ("How to count tokens with tiktoken"): each message costs
``tokens_per_message`` (3; 4 for gpt-3.5-turbo-0301) plus the tokens of each of its string
fields, a ``name`` one more token (one fewer for gpt-3.5-turbo-0301), and every reply is primed
with 3 tokens. That is exact for text messages.

Tools: the cookbook's count of function definitions (an approximation OpenAI publishes, not
its exact serialisation): marked estimated. Images: OpenAI's tile formula (85 tokens at
detail low; at high, the image scaled to fit 2048x2048 and its short side to 768, then 170 per
512-pixel tile plus 85; gpt-4o-mini 2833 and 5667), exact when the image's size is known (a
``data:`` URL's PNG, GIF or JPEG header, or ``image_sizes``), else the worst case of a
2048x768 image, estimated.
"""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ._cache import MessageCountCache, message_key

Size = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Framing:
    """How a model family frames chat messages and prices images (in tokens)."""

    tokens_per_message: int = 3
    tokens_per_name: int = 1
    reply_priming: int = 3
    image_base: int = 85
    image_tile: int = 170
    # Models that bill images by 32-pixel patches (gpt-4.1-mini/nano, o4-mini): the
    # multiplier of their patch count; counted as an estimate (OpenAI's resizing to at most
    # 1536 patches is approximated).
    image_patch_multiplier: float | None = None
    func_init: int = 7  # the cookbook's tool-definition constants (gpt-4o and later)

    @property
    def tag(self) -> str:
        return ",".join(
            str(n)
            for n in (
                self.tokens_per_message,
                self.tokens_per_name,
                self.image_base,
                self.image_tile,
                self.image_patch_multiplier,
            )
        )


_DEFAULT = Framing()


# OpenAI's image token rates per model family ("Images and vision", calculating costs):
# (base, per tile) for the tile formula, or the patch multiplier.
_IMAGE_TILES = {
    "gpt-4o-mini": (2833, 5667),
    "o1": (75, 150),
    "o3": (75, 150),
    "gpt-5": (70, 140),
}
_IMAGE_PATCHES = {"gpt-4.1-mini": 1.62, "gpt-4.1-nano": 2.46, "o4-mini": 1.72}


def framing_for(model: str) -> Framing:
    name = model.lower().rsplit("/", 1)[-1]
    if name.startswith("gpt-3.5-turbo-0301"):
        return Framing(tokens_per_message=4, tokens_per_name=-1, func_init=10)
    for prefix, multiplier in _IMAGE_PATCHES.items():
        if name.startswith(prefix):
            return Framing(image_patch_multiplier=multiplier)
    for prefix, (base, tile) in _IMAGE_TILES.items():
        if name.startswith(prefix):
            return Framing(image_base=base, image_tile=tile)
    if name.startswith(("gpt-3.5", "gpt-4-", "gpt-4")) and not name.startswith(
        ("gpt-4o", "gpt-4.")
    ):
        return Framing(func_init=10)
    return _DEFAULT


# --- images --------------------------------------------------------------------------------
def image_size(url: str) -> Size | None:
    """Width and height from a ``data:`` URL's PNG, GIF or JPEG header; None otherwise."""
    if not url.startswith("data:") or ";base64," not in url:
        return None
    try:
        head = base64.b64decode(url.split(";base64,", 1)[1][:65536], validate=False)
    except (ValueError, TypeError):
        return None
    return _size_of(head)


def _size_of(data: bytes) -> Size | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])
        return int(w), int(h)
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        w, h = struct.unpack("<HH", data[6:10])
        return int(w), int(h)
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                return None
            marker = data[i + 1]
            length = struct.unpack(">H", data[i + 2 : i + 4])[0]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                h, w = struct.unpack(">HH", data[i + 5 : i + 9])
                return int(w), int(h)
            i += 2 + length
    return None


def image_tokens(size: Size | None, detail: str, framing: Framing) -> tuple[int, bool]:
    """(tokens, exact) of one image."""
    if framing.image_patch_multiplier is not None:
        pw, ph = size if size is not None else (2048, 2048)
        patches = min(math.ceil(pw / 32) * math.ceil(ph / 32), 1536)
        return math.ceil(patches * framing.image_patch_multiplier), False
    if detail == "low":
        return framing.image_base, True
    exact = size is not None and detail == "high"  # "auto" lets OpenAI choose: worst case
    w, h = (float(n) for n in (size if size is not None else (2048, 768)))
    if max(w, h) > 2048:
        scale = 2048 / max(w, h)
        w, h = w * scale, h * scale
    if min(w, h) > 768:
        scale = 768 / min(w, h)
        w, h = w * scale, h * scale
    tiles = math.ceil(w / 512) * math.ceil(h / 512)
    return framing.image_base + framing.image_tile * tiles, exact


# --- messages ------------------------------------------------------------------------------
Encode = Callable[[str], int]


def _part_tokens(
    part: Any, count: Encode, framing: Framing, sizes: Mapping[str, Size] | None
) -> tuple[int, bool]:
    if isinstance(part, str):
        return count(part), True
    if not isinstance(part, Mapping):
        return count(str(part)), False
    kind = part.get("type")
    if kind in ("text", "input_text", "output_text") and isinstance(part.get("text"), str):
        return count(part["text"]), True
    if kind in ("image_url", "input_image"):
        image = part.get("image_url")
        detail = part.get("detail", "auto")
        if isinstance(image, Mapping):
            detail = image.get("detail", detail)
            image = image.get("url")
        url = image if isinstance(image, str) else ""
        size = (sizes or {}).get(url) or image_size(url)
        return image_tokens(size, str(detail or "auto"), framing)
    return count(str(part)), False  # audio, files: not counted exactly here


def message_tokens(
    message: Mapping[str, Any],
    count: Encode,
    framing: Framing,
    sizes: Mapping[str, Size] | None = None,
) -> tuple[int, bool]:
    """(tokens, exact) of one chat message, its framing included."""
    total, exact = framing.tokens_per_message, True
    for key, value in message.items():
        if key == "name":
            total += framing.tokens_per_name
        if value is None:
            continue
        if isinstance(value, str):
            total += count(value)
        elif key == "content" and isinstance(value, list):
            for part in value:
                n, ok = _part_tokens(part, count, framing, sizes)
                total += n
                exact = exact and ok
        else:  # tool_calls, function_call, audio: their JSON text, a close estimate
            total += count(json.dumps(value, separators=(",", ":"), default=str))
            exact = False
    return total, exact


def messages_tokens(
    messages: Iterable[Mapping[str, Any]],
    count: Encode,
    framing: Framing,
    tokenizer: str,
    cache: MessageCountCache | None,
    sizes: Mapping[str, Size] | None = None,
) -> tuple[int, bool]:
    """(tokens, exact) of a chat request's messages, reply priming included; each message
    counted once per ``cache``."""
    total, exact = framing.reply_priming, True
    tag = f"{tokenizer}|{framing.tag}"
    for message in messages:
        if not isinstance(message, Mapping):
            raise TypeError(f"a message must be a mapping, not {type(message).__name__}")
        if cache is None or (sizes and isinstance(message.get("content"), list)):
            n, ok = message_tokens(message, count, framing, sizes)
        else:
            n, ok = cache.get_or_count(
                message_key(tag, message),
                lambda m=message: message_tokens(m, count, framing, sizes),  # type: ignore[misc]
            )
        total += n
        exact = exact and ok
    return total, exact


# --- tools ---------------------------------------------------------------------------------
def tools_tokens(tools: Iterable[Any], count: Encode, framing: Framing) -> int:
    """Tokens of function definitions, by the cookbook's ``num_tokens_for_tools``."""
    prop_init, prop_key, enum_init, enum_item, func_end = 3, 3, -3, 3, 12
    total, any_function = 0, False
    for tool in tools:
        if not isinstance(tool, Mapping):
            raise TypeError(f"a tool must be a mapping, not {type(tool).__name__}")
        function = tool.get("function", tool)
        if not isinstance(function, Mapping):
            continue
        any_function = True
        total += framing.func_init
        desc = str(function.get("description") or "").removesuffix(".")
        total += count(f"{function.get('name', '')}:{desc}")
        params = function.get("parameters")
        properties = params.get("properties") if isinstance(params, Mapping) else None
        if isinstance(properties, Mapping) and properties:
            total += prop_init
            for key, found in properties.items():
                total += prop_key
                spec = found if isinstance(found, Mapping) else {}
                enum = spec.get("enum")
                if isinstance(enum, list):
                    total += enum_init
                    for item in enum:
                        total += enum_item + count(str(item))
                p_desc = str(spec.get("description") or "").removesuffix(".")
                total += count(f"{key}:{spec.get('type', '')}:{p_desc}")
    return total + func_end if any_function else 0
