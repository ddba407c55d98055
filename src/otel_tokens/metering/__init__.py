"""From token metric points to exactly-once cost records (shared by exporter and collector)."""

from ._ledger_cost import MAX_LABELLED_SERIES, LedgerCost, fold
from ._pricer import IngestResult, LedgerPricer
from .points import InvalidPointError, TokenPoint, from_otlp, from_sdk

__all__ = [
    "MAX_LABELLED_SERIES",
    "IngestResult",
    "InvalidPointError",
    "LedgerCost",
    "LedgerPricer",
    "TokenPoint",
    "fold",
    "from_otlp",
    "from_sdk",
]
