"""Per-message token counts, remembered: a multi-turn conversation is re-counted every turn,
and only its new messages are tokenized.

Keyed by a digest of the message's content (and the tokenizer), not by the message object:
the conversation is usually rebuilt as new dicts each turn. The digest (blake2b, 16 bytes)
costs microseconds where tokenizing costs milliseconds, and keeps no message text alive.
Bounded (least recently used out first), thread-safe.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

_DEFAULT_SIZE = 4096
_PLAIN = frozenset(("role", "name", "content"))


def _canonical(value: Any) -> Any:
    return str(value)


def message_key(tokenizer: str, message: Mapping[str, Any]) -> bytes:
    """The cache key of ``message`` counted by ``tokenizer``."""
    digest = hashlib.blake2b(tokenizer.encode(), digest_size=16)
    content = message.get("content")
    if isinstance(content, str) and all(k in _PLAIN for k in message):
        # The common case (role, optional name, text) without a json round.
        for key in ("role", "name"):
            value = message.get(key)
            digest.update(b"\x00" + (value.encode() if isinstance(value, str) else b"-"))
        digest.update(b"\x01" + content.encode("utf-8", "surrogatepass"))
    else:
        digest.update(b"\x02")
        digest.update(json.dumps(message, sort_keys=True, default=_canonical).encode())
    return digest.digest()


class MessageCountCache:
    """An LRU of (tokens, exact) per message digest."""

    def __init__(self, maxsize: int = _DEFAULT_SIZE) -> None:
        if maxsize <= 0:
            raise ValueError("maxsize must be positive")
        self.maxsize = maxsize
        self._entries: OrderedDict[bytes, tuple[int, bool]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get_or_count(self, key: bytes, count: Callable[[], tuple[int, bool]]) -> tuple[int, bool]:
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return found
            self.misses += 1
        value = count()  # outside the lock: tokenizing is the slow part
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.hits = self.misses = 0


default_cache = MessageCountCache()
