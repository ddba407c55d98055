"""The generated output of one answer, planned: reasoning tokens and visible pieces under
the request's token limit, and the tool call a function schema asks for."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._controls import split_pieces


@dataclass
class Output:
    """The generated output of one choice: reasoning tokens, visible pieces, and the finish."""

    reasoning: int
    pieces: list[str]
    truncated: bool

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def plan_output(reasoning: int, pieces: list[str], limit: int | None) -> Output:
    if limit is None:
        return Output(reasoning, pieces, False)
    limit = max(0, limit)
    if reasoning >= limit and (pieces or reasoning > limit):
        return Output(limit, [], True)
    room = limit - reasoning
    if len(pieces) > room:
        return Output(reasoning, pieces[:room], True)
    return Output(reasoning, pieces, False)


def schema_example(schema: Any) -> Any:
    if not isinstance(schema, dict):
        return "example"
    stype = schema.get("type")
    if isinstance(stype, list):
        stype = next((t for t in stype if t != "null"), "string")
    if "enum" in schema and isinstance(schema["enum"], list) and schema["enum"]:
        return schema["enum"][0]
    if stype == "object" or "properties" in schema:
        props = schema.get("properties")
        if not isinstance(props, dict):
            return {}
        required = schema.get("required")
        keys = [k for k in props if not isinstance(required, list) or k in required] or list(props)
        return {k: schema_example(props[k]) for k in keys[:6]}
    if stype == "array":
        return [schema_example(schema.get("items"))]
    if stype == "integer":
        return 1
    if stype == "number":
        return 1.5
    if stype == "boolean":
        return True
    if stype == "null":
        return None
    return "example"


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str

    @property
    def pieces(self) -> list[str]:
        return split_pieces(self.arguments)
