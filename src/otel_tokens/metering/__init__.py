"""From token metric points to exactly-once cost records (shared by exporter and collector)."""

from .meter import IngestResult, Meter
from .points import InvalidPointError, TokenPoint, from_otlp, from_sdk

__all__ = ["IngestResult", "InvalidPointError", "Meter", "TokenPoint", "from_otlp", "from_sdk"]
