"""OpenAI's organisation Usage API (completions) and Costs API, as plain data.

``GET /v1/organization/usage/completions?bucket_width=1d&group_by=model&group_by=project_id...``:
as the API's schema (openai/openai-openapi) defines them, ``input_tokens`` is all input
(text, audio and image; cached and cache-write tokens included), ``input_cached_tokens`` the
cached part, ``output_tokens`` all output (text, audio, image; reasoning included), and
``num_model_requests`` the calls. The finer fields (``input_audio_tokens``,
``input_text_tokens``, ...) came later and are not in every report, so the comparison is in
the three buckets every report has: uncached input, cache reads, output.

``GET /v1/organization/costs?bucket_width=1d&group_by=project_id&group_by=line_item``:
``amount.value`` in ``amount.currency`` (``usd``), per project and line item, without a model
field: compared per day (and project).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from .. import semconv as sc
from ._model import CostRow, ProviderReport, ReportError, UsageRow
from ._pages import buckets, count, decimal, text

USAGE_PATH = "/v1/organization/usage/completions"
COSTS_PATH = "/v1/organization/costs"
USAGE_LIMIT = 31  # buckets per page: the API's maximum for 1d
COSTS_LIMIT = 180

# Our buckets as the Usage API sums them: every uncached input (any modality, cache writes
# too) in input, every output (reasoning, audio, image) in output.
FOLD: Mapping[str, str] = {
    sc.BUCKET_INPUT_IMAGE: sc.BUCKET_INPUT,
    sc.BUCKET_INPUT_AUDIO: sc.BUCKET_INPUT,
    sc.BUCKET_CACHE_WRITE_5M: sc.BUCKET_INPUT,
    sc.BUCKET_CACHE_WRITE_1H: sc.BUCKET_INPUT,
    sc.BUCKET_REASONING: sc.BUCKET_OUTPUT,
    sc.BUCKET_OUTPUT_AUDIO: sc.BUCKET_OUTPUT,
    sc.BUCKET_OUTPUT_IMAGE: sc.BUCKET_OUTPUT,
}


def usage_query(since: datetime, until: datetime) -> list[tuple[str, str]]:
    return [
        ("start_time", str(int(since.timestamp()))),
        ("end_time", str(int(until.timestamp()))),
        ("bucket_width", "1d"),
        ("group_by", "model"),
        ("group_by", "project_id"),
        ("group_by", "api_key_id"),
        ("limit", str(USAGE_LIMIT)),
    ]


def costs_query(since: datetime, until: datetime) -> list[tuple[str, str]]:
    return [
        ("start_time", str(int(since.timestamp()))),
        ("end_time", str(int(until.timestamp()))),
        ("bucket_width", "1d"),
        ("group_by", "project_id"),
        ("group_by", "line_item"),
        ("limit", str(COSTS_LIMIT)),
    ]


def read(usage_pages: Sequence[Any], cost_pages: Sequence[Any] | None) -> ProviderReport:
    what = "OpenAI usage report"
    rows = []
    for day, r in buckets(usage_pages, what):
        model = text(r, "model")
        if model is None:
            raise ReportError(f"{what}: a result of {day} has no model (query group_by=model)")
        all_in = count(r, "input_tokens", what=what)
        cached = count(r, "input_cached_tokens", what=what)
        if cached > all_in:
            raise ReportError(
                f"{what}: {day} {model}: input_cached_tokens ({cached}) exceed "
                f"input_tokens ({all_in})"
            )
        tokens = {
            sc.BUCKET_INPUT: all_in - cached,
            sc.BUCKET_CACHE_READ: cached,
            sc.BUCKET_OUTPUT: count(r, "output_tokens", what=what),
        }
        rows.append(
            UsageRow(
                day,
                model,
                tokens,
                scope=text(r, "project_id"),
                api_key=text(r, "api_key_id"),
                requests=count(r, "num_model_requests", what=what),
            )
        )
    costs = None
    if cost_pages is not None:
        what = "OpenAI costs report"
        costs = []
        for day, r in buckets(cost_pages, what):
            amount = r.get("amount")
            if not isinstance(amount, Mapping):
                raise ReportError(f"{what}: a result of {day} has no amount")
            costs.append(
                CostRow(
                    day,
                    decimal(amount.get("value"), "amount.value", what),
                    str(amount.get("currency") or "usd").upper(),
                    scope=text(r, "project_id"),
                    description=text(r, "line_item"),
                )
            )
    return ProviderReport("openai", tuple(rows), None if costs is None else tuple(costs), fold=FOLD)
