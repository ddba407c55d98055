"""``otel-tokens reconcile``: does the ledger agree with what the provider will invoice?

The provider's organisation usage and cost reports (OpenAI's Usage and Costs APIs,
Anthropic's Admin API usage and cost reports), fetched with an admin key or read from an
exported file, are compared with the ledger per UTC day and model (and project or workspace
when the ledger's records carry it as a tag): tokens per bucket and cost, the drift, and its
likely cause. See docs/reconcile.md.

* ``_model.py``: the reports as plain data (``UsageRow``, ``CostRow``, ``ProviderReport``);
* ``_pages.py``, ``_openai.py``, ``_anthropic.py``: the providers' JSON to that data;
* ``_fetch.py``: paging through a report over HTTP (standard library), or an exported file;
* ``_compare.py``: the comparison and the causes; ``_output.py``: the FOCUS drift CSV and
  the summary; ``_command.py``: the command.
"""

from __future__ import annotations

from ._command import add_parser
from ._compare import CAUSES, DriftLine, Finding, Reconciliation, reconcile
from ._model import CostRow, ProviderReport, ReportError, UsageRow
from ._output import COLUMNS, write_csv

__all__ = [
    "CAUSES",
    "COLUMNS",
    "CostRow",
    "DriftLine",
    "Finding",
    "ProviderReport",
    "Reconciliation",
    "ReportError",
    "UsageRow",
    "add_parser",
    "reconcile",
    "write_csv",
]
