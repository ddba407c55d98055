"""Budgets and prepaid pools: what they are, and how they are declared."""

from __future__ import annotations

import calendar
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import yaml

from .. import semconv as sc

Mode = Literal["observe", "enforce"]
Period = Literal["daily", "monthly", "fixed", "pool"]
# Balances are kept as integers: tokens, or 10^-9 of the currency (costs rounded up).
NANO = Decimal(1_000_000_000)
THRESHOLDS = (Decimal("0.5"), Decimal("0.8"), Decimal("1"))

# Scope keys: attribution keys, plus model and provider.
SCOPE_KEYS = {
    "tenant": sc.BILLING_TENANT_ID,
    "user": sc.BILLING_USER_ID,
    "feature": sc.BILLING_FEATURE,
    "model": sc.GEN_AI_REQUEST_MODEL,
    "provider": sc.GEN_AI_PROVIDER_NAME,
}


class BudgetExceeded(Exception):
    """Raised before a request is sent when it could take a budget past its limit."""

    def __init__(
        self, budget: str, needed: int, available: int, unit: str, *, what: str = "this call"
    ) -> None:
        self.budget = budget
        self.needed = needed
        self.available = available
        self.unit = unit
        super().__init__(
            f"budget {budget!r} would be exceeded: {what} may use up to "
            f"{_show(needed, unit)} and {_show(available, unit)} remain"
        )


class BudgetUnavailable(BudgetExceeded):
    """The budget store cannot be reached and the budget is configured to fail closed."""

    def __init__(self, budget: str, reason: str) -> None:
        Exception.__init__(self, f"budget {budget!r} cannot be checked ({reason}); failing closed")
        self.budget = budget


class BudgetConfigError(ValueError):
    """A budget declaration that cannot be used."""


def _show(amount: int, unit: str) -> str:
    if unit == "tokens":
        return f"{amount:,} tokens"
    return f"{Decimal(amount) / NANO:f} {unit}"


@dataclass(frozen=True, slots=True)
class TopUp:
    """Credit added to a prepaid pool; usable from ``at`` until ``expires`` (if set)."""

    amount: Decimal
    at: datetime
    expires: datetime | None = None

    @property
    def id(self) -> str:
        expires = self.expires.isoformat() if self.expires else ""
        text = f"{self.amount}|{self.at.isoformat()}|{expires}"
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def active(self, now: datetime) -> bool:
        return self.at <= now and (self.expires is None or now < self.expires)


@dataclass(frozen=True, slots=True)
class Budget:
    """A spending limit (or prepaid pool) over calls matching ``scope``."""

    name: str
    limit: Decimal = Decimal(0)
    unit: str = "USD"  # a currency code, or "tokens"
    period: Period = "monthly"
    scope: Mapping[str, str] = field(default_factory=dict)
    mode: Mode = "observe"
    start: datetime | None = None  # fixed windows
    end: datetime | None = None
    rollover: bool = False  # unused balance of the previous period carries over
    top_ups: tuple[TopUp, ...] = ()  # period "pool"
    fail_closed: bool = False

    def __post_init__(self) -> None:
        if self.mode not in ("observe", "enforce"):
            raise BudgetConfigError(f"budget {self.name!r}: mode must be observe or enforce")
        if self.period not in ("daily", "monthly", "fixed", "pool"):
            raise BudgetConfigError(
                f"budget {self.name!r}: period must be daily, monthly, fixed or pool"
            )
        if self.unit != "tokens" and (len(self.unit) != 3 or not self.unit.isupper()):
            raise BudgetConfigError(f"budget {self.name!r}: unit must be a currency or 'tokens'")
        if self.period == "fixed" and (self.start is None or self.end is None):
            raise BudgetConfigError(f"budget {self.name!r}: a fixed window needs start and end")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise BudgetConfigError(f"budget {self.name!r}: end must be after start")
        if self.rollover and self.period not in ("daily", "monthly"):
            raise BudgetConfigError(
                f"budget {self.name!r}: rollover needs a daily or monthly period"
            )
        if self.rollover and self.start is None:
            # Without it, the period before the budget existed would look entirely unused
            # and its whole limit would carry over into the first period.
            raise BudgetConfigError(
                f"budget {self.name!r}: rollover needs 'start', the first period it counts from"
            )
        if self.period == "pool" and not self.top_ups:
            raise BudgetConfigError(f"budget {self.name!r}: a pool needs at least one top-up")
        if self.period != "pool" and self.limit <= 0:
            raise BudgetConfigError(f"budget {self.name!r}: limit must be positive")
        unknown = (
            set(self.scope) - set(SCOPE_KEYS) - {k for k in self.scope if k.startswith("tag.")}
        )
        if unknown:
            raise BudgetConfigError(
                f"budget {self.name!r}: unknown scope key(s) {sorted(unknown)}; use "
                f"{sorted(SCOPE_KEYS)} or tag.<name>"
            )

    @property
    def in_tokens(self) -> bool:
        return self.unit == "tokens"

    def units(self, amount: Decimal) -> int:
        """Store units of a limit or top-up: tokens, or nano-units of the currency."""
        return int(amount) if self.in_tokens else int((amount * NANO).to_integral_value())

    def matches(self, values: Mapping[str, str]) -> bool:
        return all(values.get(key) == wanted for key, wanted in self.scope.items())

    def in_effect(self, now: datetime) -> bool:
        """False outside a fixed window: calls then are neither limited nor counted."""
        if self.period != "fixed":
            return True
        assert self.start is not None and self.end is not None
        return self.start <= now < self.end

    def top_up_keys(self) -> list[str]:
        """Account key of each top-up (identical top-ups get distinct keys)."""
        seen: dict[str, int] = {}
        keys = []
        for top_up in self.top_ups:
            n = seen.get(top_up.id, 0)
            seen[top_up.id] = n + 1
            keys.append(f"{self.name}:topup:{top_up.id}" + (f".{n}" if n else ""))
        return keys

    def window(self, now: datetime) -> tuple[datetime, datetime, str]:
        """(start, end, id) of the period containing ``now``."""
        if self.period == "daily":
            start = datetime.combine(now.date(), datetime.min.time(), UTC)
            return start, start + timedelta(days=1), start.strftime("%Y-%m-%d")
        if self.period == "monthly":
            start = datetime(now.year, now.month, 1, tzinfo=UTC)
            days = calendar.monthrange(now.year, now.month)[1]
            return start, start + timedelta(days=days), start.strftime("%Y-%m")
        if self.period == "fixed":
            assert self.start is not None and self.end is not None
            return self.start, self.end, "fixed"
        first = min(t.at for t in self.top_ups)
        if any(t.expires is None for t in self.top_ups):  # credit that never expires
            return first, datetime.max.replace(tzinfo=UTC), "pool"
        return first, max(t.expires for t in self.top_ups if t.expires), "pool"

    def previous_window(self, now: datetime) -> str | None:
        """The id of the period before ``now``'s, if the budget already counted in it."""
        if self.period == "daily":
            day = now.date() - timedelta(days=1)
            first = day
            window = day.strftime("%Y-%m-%d")
        elif self.period == "monthly":
            last = date(now.year, now.month, 1) - timedelta(days=1)
            first = last.replace(day=1)
            window = last.strftime("%Y-%m")
        else:
            return None
        if self.start is not None and datetime.combine(first, datetime.min.time(), UTC) < (
            self.start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        ):
            return None  # the budget did not exist yet then: nothing carries over
        return window


def _instant(value: Any, where: str) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime.combine(value, datetime.min.time(), UTC)
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise BudgetConfigError(f"{where}: not an ISO 8601 date or instant: {value!r}") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


_BUDGET_KEYS = frozenset(
    {
        "name",
        "limit",
        "unit",
        "period",
        "scope",
        "mode",
        "start",
        "end",
        "rollover",
        "top_ups",
        "on_store_error",
    }
)
_TOP_UP_KEYS = frozenset({"amount", "at", "expires"})


def _unknown(raw: Mapping[str, Any], allowed: frozenset[str], here: str) -> None:
    # A misspelt key (``mdoe: enforce``) must not silently fall back to a default.
    unknown = sorted(str(k) for k in raw if k not in allowed)
    if unknown:
        raise BudgetConfigError(
            f"{here}: unknown key(s) {unknown}; expected some of {sorted(allowed)}"
        )


def _amount(value: Any, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise BudgetConfigError(f"{where}: not a decimal amount: {value!r}")
    try:
        amount = Decimal(str(value).strip())
    except ArithmeticError:
        raise BudgetConfigError(f"{where}: not a decimal amount: {value!r}") from None
    if not amount.is_finite():
        raise BudgetConfigError(f"{where}: not a decimal amount: {value!r}")
    return amount


def _top_up(raw: Any, here: str) -> TopUp:
    if not isinstance(raw, Mapping) or "amount" not in raw:
        raise BudgetConfigError(f"{here}: each top-up needs an 'amount'")
    _unknown(raw, _TOP_UP_KEYS, here)
    amount = _amount(raw["amount"], f"{here}.amount")
    if amount <= 0:
        raise BudgetConfigError(f"{here}.amount: must be positive")
    at = _instant(raw.get("at", "1970-01-01"), f"{here}.at")
    expires = _instant(raw["expires"], f"{here}.expires") if raw.get("expires") else None
    if expires is not None and expires <= at:
        raise BudgetConfigError(f"{here}: expires must be after at")
    return TopUp(amount=amount, at=at, expires=expires)


def budgets_from_config(data: Any, where: str = "budgets") -> list[Budget]:
    """Budgets from the ``budgets:`` list of a YAML config (see docs/budgets.md)."""
    if isinstance(data, Mapping):
        data = data.get("budgets", [])
    if not isinstance(data, list):
        raise BudgetConfigError(f"{where}: 'budgets' must be a list")
    out: list[Budget] = []
    for i, raw in enumerate(data):
        here = f"{where}[{i}]"
        if not isinstance(raw, Mapping) or "name" not in raw:
            raise BudgetConfigError(f"{here}: each budget needs a 'name'")
        _unknown(raw, _BUDGET_KEYS, here)
        scope = raw.get("scope") or {}
        if not isinstance(scope, Mapping):
            raise BudgetConfigError(f"{here}.scope: must be a mapping, e.g. {{tenant: acme}}")
        top_ups = raw.get("top_ups") or []
        if not isinstance(top_ups, list):
            raise BudgetConfigError(f"{here}.top_ups: must be a list")
        rollover = raw.get("rollover", False)
        if not isinstance(rollover, bool):
            raise BudgetConfigError(f"{here}.rollover: must be true or false")
        on_store_error = raw.get("on_store_error", "open")
        if on_store_error not in ("open", "closed"):
            raise BudgetConfigError(f"{here}.on_store_error: must be open or closed")
        if any(str(b.name) == str(raw["name"]) for b in out):
            # Budgets share the store by name: two of one name would share balances.
            raise BudgetConfigError(f"{here}: duplicate budget name {raw['name']!r}")
        try:
            out.append(
                Budget(
                    name=str(raw["name"]),
                    limit=_amount(raw.get("limit", 0), f"{here}.limit"),
                    unit=str(raw.get("unit", "USD")),
                    period=raw.get("period", "monthly"),
                    scope={str(k): str(v) for k, v in scope.items()},
                    mode=raw.get("mode", "observe"),
                    start=_instant(raw["start"], f"{here}.start") if raw.get("start") else None,
                    end=_instant(raw["end"], f"{here}.end") if raw.get("end") else None,
                    rollover=rollover,
                    top_ups=tuple(
                        _top_up(t, f"{here}.top_ups[{j}]") for j, t in enumerate(top_ups)
                    ),
                    fail_closed=on_store_error == "closed",
                )
            )
        except BudgetConfigError as exc:
            if str(exc).startswith(where):
                raise
            raise BudgetConfigError(f"{here}: {exc}") from exc
    return out


def load_budgets(path: str | Path) -> list[Budget]:
    """The budgets of a YAML file; raises `BudgetConfigError` saying what and where."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise BudgetConfigError(f"cannot read budgets from {path}: {exc}") from exc
    return budgets_from_config(data or {}, str(path))
