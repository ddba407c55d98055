"""Fetching a report's pages over HTTP with an admin key (standard library only), or
reading them from an exported file."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from ._model import ReportError

MAX_PAGES = 1000  # a server that never stops paging is an error, not a hang
TIMEOUT = 60.0


def fetch_pages(
    base_url: str,
    path: str,
    query: Sequence[tuple[str, str]],
    headers: Mapping[str, str],
    what: str,
) -> list[Any]:
    """Every page of ``path``: ``page=next_page`` while ``has_more``."""
    pages: list[Any] = []
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        params = list(query) + ([("page", cursor)] if cursor is not None else [])
        url = f"{base_url.rstrip('/')}{path}?{urlencode(params)}"
        page = _get(url, headers, what)
        pages.append(page)
        if not isinstance(page, Mapping) or not page.get("has_more"):
            return pages
        cursor = page.get("next_page")
        if not isinstance(cursor, str) or not cursor:
            raise ReportError(f"{what}: has_more without a next_page cursor")
    raise ReportError(f"{what}: more than {MAX_PAGES} pages")


def _get(url: str, headers: Mapping[str, str], what: str) -> Any:
    request = urllib.request.Request(url, headers={"accept": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        detail = _error_message(exc.read())
        hint = ""
        if exc.code in (401, 403):
            hint = " (an organisation admin key is needed: --admin-key or the environment)"
        raise ReportError(f"{what}: HTTP {exc.code} from {url}: {detail}{hint}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ReportError(f"{what}: cannot reach {url}: {reason}") from None
    return loads(body, f"{what} from {url}")


def _error_message(body: bytes) -> str:
    try:
        error = json.loads(body).get("error")
        if isinstance(error, Mapping):
            return str(error.get("message") or error)
        return str(error)
    except (ValueError, AttributeError):
        return body[:200].decode("utf-8", "replace") or "(no body)"


def loads(body: bytes | str, what: str) -> Any:
    """JSON with every number that has a fraction as an exact Decimal (money is never a
    float)."""
    try:
        return json.loads(body, parse_float=Decimal)
    except ValueError as exc:
        raise ReportError(f"{what}: not JSON: {exc}") from None


def read_pages(path: str, what: str) -> list[Any]:
    """An exported report: one page as the API returns it, or a JSON list of pages."""
    try:
        body = Path(path).read_bytes()
    except OSError as exc:
        raise ReportError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    value = loads(body, f"{what} {path}")
    return value if isinstance(value, list) else [value]
