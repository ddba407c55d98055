"""Instants on the command line (ISO 8601 with offset, or a UTC date)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta


def parse_instant(text: str, *, end_of_day: bool = False) -> datetime:
    """An ISO 8601 instant with a UTC offset, or a date (a UTC day).

    A date is the start of that day, or with ``end_of_day`` (for ``--until``) its end, i.e.
    the next midnight, so that ``--until 2026-03-31`` includes all of March 31.
    """
    text = text.strip()
    try:
        day = date.fromisoformat(text)
    except ValueError:
        pass
    else:
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return start + timedelta(days=1) if end_of_day else start
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"not an ISO 8601 instant or date: {text!r} (e.g. 2026-03-01 or 2026-03-01T12:00:00Z)"
        ) from None
    if value.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset; add Z or +HH:MM, or give a date")
    return value
