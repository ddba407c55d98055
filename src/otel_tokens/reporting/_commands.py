"""The ``report`` and ``export`` argparse commands."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

from .._arguments import (
    EXIT_BAD_INPUT,
    EXIT_USAGE,
    Subparsers,
    add_command,
    argument_type,
    fail,
    since_arg,
    until_arg,
)
from ..ledger import DEFAULT_LEDGER_URL, ENV_LEDGER, Ledger, LedgerError, open_ledger
from ._cloudevents import write_cloudevents
from ._common import ExportError, atomic, display_url, utc, window
from ._focus import require_pyarrow, write_focus_csv, write_focus_parquet
from ._forecast import ForecastMethod, midnight
from ._forecast_report import FORECAST_KEYS, build_forecast, forecast_json, forecast_table, month_of
from ._grouping import DEFAULT_BY, GROUP_KEYS, build_report, report_csv, report_json
from ._stripe import (
    EVENT_NAME_FIELDS,
    STRIPE_VALUES,
    event_name_fields,
    load_customer_map,
    stripe_events,
    write_stripe,
)
from ._tables import format_table


def _open(url: str | None) -> tuple[Ledger, str]:
    url = url or os.environ.get(ENV_LEDGER) or DEFAULT_LEDGER_URL
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :] or "otel-tokens-ledger.db"
        # Reading must not create an empty ledger where none was written.
        if path != ":memory:" and not Path(path).is_file():
            raise LedgerError(f"no ledger at {path} ({url}); give --ledger URL or set {ENV_LEDGER}")
    return open_ledger(url), url


def _by_keys(text: str) -> tuple[str, ...]:
    keys = tuple(dict.fromkeys(k.strip() for k in text.split(",") if k.strip()))
    if not keys:
        raise argparse.ArgumentTypeError(f"no keys given; use some of {', '.join(GROUP_KEYS)}")
    unknown = [k for k in keys if k not in GROUP_KEYS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown key(s) {', '.join(unknown)}; use {', '.join(GROUP_KEYS)}"
        )
    return keys


@argument_type
def _event_name(text: str) -> str:
    event_name_fields(text)  # ValueError when malformed or naming an unknown field
    return text


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ledger",
        metavar="URL",
        help=f"sqlite:///path.db or postgresql://user@host/db "
        f"(default: ${ENV_LEDGER}, else {DEFAULT_LEDGER_URL})",
    )
    p.add_argument(
        "--since",
        type=since_arg,
        metavar="WHEN",
        help="records whose charge period ends after WHEN: an ISO 8601 instant with offset "
        "(2026-03-01T12:00:00Z) or a UTC date (from its start)",
    )
    p.add_argument(
        "--until",
        type=until_arg,
        metavar="WHEN",
        help="records whose charge period ends at or before WHEN: an instant, or a UTC date "
        "(through its end)",
    )


def add_parsers(subparsers: Subparsers) -> None:
    """Register ``report`` and ``export`` on the ``otel-tokens`` sub-command parser."""
    _add_report(subparsers)
    _add_export(subparsers)


def _add_report(subparsers: Subparsers) -> None:
    r = add_command(subparsers, "report", _cmd_report)
    _add_common(r)
    r.add_argument(
        "--by",
        type=_by_keys,
        default=DEFAULT_BY,
        metavar="KEYS",
        help=f"comma-separated, of: {', '.join(GROUP_KEYS)} (default: model); day, hour and "
        "month are UTC",
    )
    r.add_argument("--format", choices=("table", "json", "csv"), default="table")
    r.add_argument(
        "--forecast",
        action="store_true",
        help="project each group's cost and tokens to the end of the period (an estimate, "
        "apart from what was billed), with the method and its backtested error; the cut-off "
        "is --until (default: now), the period starts at --since (default: the start of the "
        "cut-off's UTC month)",
    )
    r.add_argument(
        "--forecast-to",
        type=until_arg,
        metavar="WHEN",
        help="--forecast: the end of the period (default: the end of the cut-off's UTC month)",
    )


def _add_export(subparsers: Subparsers) -> None:
    e = add_command(subparsers, "export", _cmd_export)
    _add_common(e)
    e.add_argument("--format", choices=("focus", "cloudevents", "stripe"), required=True)
    e.add_argument("--output", metavar="FILE", help="write here (default: standard output)")
    e.add_argument(
        "--stripe-value",
        choices=STRIPE_VALUES,
        default="tokens",
        help="stripe: the meter value: token count (default) or billed cost in millionths "
        "of the currency unit",
    )
    e.add_argument(
        "--customer-map",
        action="append",
        metavar="TENANT=ID|FILE",
        help="stripe: tenant to Stripe customer id (repeatable; or a file of TENANT=ID lines "
        "or a JSON object); default: the tenant is the customer id",
    )
    e.add_argument(
        "--event-name",
        type=_event_name,
        metavar="NAME",
        help="stripe: the meter's event_name (default: llm_tokens, or llm_cost_micros); may "
        f"use {', '.join('{' + f + '}' for f in EVENT_NAME_FIELDS)}",
    )
    e.add_argument(
        "--default-subject",
        metavar="SUBJECT",
        help="cloudevents: subject of events whose record has no tenant",
    )


def _check_window(args: argparse.Namespace) -> str | None:
    if args.since is not None and args.until is not None and args.since >= args.until:
        return f"--since ({utc(args.since)}) must be before --until ({utc(args.until)})"
    return None


def _cmd_report(args: argparse.Namespace) -> int:
    """cost by tenant, model, day, ... from a ledger

    Print cost records grouped by --by: quantities, billed and list cost, exact to the last
    decimal place, one total per currency. Unpriced usage is shown apart, with no cost. Records
    are selected by charge period end: since < end <= until.
    """
    problem = _check_window(args)
    if problem:
        return fail(problem, EXIT_USAGE, command="report")
    if args.forecast:
        return _forecast(args)
    if args.forecast_to is not None:
        return fail("--forecast-to applies to --forecast only", EXIT_USAGE, command="report")
    try:
        ledger, url = _open(args.ledger)
    except LedgerError as exc:
        return fail(exc, command="report")
    try:
        report = build_report(
            ledger.records(args.since, args.until), args.by, since=args.since, until=args.until
        )
    except LedgerError as exc:
        return fail(exc, command="report")
    finally:
        ledger.close()
    if not report.records:
        print(
            f"otel-tokens: no cost records in ledger {display_url(url)}"
            f"{window(args.since, args.until)}",
            file=sys.stderr,
        )
    if args.format == "json":
        print(json.dumps(report_json(report, url), indent=2, ensure_ascii=False))
    elif args.format == "csv":
        report_csv(report, sys.stdout)
    elif report.records:
        print(format_table(report, url))
    return 0


def _forecast(args: argparse.Namespace) -> int:
    at = args.until or datetime.now(UTC)
    month_start, month_end = month_of(at)
    start = args.since or month_start
    end = args.forecast_to or month_end
    problem = None
    if args.format == "csv":
        problem = "--forecast prints a table or JSON (--format table or json)"
    elif end <= at:
        problem = f"the period's end ({utc(end)}) must be after the cut-off ({utc(at)})"
    elif start >= at:
        problem = f"the period's start ({utc(start)}) must be before the cut-off ({utc(at)})"
    elif any(k not in FORECAST_KEYS for k in args.by):
        problem = f"--forecast groups by some of {', '.join(FORECAST_KEYS)} (not by time)"
    if problem:
        return fail(problem, EXIT_USAGE, command="report")
    method = ForecastMethod()
    # Enough history for the trailing window at every backtest cut-off.
    days = method.window_days + method.backtest_cutoffs + method.backtest_horizon_days
    history = min(start, midnight(at.astimezone(UTC).date()) - timedelta(days=days))
    try:
        ledger, url = _open(args.ledger)
    except LedgerError as exc:
        return fail(exc, command="report")
    try:
        report = build_forecast(
            ledger.records(history, at), args.by, at=at, period_start=start, period_end=end
        )
    except LedgerError as exc:
        return fail(exc, EXIT_BAD_INPUT, command="report")
    finally:
        ledger.close()
    if not report.lines:
        print(
            f"otel-tokens: no cost records in ledger {display_url(url)}{window(history, at)}",
            file=sys.stderr,
        )
    if args.format == "json":
        print(json.dumps(forecast_json(report, url), indent=2, ensure_ascii=False))
    else:
        print(forecast_table(report, url))
    return 0


@contextmanager
def _text_output(path: str | None) -> Iterator[IO[str]]:
    if path is None or path == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    with atomic(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as out:
        yield out


def _cmd_export(args: argparse.Namespace) -> int:
    """write ledger records as FOCUS, CloudEvents or Stripe meter events

    focus: FOCUS 1.2 CSV, or Parquet when --output ends in .parquet (needs pyarrow); unpriced
    records are left out and counted on stderr. cloudevents: CloudEvents JSON lines for
    OpenMeter, deterministic ids, unpriced records with null costs. stripe: Stripe meter event
    payloads as JSON lines, the record id as identifier; nothing is sent.
    """
    problem = _check_window(args)
    parquet = bool(args.output) and args.output.lower().endswith(".parquet")
    if not problem and parquet and args.format != "focus":
        problem = "Parquet output is for --format focus only"
    if not problem and args.format != "stripe":
        given = [
            opt
            for opt, value in (
                ("--customer-map", args.customer_map),
                ("--event-name", args.event_name),
                ("--stripe-value", None if args.stripe_value == "tokens" else 1),
            )
            if value
        ]
        if given:
            problem = f"{', '.join(given)} apply to --format stripe only"
    if not problem and args.default_subject is not None and args.format != "cloudevents":
        problem = "--default-subject applies to --format cloudevents only"
    if problem:
        return fail(problem, EXIT_USAGE, command="export")
    try:
        customers = load_customer_map(args.customer_map) if args.customer_map is not None else None
        if parquet:
            require_pyarrow()
        ledger, url = _open(args.ledger)
    except (ExportError, LedgerError) as exc:
        return fail(exc, command="export")
    try:
        records = list(ledger.records(args.since, args.until))
        where = args.output or "standard output"
        if args.format == "focus" and parquet:
            result = write_focus_parquet(records, args.output)
            what = "FOCUS rows"
        elif args.format == "focus":
            with _text_output(args.output) as out:
                result = write_focus_csv(records, out)
            what = "FOCUS rows"
        elif args.format == "cloudevents":
            with _text_output(args.output) as out:
                result = write_cloudevents(records, out, args.default_subject)
            what = "CloudEvents"
        else:
            events, result = stripe_events(
                records,
                value=args.stripe_value,
                customers=customers,
                event_name=args.event_name,
            )
            with _text_output(args.output) as out:
                write_stripe(events, out)
            what = "Stripe meter events"
    except (ExportError, LedgerError) as exc:
        return fail(exc, command="export")
    except OSError as exc:
        return fail(f"cannot write {args.output}: {exc}", command="export")
    finally:
        ledger.close()
    if not records:
        print(
            f"otel-tokens: no cost records in ledger {display_url(url)}"
            f"{window(args.since, args.until)}",
            file=sys.stderr,
        )
    print(f"otel-tokens: wrote {result.written} {what} to {where}", file=sys.stderr)
    for why, count in sorted(result.left_out.items()):
        print(f"otel-tokens: left out {count} record(s): {why}", file=sys.stderr)
    for note in result.notes:
        print(f"otel-tokens: note: {note}", file=sys.stderr)
    return 0
