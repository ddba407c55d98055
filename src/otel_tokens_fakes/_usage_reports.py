"""OpenAI's and Anthropic's organisation usage and cost report APIs, for
``otel-tokens reconcile``.

One server, both providers (each under its own paths, as on the real hosts):

* OpenAI, ``Authorization: Bearer <admin key>``:
  ``GET /v1/organization/usage/completions`` and ``GET /v1/organization/costs``; query
  ``start_time`` (Unix seconds, required), ``end_time``, ``bucket_width`` (``1d`` only here),
  ``group_by`` (repeated, or comma-separated), ``limit``, ``page``; the answer is
  ``{"object": "page", "data": [buckets], "has_more", "next_page"}`` with buckets
  ``{"object": "bucket", "start_time", "end_time", "results": [...]}``.
* Anthropic, ``x-api-key: <admin key>`` and ``anthropic-version``:
  ``GET /v1/organizations/usage_report/messages`` and ``GET /v1/organizations/cost_report``;
  query ``starting_at`` (RFC 3339, required), ``ending_at``, ``bucket_width``, ``group_by[]``
  (repeated), ``limit``, ``page``; the answer is ``{"data": [buckets], "has_more",
  "next_page"}`` with buckets ``{"starting_at", "ending_at", "results": [...]}``.

The data are results per UTC day (``server.openai_usage["2026-03-01"] = [{...}, ...]``),
written with every dimension (model, project, ...). The server answers one bucket per day of
the query's range (days without data have no results), groups the results by the query's
``group_by`` as the real APIs do (dimensions not grouped by are null, counts summed), and
pages at ``min(limit, page_size)`` buckets. A wrong or missing key is answered with each
provider's 401 error body.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ._loopback import LoopbackServer, QuietHandler

# The dimensions each report can be grouped by; the rest of a result is summed.
_OPENAI_USAGE_DIMS = ("project_id", "user_id", "api_key_id", "model", "batch", "service_tier")
_OPENAI_COST_DIMS = ("project_id", "line_item", "api_key_id")
_ANTHROPIC_USAGE_DIMS = ("api_key_id", "workspace_id", "model", "service_tier", "context_window")
# Grouping the cost report by description fills these in (else they are null).
_ANTHROPIC_DESCRIPTION = (
    "description",
    "model",
    "cost_type",
    "token_type",
    "context_window",
    "service_tier",
)


@dataclass(frozen=True)
class SeenQuery:
    """One request the server received."""

    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names in lower case


class UsageReportServer(LoopbackServer):
    """``with UsageReportServer(admin_key="sk-admin") as s: ... --base-url s.url``."""

    def __init__(self, admin_key: str = "sk-admin-test", page_size: int = 31) -> None:
        self.admin_key = admin_key
        self.page_size = page_size
        self.openai_usage: dict[str, list[dict[str, Any]]] = {}
        self.openai_costs: dict[str, list[dict[str, Any]]] = {}
        self.anthropic_usage: dict[str, list[dict[str, Any]]] = {}
        self.anthropic_costs: dict[str, list[dict[str, Any]]] = {}
        self.seen: list[SeenQuery] = []
        super().__init__(_handler(self))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class _BadRequest(Exception):
    pass


def _group(
    results: list[dict[str, Any]], dims: tuple[str, ...], by: set[str]
) -> list[dict[str, Any]]:
    """The results grouped by ``by``: other dimensions null, the rest summed."""
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for result in results:
        kept = {d: result.get(d) if d in by else None for d in dims}
        key = tuple(sorted((k, json.dumps(v)) for k, v in kept.items()))
        values = {k: v for k, v in result.items() if k not in kept}
        if key in groups:
            groups[key] = _add(groups[key], values)
        else:
            groups[key] = {**kept, **values}
    return list(groups.values())


def _add(a: dict[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        if k not in out or out[k] is None:
            out[k] = v
        elif isinstance(v, Mapping):
            out[k] = _add(out[k], v)
        elif isinstance(v, bool) or k in ("object", "currency"):
            continue
        elif isinstance(v, int):
            out[k] = out[k] + v
        elif isinstance(v, float):  # OpenAI's amount.value: summed exactly, sent as a number
            out[k] = float(Decimal(repr(out[k])) + Decimal(repr(v)))
        elif isinstance(v, str):  # Anthropic's amount: a decimal string
            out[k] = str(Decimal(out[k]) + Decimal(v))
    return out


def _range(query: Mapping[str, list[str]], start_key: str, end_key: str) -> tuple[date, date]:
    def instant(text: str) -> datetime:
        if text.isdigit():
            return datetime.fromtimestamp(int(text), UTC)
        value = datetime.fromisoformat(text)
        if value.tzinfo is None:
            raise _BadRequest(f"{text!r} is not an RFC 3339 timestamp")
        return value.astimezone(UTC)

    if not query.get(start_key):
        raise _BadRequest(f"{start_key} is required")
    try:
        start = instant(query[start_key][0])
        end = instant(query[end_key][0]) if query.get(end_key) else start + timedelta(days=7)
    except ValueError as exc:
        raise _BadRequest(str(exc)) from None
    if query.get("bucket_width", ["1d"])[0] != "1d":
        raise _BadRequest("this server answers bucket_width=1d only")
    return start.date(), (end - timedelta(microseconds=1)).date() + timedelta(days=1)


def _page(
    server: UsageReportServer,
    query: Mapping[str, list[str]],
    days: list[date],
) -> tuple[list[date], str | None]:
    offset = 0
    if query.get("page"):
        text = query["page"][0].removeprefix("page_")
        try:
            offset = int(base64.urlsafe_b64decode(text.encode()).decode())
        except ValueError:
            raise _BadRequest(f"invalid page cursor {query['page'][0]!r}") from None
    limit = min(int(query.get("limit", ["7"])[0]), server.page_size)
    chunk = days[offset : offset + limit]
    more = offset + limit < len(days)
    cursor = base64.urlsafe_b64encode(str(offset + limit).encode()).decode() if more else None
    return chunk, cursor


def _openai(server: UsageReportServer, path: str, query: Mapping[str, list[str]]) -> dict[str, Any]:
    first, end = _range(query, "start_time", "end_time")
    days = [first + timedelta(days=i) for i in range((end - first).days)]
    chunk, cursor = _page(server, query, days)
    by = {g for value in query.get("group_by", []) for g in value.split(",") if g}
    costs = path.endswith("/costs")
    data, dims = (
        (server.openai_costs, _OPENAI_COST_DIMS)
        if costs
        else (
            server.openai_usage,
            _OPENAI_USAGE_DIMS,
        )
    )
    kind = "organization.costs.result" if costs else "organization.usage.completions.result"
    buckets = []
    for day in chunk:
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        results = [{"object": kind, **r} for r in data.get(day.isoformat(), [])]
        buckets.append(
            {
                "object": "bucket",
                "start_time": int(start.timestamp()),
                "end_time": int((start + timedelta(days=1)).timestamp()),
                "results": _group(results, dims, by),
            }
        )
    return {"object": "page", "data": buckets, "has_more": cursor is not None, "next_page": cursor}


def _anthropic(
    server: UsageReportServer, path: str, query: Mapping[str, list[str]]
) -> dict[str, Any]:
    first, end = _range(query, "starting_at", "ending_at")
    days = [first + timedelta(days=i) for i in range((end - first).days)]
    chunk, cursor = _page(server, query, days)
    by = set(query.get("group_by[]", []))
    costs = path.endswith("/cost_report")
    buckets = []
    for day in chunk:
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        if costs:
            # Grouping by description is grouping by all that it describes.
            grouped = by | set(_ANTHROPIC_DESCRIPTION) if "description" in by else by
            results = _group(
                server.anthropic_costs.get(day.isoformat(), []),
                ("workspace_id", *_ANTHROPIC_DESCRIPTION),
                grouped,
            )
        else:
            results = _group(
                server.anthropic_usage.get(day.isoformat(), []), _ANTHROPIC_USAGE_DIMS, by
            )
        buckets.append(
            {
                "starting_at": start.isoformat().replace("+00:00", "Z"),
                "ending_at": (start + timedelta(days=1)).isoformat().replace("+00:00", "Z"),
                "results": results,
            }
        )
    return {
        "data": buckets,
        "has_more": cursor is not None,
        "next_page": None if cursor is None else f"page_{cursor}",
    }


def _handler(server: UsageReportServer) -> type[BaseHTTPRequestHandler]:
    class Handler(QuietHandler):
        def _send(self, status: int, payload: Any) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            headers = {k.lower(): v for k, v in self.headers.items()}
            server.seen.append(SeenQuery(parts.path, query, headers))
            if parts.path.startswith("/v1/organization/"):
                self._openai(parts.path, query)
            elif parts.path.startswith("/v1/organizations/"):
                self._anthropic(parts.path, query)
            else:
                self._send(404, {"error": {"message": f"no route {parts.path}"}})

        def _openai(self, path: str, query: dict[str, list[str]]) -> None:
            if self.headers.get("authorization") != f"Bearer {server.admin_key}":
                self._send(
                    401,
                    {
                        "error": {
                            "message": "Incorrect API key provided. You must be an organization "
                            "owner and use an admin key to access this endpoint.",
                            "type": "invalid_request_error",
                            "param": None,
                            "code": "invalid_api_key",
                        }
                    },
                )
                return
            if path not in ("/v1/organization/usage/completions", "/v1/organization/costs"):
                self._send(404, {"error": {"message": f"Invalid URL (GET {path})"}})
                return
            try:
                self._send(200, _openai(server, path, query))
            except _BadRequest as exc:
                error = {"message": str(exc), "type": "invalid_request_error"}
                self._send(400, {"error": error})

        def _anthropic(self, path: str, query: dict[str, list[str]]) -> None:
            def error(status: int, kind: str, message: str) -> None:
                self._send(status, {"type": "error", "error": {"type": kind, "message": message}})

            if self.headers.get("x-api-key") != server.admin_key:
                error(401, "authentication_error", "invalid x-api-key")
                return
            if not self.headers.get("anthropic-version"):
                error(400, "invalid_request_error", "anthropic-version: header is required")
                return
            known = ("/v1/organizations/usage_report/messages", "/v1/organizations/cost_report")
            if path not in known:
                error(404, "not_found_error", f"Not found: {path}")
                return
            try:
                self._send(200, _anthropic(server, path, query))
            except _BadRequest as exc:
                error(400, "invalid_request_error", str(exc))

    return Handler
