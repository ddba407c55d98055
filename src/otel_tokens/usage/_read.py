"""Reading counts out of raw usage objects: dicts from JSON or SDK response models."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._model import InvalidUsageError, _check_count


def field(obj: Any, *path: str) -> Any:
    """Follow ``path`` through mappings or attributes; ``None`` where anything is missing."""
    for key in path:
        if obj is None:
            return None
        obj = obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)
    return obj


def count(obj: Any, *path: str) -> int:
    """A token count at ``path``: 0 when absent, a clear error when it cannot be a count."""
    value = field(obj, *path)
    if value is None:
        return 0
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    name = ".".join(path)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)  # Gemini's REST API sends int64 as JSON strings
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidUsageError(f"{name} must be a whole number, got {value!r}")
    return _check_count(name, value)


def require_mapping_like(obj: Any, what: str) -> None:
    if obj is None or isinstance(obj, (str, bytes, int, float, list, tuple)):
        raise InvalidUsageError(f"{what} usage must be an object, got {type(obj).__name__}")
