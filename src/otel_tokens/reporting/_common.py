"""What the reporting modules share: exact sums, export results and errors, UTC text,
safe URLs, atomic files."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Context, Decimal, Inexact, InvalidOperation, Overflow
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..pricing import decimal_str

# Sums of ledger amounts are exact: any rounding raises instead of changing money.
EXACT = Context(prec=1000, traps=[Inexact, InvalidOperation, Overflow])


class ExportError(ValueError):
    """The records cannot be exported as asked (the message says why and what to do)."""


@dataclass(slots=True)
class ExportResult:
    written: int = 0
    left_out: dict[str, int] = field(default_factory=dict)  # why -> how many records
    notes: list[str] = field(default_factory=list)

    def leave_out(self, why: str) -> None:
        self.left_out[why] = self.left_out.get(why, 0) + 1


def json_line(value: Any) -> str:
    """``value`` as one line of compact JSON (CloudEvents, Stripe events), non-ASCII kept."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n"


def utc(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def window(since: datetime | None, until: datetime | None) -> str:
    if since is None and until is None:
        return ""
    lo = "-inf" if since is None else utc(since)
    hi = "+inf" if until is None else utc(until)
    return f" with ChargePeriodEnd in ({lo}, {hi}]"


def money(value: Decimal | None) -> str | None:
    return None if value is None else decimal_str(value)


def display_url(url: str) -> str:
    """The URL without its password."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = f"{parts.username or ''}:***@{parts.hostname or ''}"
        if parts.port is not None:
            netloc += f":{parts.port}"
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return url


@contextmanager
def atomic(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` that replaces it only when the block succeeds."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
