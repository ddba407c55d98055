"""One reply of the OpenAI/Anthropic fake (a JSON body or SSE events), the request context its
wire-format handlers read, and the output planning they share."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._controls import Controls
from ._ids import Ids
from ._models import served_model

if TYPE_CHECKING:
    from ._provider import ProviderServer


JSONDict = dict[str, Any]


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any = None
    events: list[tuple[str | None, str]] | None = None
    indent: int | None = None


@dataclass
class Ctx:
    server: ProviderServer
    ids: Ids
    body: JSONDict
    controls: Controls
    provider: str
    endpoint: str
    deployment: str | None
    query: dict[str, str]
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def azure(self) -> bool:
        return self.provider == "azure"

    def model(self, default: str) -> str:
        if self.controls.served_model:
            return self.controls.served_model
        requested = self.body.get("model")
        provider = "anthropic" if self.provider == "anthropic" else "openai"
        if self.azure and self.deployment:
            mapped = served_model(self.deployment, provider)
            if mapped != self.deployment or not isinstance(requested, str):
                return mapped
        if isinstance(requested, str) and requested:
            return served_model(requested, provider)
        return default


def dumps(obj: Any, indent: int | None = None) -> str:
    if indent is None:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    return json.dumps(obj, indent=indent, ensure_ascii=False)


def dict_field(body: JSONDict, key: str) -> JSONDict:
    value = body.get(key)
    return value if isinstance(value, dict) else {}


def int_field(body: JSONDict, *keys: str) -> int | None:
    for key in keys:
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def cut_point(controls: Controls, count: int) -> int:
    if controls.drop_after is not None:
        return min(controls.drop_after, count)
    return max(1, count // 2)
