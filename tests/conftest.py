"""Suite-wide fixtures."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from _services import PG_BASE, REDIS_URL, pg_schema_url
from otel_tokens.counting import install_tiktoken_files


@pytest.fixture(scope="session", autouse=True)
def _tiktoken_oracle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tests check our local counts against unmodified ``tiktoken.get_encoding``, which
    downloads its encodings; with no network, give it the encodings the package ships (the
    same bytes, verified by sha256) through its own cache folder. otel-tokens itself does not
    use this folder (tests/test_counting.py proves counting needs none)."""
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        yield
        return
    cache = tmp_path_factory.mktemp("tiktoken")
    install_tiktoken_files(None, str(cache))
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
    try:
        yield
    finally:
        del os.environ["TIKTOKEN_CACHE_DIR"]


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL on a fresh schema (dropped afterwards), so tests running at the same
    time on the shared server never see each other's tables; skips when PostgreSQL is not
    reachable at ``PG_BASE``."""
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(PG_BASE, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        pytest.skip(f"PostgreSQL unreachable at {PG_BASE}: {exc}")
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield pg_schema_url(schema)
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A ledger URL of each kind: an SQLite file in the test's folder, then PostgreSQL on a
    fresh schema (skipped when unreachable)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own on the Redis at ``REDIS_URL`` (its keys are deleted
    afterwards); skips when Redis is not reachable."""
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip(f"no Redis at {REDIS_URL}")
    prefix = f"otel-tokens-test-{uuid.uuid4().hex}"
    yield prefix
    keys = list(client.scan_iter(match="{" + prefix + "}:*"))
    if keys:
        client.delete(*keys)
    client.close()
