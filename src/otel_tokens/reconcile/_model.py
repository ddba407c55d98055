"""What a provider's organisation report says, as plain data: token counts and costs per UTC
day, model and (where the report has it) project, workspace or API key."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Literal

# What a cost line of the provider's report covers, so that the ledger's side of it can be
# summed alike: every charge, token charges only, or per-request charges (web search) only.
Covers = Literal["all", "tokens", "requests"]


class ReportError(ValueError):
    """A provider report that cannot be read or fetched (the message says why)."""


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One result of a usage report bucket: tokens per comparison bucket (ledger bucket
    names: ``input``, ``cache_read``, ``output``, ...)."""

    day: date
    model: str
    tokens: Mapping[str, int]
    scope: str | None = None  # project (OpenAI) or workspace (Anthropic); None: not grouped
    api_key: str | None = None
    requests: int | None = None


@dataclass(frozen=True, slots=True)
class CostRow:
    """One result of a cost report bucket, in the currency's main unit (dollars)."""

    day: date
    amount: Decimal
    currency: str
    model: str | None = None  # None: the report does not say (all models of the day)
    covers: Covers = "all"
    scope: str | None = None
    description: str | None = None


@dataclass(frozen=True, slots=True)
class ProviderReport:
    """A provider's usage (and, when read, cost) report over whole UTC days."""

    provider: str  # the ledger's provider name: ``openai``, ``anthropic``
    usage: tuple[UsageRow, ...]
    costs: tuple[CostRow, ...] | None = None  # None: no cost report was read
    # Ledger bucket -> the provider report's bucket it is counted in (e.g. reasoning tokens
    # are output tokens in both providers' reports); a bucket not named is its own.
    fold: Mapping[str, str] = field(default_factory=dict)
