"""The drift report: FOCUS-compatible CSV (FOCUS columns where they apply, ``x_`` columns for
the drift) and the plain-text summary the command prints."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import IO

from ..pricing import decimal_str
from ._compare import CAUSES, Finding, Reconciliation

# As records.py names them in FOCUS.
_PROVIDERS = {"openai": ("OpenAI", "OpenAI API"), "anthropic": ("Anthropic", "Anthropic API")}

COLUMNS = (
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "ProviderName",
    "PublisherName",
    "ServiceName",
    "ServiceCategory",
    "ChargeCategory",
    "BillingCurrency",
    "BilledCost",  # the provider's cost (what it will invoice), cost lines only
    "ConsumedQuantity",  # the provider's count, token and request lines only
    "ConsumedUnit",
    "SubAccountId",
    "x_Model",
    "x_Measure",
    "x_TokenBucket",
    "x_CostCovers",
    "x_LedgerValue",
    "x_ProviderValue",
    "x_Drift",
    "x_DriftPercent",
    "x_Threshold",
    "x_ExceedsThreshold",
    "x_Cause",
    "x_CauseDetail",
)


def _iso(day_start: datetime) -> str:
    return day_start.isoformat().replace("+00:00", "Z")


def _num(value: Decimal | None) -> str:
    return "" if value is None else decimal_str(value)


def rows(result: Reconciliation) -> Iterator[dict[str, str]]:
    provider_name, service = _PROVIDERS.get(result.provider, (result.provider, result.provider))
    for f in result.findings:
        line = f.line
        start = datetime.combine(line.day, time(), UTC)
        is_cost = line.measure == "cost"
        yield {
            "ChargePeriodStart": _iso(start),
            "ChargePeriodEnd": _iso(start + timedelta(days=1)),
            "ProviderName": provider_name,
            "PublisherName": provider_name,
            "ServiceName": service,
            "ServiceCategory": "AI and Machine Learning",
            "ChargeCategory": "Usage",
            "BillingCurrency": (line.currency or "") if is_cost else "",
            "BilledCost": _num(line.provider) if is_cost else "",
            "ConsumedQuantity": "" if is_cost else _num(line.provider),
            "ConsumedUnit": {"tokens": "Tokens", "requests": "Requests"}.get(line.measure, ""),
            "SubAccountId": line.scope or "",
            "x_Model": line.model or "",
            "x_Measure": line.measure,
            "x_TokenBucket": line.bucket or "",
            "x_CostCovers": line.covers if is_cost else "",
            "x_LedgerValue": _num(line.ledger),
            "x_ProviderValue": _num(line.provider),
            "x_Drift": _num(line.drift),
            "x_DriftPercent": _num(line.percent),
            "x_Threshold": _num(result.threshold),
            "x_ExceedsThreshold": "true" if f.exceeds else "false",
            "x_Cause": f.cause,
            "x_CauseDetail": _detail(f),
        }


def _detail(f: Finding) -> str:
    return " / ".join(CAUSES.get(part, part) for part in f.cause.split("+"))


def write_csv(result: Reconciliation, out: IO[str]) -> int:
    writer = csv.DictWriter(out, fieldnames=COLUMNS)
    writer.writeheader()
    n = 0
    for row in rows(result):
        writer.writerow(row)
        n += 1
    return n


def summary(result: Reconciliation) -> str:
    """The lines over the threshold, then the verdict."""
    out = []
    for f in result.exceeded:
        line = f.line
        what = line.bucket if line.measure != "cost" else f"cost ({line.covers})"
        where = " ".join(p for p in (str(line.day), line.model or "(all models)", line.scope) if p)
        percent = "n/a" if line.percent is None else f"{decimal_str(line.percent)}%"
        unit = f" {line.currency}" if line.measure == "cost" else ""
        out.append(
            f"{where} {what}: ledger {_num(line.ledger) or 'unpriced'}{unit}, provider "
            f"{_num(line.provider)}{unit}, drift {_num(line.drift) or 'n/a'} ({percent}): "
            f"{_detail(f)}"
        )
    n, bad = len(result.findings), len(result.exceeded)
    costs = "" if result.with_costs else " (tokens only: no cost report read)"
    if bad:
        out.append(
            f"{bad} of {n} compared figures drift more than {decimal_str(result.threshold)}%{costs}"
        )
    else:
        out.append(
            f"ledger agrees with the provider within {decimal_str(result.threshold)}% "
            f"({n} figures compared){costs}"
        )
    return "\n".join(out)
