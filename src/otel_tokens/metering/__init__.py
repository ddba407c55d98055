"""From token metric points to exactly-once cost records (shared by exporter and collector)."""

from ._ledger_cost import MAX_LABELLED_SERIES, LedgerCost, fold
from .meter import IngestResult, Meter
from .points import InvalidPointError, TokenPoint, from_otlp, from_sdk

__all__ = [
    "MAX_LABELLED_SERIES",
    "IngestResult",
    "InvalidPointError",
    "LedgerCost",
    "Meter",
    "TokenPoint",
    "fold",
    "from_otlp",
    "from_sdk",
]
