"""Anthropic's Admin API usage report (Messages) and cost report, as plain data.

``GET /v1/organizations/usage_report/messages?bucket_width=1d&group_by[]=model&...``:
``uncached_input_tokens``, ``cache_read_input_tokens``,
``cache_creation.ephemeral_5m_input_tokens`` / ``ephemeral_1h_input_tokens``,
``output_tokens`` (thinking included), ``server_tool_use.web_search_requests``.
``GET /v1/organizations/cost_report?group_by[]=workspace_id&group_by[]=description``:
``amount`` in the lowest currency unit (cents) as a decimal string, with ``model`` for token
costs and ``cost_type`` (``tokens``, ``web_search``, ...).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from .. import semconv as sc
from ._model import CostRow, Covers, ProviderReport, ReportError, UsageRow
from ._pages import buckets, count, decimal, text

USAGE_PATH = "/v1/organizations/usage_report/messages"
COSTS_PATH = "/v1/organizations/cost_report"
LIMIT = 31  # buckets per page: the API's maximum for 1d
VERSION = "2023-06-01"

FOLD: Mapping[str, str] = {
    sc.BUCKET_REASONING: sc.BUCKET_OUTPUT,  # thinking is billed, and reported, as output
    sc.BUCKET_INPUT_IMAGE: sc.BUCKET_INPUT,
}
# Currencies whose lowest unit is a hundredth (the report says "e.g. cents").
_CENTS = Decimal(100)


def _rfc3339(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def usage_query(since: datetime, until: datetime) -> list[tuple[str, str]]:
    return [
        ("starting_at", _rfc3339(since)),
        ("ending_at", _rfc3339(until)),
        ("bucket_width", "1d"),
        ("group_by[]", "model"),
        ("group_by[]", "workspace_id"),
        ("group_by[]", "api_key_id"),
        ("limit", str(LIMIT)),
    ]


def costs_query(since: datetime, until: datetime) -> list[tuple[str, str]]:
    return [
        ("starting_at", _rfc3339(since)),
        ("ending_at", _rfc3339(until)),
        ("bucket_width", "1d"),
        ("group_by[]", "workspace_id"),
        ("group_by[]", "description"),
        ("limit", str(LIMIT)),
    ]


def read(usage_pages: Sequence[Any], cost_pages: Sequence[Any] | None) -> ProviderReport:
    what = "Anthropic usage report"
    rows = []
    for day, r in buckets(usage_pages, what):
        model = text(r, "model")
        if model is None:
            raise ReportError(f"{what}: a result of {day} has no model (query group_by[]=model)")
        tokens = {
            sc.BUCKET_INPUT: count(r, "uncached_input_tokens", what=what),
            sc.BUCKET_CACHE_READ: count(r, "cache_read_input_tokens", what=what),
            sc.BUCKET_CACHE_WRITE_5M: count(
                r, "cache_creation", "ephemeral_5m_input_tokens", what=what
            ),
            sc.BUCKET_CACHE_WRITE_1H: count(
                r, "cache_creation", "ephemeral_1h_input_tokens", what=what
            ),
            sc.BUCKET_OUTPUT: count(r, "output_tokens", what=what),
            sc.BUCKET_WEB_SEARCH: count(r, "server_tool_use", "web_search_requests", what=what),
        }
        rows.append(
            UsageRow(
                day, model, tokens, scope=text(r, "workspace_id"), api_key=text(r, "api_key_id")
            )
        )
    costs = None
    if cost_pages is not None:
        what = "Anthropic cost report"
        costs = []
        for day, r in buckets(cost_pages, what):
            cents = decimal(r.get("amount"), "amount", what)
            kind = text(r, "cost_type")
            model = text(r, "model")
            covers: Covers = "all"
            if kind == "tokens" and model is not None:
                covers = "tokens"
            elif kind is not None and kind != "tokens":
                covers, model = "requests", None
            costs.append(
                CostRow(
                    day,
                    cents / _CENTS,
                    str(r.get("currency") or "USD").upper(),
                    model=model if covers == "tokens" else None,
                    covers=covers,
                    scope=text(r, "workspace_id"),
                    description=text(r, "description"),
                )
            )
    return ProviderReport(
        "anthropic", tuple(rows), None if costs is None else tuple(costs), fold=FOLD
    )
