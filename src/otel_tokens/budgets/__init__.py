"""Budgets and prepaid token pools: observe spend, or enforce limits before a call is sent.

Declare them in YAML (``OTEL_TOKENS_BUDGETS``) or in code; balances live in this process
(default) or in Redis (``OTEL_TOKENS_BUDGET_STORE=redis://...``), shared by every process.
``with expect(tokens=N):`` around a workflow refuses it at its first call, before anything is
sent, when its budgets cannot pay for all of it.
``budget_forecast`` projects each budget's use from the ledger's history and says when it
is expected to run out. See docs/budgets.md.
"""

from ._expect import expect
from ._forecast import BudgetForecast, budget_forecast
from ._manager import ENV_BUDGET_STORE, ENV_BUDGETS, BudgetManager, Reservation, scope_values
from ._model import (
    Budget,
    BudgetConfigError,
    BudgetExceeded,
    BudgetUnavailable,
    TopUp,
    budgets_from_config,
    load_budgets,
)
from ._report import BudgetStatus, budget_status
from ._store import MemoryStore, RedisStore, Store, StoreError, open_store

__all__ = [
    "ENV_BUDGETS",
    "ENV_BUDGET_STORE",
    "Budget",
    "BudgetConfigError",
    "BudgetExceeded",
    "BudgetForecast",
    "BudgetManager",
    "BudgetStatus",
    "BudgetUnavailable",
    "MemoryStore",
    "RedisStore",
    "Reservation",
    "Store",
    "StoreError",
    "TopUp",
    "budget_forecast",
    "budget_status",
    "budgets_from_config",
    "expect",
    "load_budgets",
    "open_store",
    "scope_values",
]
