"""The in-process pricing exporter: wraps any metric exporter and adds a ledger.

A single-process application needs no collector: under ``opentelemetry-instrument``,

    OTEL_METRICS_EXPORTER=otel_tokens OTEL_TOKENS_LEDGER=sqlite:///ledger.db

prices every ``gen_ai.billing.tokens`` point into exactly-once cost records in the ledger,
adds a ``gen_ai.billing.ledger.cost`` metric (cost of the records written, by provider,
model, bucket, tenant and feature) and hands everything to the wrapped exporter, chosen by
``OTEL_TOKENS_METRICS_EXPORTER`` (any name of the SDK's metric exporter entry points:
``otlp`` by default, which, as in the SDK, means ``otlp_proto_grpc`` or ``otlp_proto_http`` by
``OTEL_EXPORTER_OTLP_METRICS_PROTOCOL``/``OTEL_EXPORTER_OTLP_PROTOCOL``; ``console``, ``none``).
An exporter that is not installed is logged as an error and leaves the ledger and the
application's other telemetry working.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from typing import Any

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from ._safety import log_once
from .ledger import Ledger, open_ledger
from .metering import LedgerCost, LedgerPricer, from_sdk
from .pricing import Catalog
from .records import CostRecord

_log = logging.getLogger(__name__)
ENV_WRAPPED = "OTEL_TOKENS_METRICS_EXPORTER"


# "otlp" is not an entry point: the SDK picks one of these by the OTLP protocol setting
# (its default, and opentelemetry-distro's, is grpc); the wrapped exporter must follow it.
_OTLP_BY_PROTOCOL = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}
_OTLP_PACKAGE = {
    "otlp_proto_grpc": "opentelemetry-exporter-otlp-proto-grpc",
    "otlp_proto_http": "opentelemetry-exporter-otlp-proto-http (pip install 'otel-tokens[otlp]')",
}


class WrappedExporterError(ValueError):
    """The metric exporter named to be wrapped is unknown or not installed."""


def _entry_point_name(name: str) -> str:
    if name != "otlp":
        return name
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "grpc"
    ).strip()
    if protocol not in _OTLP_BY_PROTOCOL:
        raise WrappedExporterError(
            f"{ENV_WRAPPED}=otlp: unsupported OTLP protocol {protocol!r} "
            f"(use {' or '.join(_OTLP_BY_PROTOCOL)})"
        )
    return _OTLP_BY_PROTOCOL[protocol]


def _entry_point_exporter(name: str) -> MetricExporter | None:
    if name in ("", "none"):
        return None
    from importlib.metadata import entry_points

    entry_point = _entry_point_name(name)
    for ep in entry_points(group="opentelemetry_metrics_exporter"):
        if ep.name == entry_point:
            exporter: MetricExporter = ep.load()()
            return exporter
    via = f" (OTLP over its protocol: {entry_point!r})" if entry_point != name else ""
    hint = f"; install {_OTLP_PACKAGE[entry_point]}" if entry_point in _OTLP_PACKAGE else ""
    raise WrappedExporterError(
        f"{ENV_WRAPPED}={name!r}{via}: no such metric exporter entry point is installed{hint}"
    )


class PricingMetricExporter(MetricExporter):
    """Prices token points into a ledger, then delegates to the wrapped exporter."""

    def __init__(
        self,
        wrapped: MetricExporter | None = None,
        *,
        ledger: Ledger | str | None = None,
        catalog: Catalog | None = None,
        wrap_from_env: bool = True,
    ) -> None:
        if wrapped is None and wrap_from_env:
            try:
                wrapped = _entry_point_exporter(os.environ.get(ENV_WRAPPED, "otlp"))
            except Exception as exc:
                # Raising here would make opentelemetry-instrument give up on all telemetry
                # (no spans either); the ledger still gets every point.
                _log.error(
                    "otel-tokens: the metric exporter to wrap cannot be created: %s. Metrics are "
                    "priced into the ledger but not exported anywhere else.",
                    exc,
                )
        self.wrapped = wrapped
        super().__init__(
            preferred_temporality=getattr(wrapped, "_preferred_temporality", None),
            preferred_aggregation=getattr(wrapped, "_preferred_aggregation", None),
        )
        self._ledger_url = ledger if ledger is None or isinstance(ledger, str) else None
        self._catalog = catalog
        self.ledger: Ledger | None = None
        self.pricer: LedgerPricer | None = None
        self._closed = False
        if ledger is not None and not isinstance(ledger, str):
            self.ledger = ledger
            self.pricer = LedgerPricer(ledger, catalog)
        else:
            # A ledger that cannot be opened yet (unwritable path, database down) must not
            # stop the SDK from starting: export goes on and the next export retries. With
            # cumulative temporality nothing is lost: the next point carries the running total.
            self._open()
        self._costs = LedgerCost()
        # Start of the cumulative ledger cost metric: it counts from here (not from the
        # first export, which would give a first point with start == time and a value).
        self._start_ns = time.time_ns()

    def _open(self) -> LedgerPricer | None:
        if self.pricer is None and not self._closed:
            try:
                self.ledger = open_ledger(self._ledger_url)
                self.pricer = LedgerPricer(self.ledger, self._catalog)
            except Exception as exc:
                log_once("exporter.ledger.open", exc)
        return self.pricer

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        try:
            pricer = self._open()
            if pricer is not None:
                result = pricer.ingest(from_sdk(metrics_data))
                if result.rejected:
                    log_once("exporter.rejected " + result.rejected[0])
                metrics_data = self._with_costs(metrics_data, result.records)
        except Exception as exc:  # the ledger is down: keep the app's telemetry flowing
            log_once("exporter.ledger", exc)
        if self.wrapped is None:
            return MetricExportResult.SUCCESS
        return self.wrapped.export(metrics_data, timeout_millis=timeout_millis, **kwargs)

    def _with_costs(self, data: MetricsData, records: list[CostRecord]) -> MetricsData:
        if not data.resource_metrics:
            return data
        self._costs.add(records)
        totals = self._costs.points()
        if not totals:
            return data
        now = max(
            (
                p.time_unix_nano
                for rm in data.resource_metrics
                for sm in rm.scope_metrics
                for m in sm.metrics
                for p in getattr(m.data, "data_points", ())
            ),
            default=time.time_ns(),
        )
        points = [
            NumberDataPoint(
                attributes=attributes,
                start_time_unix_nano=self._start_ns,
                time_unix_nano=now,
                value=float(total),  # exact until here: summed as Decimal
            )
            for attributes, total in totals
        ]
        metric = Metric(
            name=LedgerCost.NAME,
            description=LedgerCost.DESCRIPTION,
            unit=LedgerCost.UNIT,
            data=Sum(
                data_points=points,
                aggregation_temporality=AggregationTemporality.CUMULATIVE,
                is_monotonic=True,
            ),
        )
        first = data.resource_metrics[0]
        scope = ScopeMetrics(
            scope=InstrumentationScope("otel_tokens.exporter"), metrics=[metric], schema_url=""
        )
        patched = ResourceMetrics(
            resource=first.resource,
            scope_metrics=[*first.scope_metrics, scope],
            schema_url=first.schema_url,
        )
        return replace(data, resource_metrics=[patched, *data.resource_metrics[1:]])

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.wrapped.force_flush(timeout_millis) if self.wrapped else True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        try:
            if self.wrapped is not None:
                self.wrapped.shutdown(timeout_millis=timeout_millis, **kwargs)
        finally:
            self._closed = True
            if self.ledger is not None:
                self.ledger.close()
