"""The pricing collector: an OTLP receiver (HTTP and gRPC) that prices token points into
exactly-once cost records, serves Prometheus metrics and forwards to an upstream.

Run it with ``otel-tokens collector`` (see ``--help``) or in-process with `Collector`.
`Collector` needs the ``collector`` extra (opentelemetry-proto, protobuf, grpcio); it is
imported lazily so that ``otel-tokens`` and its ``--help`` work without that extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import CollectorConfig, ConfigError

if TYPE_CHECKING:
    from .service import Collector

__all__ = ["Collector", "CollectorConfig", "ConfigError"]


def __getattr__(name: str) -> Any:
    if name == "Collector":
        from .service import Collector

        return Collector
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
