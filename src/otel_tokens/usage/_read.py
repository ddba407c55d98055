"""Reading counts out of raw usage objects: dicts from JSON or SDK response models."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._counts import MAX_TOKENS_PER_CALL, InvalidUsageError, check_count

_MISSING = object()
# Classes that are pydantic models (the SDKs' response types), found once per class.
_models: dict[type, bool] = {}


def _is_model(cls: type) -> bool:
    try:
        return _models[cls]
    except KeyError:
        model = _models[cls] = hasattr(cls, "model_fields") or hasattr(cls, "__fields__")
        return model


def field(obj: Any, *path: str) -> Any:
    """Follow ``path`` through mappings or attributes; ``None`` where anything is missing."""
    for key in path:
        if obj is None:
            return None
        # No ABC check on the common paths (a dict, a response model): this runs per call.
        if type(obj) is dict:
            obj = obj.get(key)
            continue
        fields = getattr(obj, "__dict__", None) if _is_model(type(obj)) else None
        if fields is not None:
            # A model's fields are in its __dict__ (unknown ones in __pydantic_extra__): a
            # field it lacks costs microseconds through pydantic's __getattr__.
            value = fields.get(key, _MISSING)
            if value is _MISSING:
                extra = getattr(obj, "__pydantic_extra__", None)
                value = extra.get(key) if extra else None
            obj = value
            continue
        value = getattr(obj, key, _MISSING)
        if value is _MISSING:
            value = obj.get(key) if isinstance(obj, Mapping) else None
        obj = value
    return obj


def count(obj: Any, *path: str, within: str = "") -> int:
    """A token count at ``path``: 0 when absent, a clear error when it cannot be a count.

    ``within``: the path of ``obj`` itself, named in that error, for a caller that reads
    several counts out of an object it has looked up once."""
    value = field(obj, *path)
    if value is None:
        return 0
    if type(value) is int and 0 <= value <= MAX_TOKENS_PER_CALL:  # the usual case, fast
        return value
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    name = ".".join((within, *path) if within else path)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)  # Gemini's REST API sends int64 as JSON strings
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidUsageError(f"{name} must be a whole number, got {value!r}")
    return check_count(name, value)


def reported(obj: Any, *path: str, within: str = "") -> int | None:
    """A count at ``path`` if the provider reported one (0 included), else ``None``."""
    value = field(obj, *path)
    if value is None:
        return None
    if type(value) is int and 0 <= value <= MAX_TOKENS_PER_CALL:  # the usual case, fast
        return value
    return count(obj, *path, within=within)  # validates, with the clear error


def require_mapping_like(obj: Any, what: str) -> None:
    if obj is None or isinstance(obj, (str, bytes, int, float, list, tuple)):
        raise InvalidUsageError(f"{what} usage must be an object, got {type(obj).__name__}")
