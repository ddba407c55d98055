"""What a token count may be, and the error for usage that cannot be real."""

from __future__ import annotations

# A single call reporting more than this in one bucket is a bug upstream, not usage.
MAX_TOKENS_PER_CALL = 1_000_000_000


class InvalidUsageError(ValueError):
    """Raised for usage that cannot be real: negative counts, cache larger than input, ..."""


def check_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidUsageError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < 0:
        raise InvalidUsageError(f"{name} must not be negative, got {value}")
    if value > MAX_TOKENS_PER_CALL:
        raise InvalidUsageError(
            f"{name}={value} is more than any single call can use ({MAX_TOKENS_PER_CALL})"
        )
    return value


def attribute_int(key: str, raw: object) -> int:
    """An int attribute value; OTLP/JSON sends int64 as a string. Never truncates."""
    if isinstance(raw, str) and raw.strip().isdigit():
        return int(raw)
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise InvalidUsageError(f"{key} must be a whole number, got {raw!r}")
    return raw
