"""Where a benchmark's JSON report goes: ``--json -`` to stdout, ``--json FILE`` to a file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_json(destination: str | None, report: Any) -> None:
    """Write ``report`` as indented JSON to ``destination`` (``-``: stdout; none: nowhere)."""
    if not destination:
        return
    text = json.dumps(report, indent=2, ensure_ascii=False)
    if destination == "-":
        print(text)
    else:
        Path(destination).write_text(text + "\n")
