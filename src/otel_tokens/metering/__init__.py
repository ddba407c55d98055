"""From token metric points to exactly-once cost records (shared by exporter and collector)."""

from ._ledger_cost import MAX_LABELLED_SERIES, LedgerCost, fold
from ._otlp import SeriesCache, attributes_of, from_otlp
from ._pricer import IngestResult, LedgerPricer
from .points import InvalidPointError, TokenPoint, from_sdk

__all__ = [
    "MAX_LABELLED_SERIES",
    "IngestResult",
    "InvalidPointError",
    "LedgerCost",
    "LedgerPricer",
    "SeriesCache",
    "TokenPoint",
    "attributes_of",
    "fold",
    "from_otlp",
    "from_sdk",
]
