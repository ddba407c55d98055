"""The runnable examples run, offline, and show what their READMEs say."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

from _processes import run
from _services import REDIS_URL

ROOT = Path(__file__).resolve().parents[1]


def test_multi_tenant_example(tmp_path: Path) -> None:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OPENAI_", "ANTHROPIC_"))
    }
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    done = run(
        [sys.executable, str(ROOT / "examples" / "multi_tenant" / "run.py"), "--ledger", ledger],
        env=env,
        cwd=tmp_path,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    # Both tenants served; globex's prepaid pool runs out and is refused before sending.
    assert "acme request 3: HTTP 200" in out
    assert "globex request 0: HTTP 200" in out
    assert "HTTP 402" in out and "globex-prepaid" in out
    # The ledger report shows both tenants, and the budget table every budget.
    report = out[out.index("Cost by tenant and model") :]
    assert "acme" in report and "globex" in report and "total" in report
    for budget in ("acme-monthly", "globex-prepaid", "all-tenants-daily"):
        assert budget in out


def _globex_tokens(ledger_url: str) -> int:
    from otel_tokens.ledger import open_ledger

    ledger = open_ledger(ledger_url)
    try:
        return sum(r.quantity for r in ledger.records() if r.tenant == "globex")
    finally:
        ledger.close()


@pytest.mark.parametrize("store", ["redis", "memory"])
def test_multi_tenant_example_twice_sends_nothing_it_cannot_pay_for(
    tmp_path: Path, store: str
) -> None:
    """Run twice: the second run's globex requests, whose pool cannot pay for a whole
    request any more, are refused before any provider call is sent. On Redis they used to
    send and bill the workflow's first call, then answer 402; on the memory store (a new
    process) the pool was full again and the ledger showed 816 used of 800."""
    client = None
    if store == "redis":
        redis = pytest.importorskip("redis")
        client = redis.Redis.from_url(REDIS_URL)
        try:
            client.ping()
        except redis.RedisError as exc:
            pytest.skip(f"Redis is not running at {REDIS_URL}: {exc}")
    # The example's budgets under names of this test alone (the store keys are by name).
    suffix = "-" + uuid.uuid4().hex[:12]
    config = (ROOT / "examples" / "multi_tenant" / "budgets.yaml").read_text(encoding="utf-8")
    for name in ("acme-monthly", "globex-prepaid", "all-tenants-daily"):
        config = config.replace(f"name: {name}", f"name: {name}{suffix}")
    budgets = tmp_path / "budgets.yaml"
    budgets.write_text(config, encoding="utf-8")
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OPENAI_", "ANTHROPIC_"))
    }
    env.update(OTEL_TOKENS_BUDGETS=str(budgets))
    if client is not None:
        env["OTEL_TOKENS_BUDGET_STORE"] = REDIS_URL
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    runs, spent = [], []
    try:
        for _ in range(2):
            done = run(
                [sys.executable, str(ROOT / "examples/multi_tenant/run.py"), "--ledger", ledger],
                env=env,
                cwd=tmp_path,
                timeout=180,
            )
            assert done.returncode == 0, done.stderr
            runs.append(done.stdout)
            spent.append(_globex_tokens(ledger))
    finally:
        if client is not None:
            keys = list(client.scan_iter(match=f"*{suffix}*"))
            if keys:
                client.delete(*keys)
    first, second = runs
    assert spent[0] > 0 and spent[1] == spent[0]  # nothing sent for globex in the second run
    assert "globex request 0: HTTP 200" in first and "globex request 3: HTTP 402" in first
    for i in range(4):
        assert f"globex request {i}: HTTP 402" in second
        assert f"acme request {i}: HTTP 200" in second
    assert "the calls of this block may use up to" in second
    (row,) = [line.split() for line in second.splitlines() if line.startswith("globex-prepaid")]
    assert int(row[3]) <= int(row[4])  # spent within the pool's limit
