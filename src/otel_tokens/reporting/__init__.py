"""``otel-tokens report`` and ``otel-tokens export``: read a ledger, print or write its records.

``report`` prints cost grouped by chosen keys: quantities, billed and list cost summed as exact
Decimals (full precision, never float), one total per currency, unpriced usage apart (it has
no cost, never cost 0).

``export`` writes the records for other systems (nothing is sent):

* ``focus``: FOCUS 1.2 CSV (Parquet when the output ends in ``.parquet``), one row per priced
  record; unpriced records are left out and counted on stderr (SPEC section 7);
* ``cloudevents``: CloudEvents 1.0 JSON lines (structured mode) as OpenMeter ingests them,
  deterministic ids, unpriced records with null costs;
* ``stripe``: Stripe Billing meter event payloads (``POST /v1/billing/meter_events``), JSON
  lines, the record id as the idempotency ``identifier``.

``report --forecast`` projects each group's cost and tokens to the end of the period (an
estimate, apart from what was billed) and backtests the method on the ledger's own history
(``_forecast.py``: the method; ``_forecast_report.py``: the groups and their output).

Both select records by charge period end, ``since < ChargePeriodEnd <= until``, as the ledger
does; the ``day``, ``hour`` and ``month`` keys (UTC) follow the same rule, so a record ending
exactly at midnight counts in the day before, and ``--until 2026-03-31`` takes the whole day.

What every ``otel-tokens`` command shares on its command line (``add_command``, ``fail``, the
exit codes, the instant parsing) lives in ``otel_tokens._arguments``; this package re-exports
the names it always exported.
"""

from __future__ import annotations

from .._arguments import (
    EXIT_BAD_INPUT,
    EXIT_UNPRICED,
    EXIT_USAGE,
    Subparsers,
    add_command,
    fail,
    instant_arg,
    parse_instant,
)
from ._cloudevents import cloudevent, write_cloudevents
from ._commands import add_parsers
from ._common import ExportError, ExportResult
from ._focus import focus_cells, focus_columns, write_focus_csv, write_focus_parquet
from ._forecast import (
    Backtest,
    DailyRates,
    Forecast,
    ForecastMethod,
    backtest,
    daily_totals,
    fit,
    forecast,
)
from ._forecast_report import (
    FORECAST_KEYS,
    ForecastLine,
    ForecastReport,
    build_forecast,
    forecast_json,
    forecast_table,
)
from ._grouping import (
    DEFAULT_BY,
    GROUP_KEYS,
    Report,
    ReportLine,
    build_report,
    report_csv,
    report_json,
)
from ._stripe import load_customer_map, stripe_events, write_stripe
from ._tables import format_table

__all__ = [
    "DEFAULT_BY",
    "EXIT_BAD_INPUT",
    "EXIT_UNPRICED",
    "EXIT_USAGE",
    "FORECAST_KEYS",
    "GROUP_KEYS",
    "Backtest",
    "DailyRates",
    "ExportError",
    "ExportResult",
    "Forecast",
    "ForecastLine",
    "ForecastMethod",
    "ForecastReport",
    "Report",
    "ReportLine",
    "Subparsers",
    "add_command",
    "add_parsers",
    "backtest",
    "build_forecast",
    "build_report",
    "cloudevent",
    "daily_totals",
    "fail",
    "fit",
    "focus_cells",
    "focus_columns",
    "forecast",
    "forecast_json",
    "forecast_table",
    "format_table",
    "instant_arg",
    "load_customer_map",
    "parse_instant",
    "report_csv",
    "report_json",
    "stripe_events",
    "write_cloudevents",
    "write_focus_csv",
    "write_focus_parquet",
    "write_stripe",
]
