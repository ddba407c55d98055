"""The runnable examples run, offline, and show what their READMEs say."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_multi_tenant_example(tmp_path: Path) -> None:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OPENAI_", "ANTHROPIC_"))
    }
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "multi_tenant" / "run.py"), "--ledger", ledger],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
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
