"""Where the suite finds PostgreSQL and Redis: one place, one environment variable each.

Test modules that need a URL at import time (a subprocess worker, a module constant) import
it from here; everything else uses the ``pg_url`` / ``redis_prefix`` fixtures in
``tests/conftest.py``."""

from __future__ import annotations

import os

_PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"
# OTEL_TOKENS_TEST_PG is the name bench/ also reads; OTEL_TOKENS_TEST_POSTGRES is what
# tests/test_ledger.py used to read, still accepted so nobody's setup breaks.
PG_BASE = os.environ.get("OTEL_TOKENS_TEST_PG") or os.environ.get(
    "OTEL_TOKENS_TEST_POSTGRES", _PG_DEFAULT
)
REDIS_URL = os.environ.get("OTEL_TOKENS_TEST_REDIS", "redis://127.0.0.1:6379/0")


def pg_schema_url(schema: str) -> str:
    """``PG_BASE`` with ``schema`` as the connection's search_path."""
    sep = "&" if "?" in PG_BASE else "?"
    return f"{PG_BASE}{sep}options=-csearch_path%3D{schema}"
