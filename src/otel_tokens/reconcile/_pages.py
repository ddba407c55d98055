"""Reading the pages of a report (both providers page the same way: ``data`` buckets of
``results``, ``has_more`` and ``next_page``), checking each field as it is read."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from ._model import ReportError


def buckets(pages: Sequence[Any], what: str) -> Iterator[tuple[date, Mapping[str, Any]]]:
    """(UTC day of the bucket's start, result) for every result of every page."""
    for n, page in enumerate(pages, 1):
        if not isinstance(page, Mapping) or not isinstance(page.get("data"), list):
            raise ReportError(f"{what}: page {n} is not a report page (no 'data' list)")
        for bucket in page["data"]:
            if not isinstance(bucket, Mapping):
                raise ReportError(f"{what}: page {n}: a bucket is not an object")
            day = _start_day(bucket, what)
            # OpenAI's Costs API names the list ``results`` in its examples and ``result``
            # in its schema: either is read.
            results = bucket.get("results", bucket.get("result"))
            if not isinstance(results, list):
                raise ReportError(f"{what}: bucket of {day} has no 'results' list")
            for result in results:
                if not isinstance(result, Mapping):
                    raise ReportError(f"{what}: bucket of {day}: a result is not an object")
                yield day, result


def _start_day(bucket: Mapping[str, Any], what: str) -> date:
    if "start_time" in bucket:  # OpenAI: Unix seconds
        value = bucket["start_time"]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ReportError(f"{what}: start_time is not Unix seconds: {value!r}")
        return datetime.fromtimestamp(value, UTC).date()
    value = bucket.get("starting_at")  # Anthropic: RFC 3339
    try:
        start = datetime.fromisoformat(str(value))
    except ValueError:
        raise ReportError(f"{what}: bucket has no start_time/starting_at: {value!r}") from None
    if start.tzinfo is None:
        raise ReportError(f"{what}: starting_at has no UTC offset: {value!r}")
    return start.astimezone(UTC).date()


def count(result: Mapping[str, Any], *path: str, what: str) -> int:
    """A token count at ``path`` (absent or null: 0); anything but a whole number >= 0 is an
    error, never a guess."""
    value: Any = result
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ReportError(f"{what}: {'.'.join(path)} is not a token count: {value!r}")
    return value


def decimal(value: Any, field: str, what: str) -> Decimal:
    """A money amount, exact: the JSON was parsed with ``parse_float=Decimal``."""
    if isinstance(value, bool) or not isinstance(value, (int, str, Decimal)):
        raise ReportError(f"{what}: {field} is not an amount: {value!r}")
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise ReportError(f"{what}: {field} is not an amount: {value!r}") from None
    if not amount.is_finite():
        raise ReportError(f"{what}: {field} is not an amount: {value!r}")
    return amount


def text(result: Mapping[str, Any], key: str) -> str | None:
    value = result.get(key)
    return None if value is None else str(value)
