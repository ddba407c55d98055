"""Cost-record ledgers behind one small protocol: SQLite (default) and PostgreSQL.

The same URL form everywhere: ``sqlite:///path/to/ledger.db`` (relative to the working
directory; ``sqlite:////abs/path.db`` for absolute) or ``postgresql://user@host/db``.
"""

from __future__ import annotations

import os

from ._base import Ledger, LedgerError, LedgerTransaction
from .sqlite import SQLiteLedger

__all__ = [
    "DEFAULT_LEDGER_URL",
    "ENV_LEDGER",
    "Ledger",
    "LedgerError",
    "LedgerTransaction",
    "SQLiteLedger",
    "open_ledger",
]

ENV_LEDGER = "OTEL_TOKENS_LEDGER"
DEFAULT_LEDGER_URL = "sqlite:///otel-tokens-ledger.db"


def open_ledger(url: str | None = None) -> Ledger:
    """Open (and migrate) the ledger at ``url``, else ``$OTEL_TOKENS_LEDGER``, else the default."""
    url = url or os.environ.get(ENV_LEDGER) or DEFAULT_LEDGER_URL
    if url.startswith("sqlite:///"):
        return SQLiteLedger(url[len("sqlite:///") :] or "otel-tokens-ledger.db")
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresLedger

        return PostgresLedger(url)
    raise LedgerError(
        f"unsupported ledger URL {url!r}: use sqlite:///path/to/ledger.db or "
        "postgresql://user@host/db"
    )
