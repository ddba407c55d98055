"""Identifiers in the providers' formats, deterministic per seed."""

from __future__ import annotations

import hashlib
import threading
import uuid
from typing import Final

_BASE62: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


class Ids:
    """Deterministic identifiers in the providers' formats (a counter hashed with a seed)."""

    def __init__(self, seed: str) -> None:
        self._seed = seed
        self._counter = 0
        self._lock = threading.Lock()

    def _digest(self, kind: str) -> bytes:
        with self._lock:
            self._counter += 1
            n = self._counter
        return hashlib.sha256(f"{self._seed}:{kind}:{n}".encode()).digest()

    def hex(self, kind: str, length: int) -> str:
        out = ""
        while len(out) < length:
            out += self._digest(kind).hex()
        return out[:length]

    def b62(self, kind: str, length: int) -> str:
        digest = self._digest(kind) + self._digest(kind)
        value = int.from_bytes(digest, "big")
        chars = []
        for _ in range(length):
            value, rem = divmod(value, 62)
            chars.append(_BASE62[rem])
        return "".join(chars)

    def uuid(self, kind: str) -> str:
        return str(uuid.UUID(bytes=self._digest(kind)[:16], version=4))

    # Provider formats
    def chatcmpl(self) -> str:
        return "chatcmpl-" + self.b62("chatcmpl", 29)

    def cmpl(self) -> str:
        return "cmpl-" + self.b62("cmpl", 29)

    def openai_item(self, prefix: str) -> str:
        return f"{prefix}_" + self.hex(prefix, 50)

    def call(self) -> str:
        return "call_" + self.b62("call", 24)

    def openai_request(self) -> str:
        return "req_" + self.hex("req", 32)

    def anthropic(self, prefix: str) -> str:
        return f"{prefix}_01" + self.b62(prefix, 22)

    def anthropic_request(self) -> str:
        return "req_011C" + self.b62("areq", 20)

    def fingerprint(self, model: str) -> str:
        return "fp_" + hashlib.sha256(model.encode()).hexdigest()[:10]
