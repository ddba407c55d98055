"""The ``otel-tokens reconcile`` command."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from datetime import UTC, time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from .._arguments import (
    EXIT_BAD_INPUT,
    EXIT_DRIFT,
    EXIT_USAGE,
    Subparsers,
    add_command,
    fail,
    since_arg,
    until_arg,
)
from ..ledger import DEFAULT_LEDGER_URL, ENV_LEDGER, LedgerError, open_ledger
from . import _anthropic, _openai
from ._compare import reconcile
from ._fetch import fetch_pages, read_pages
from ._model import ProviderReport, ReportError
from ._output import summary, write_csv

PROVIDERS = ("openai", "anthropic")
ENV_KEYS = {"openai": "OPENAI_ADMIN_KEY", "anthropic": "ANTHROPIC_ADMIN_KEY"}
BASE_URLS = {"openai": "https://api.openai.com", "anthropic": "https://api.anthropic.com"}


def _threshold(text: str) -> Decimal:
    try:
        value = Decimal(text.strip().removesuffix("%"))
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a percentage: {text!r}") from None
    if not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError(f"must be a percentage >= 0: {text!r}")
    return value


def add_parser(subparsers: Subparsers) -> None:
    """Register ``reconcile`` on the ``otel-tokens`` sub-command parser."""
    p = add_command(subparsers, "reconcile", _cmd_reconcile)
    p.add_argument(
        "--ledger",
        metavar="URL",
        help=f"sqlite:///path.db or postgresql://user@host/db (default: ${ENV_LEDGER}, else "
        f"{DEFAULT_LEDGER_URL})",
    )
    p.add_argument("--provider", choices=PROVIDERS, required=True)
    p.add_argument(
        "--since", type=since_arg, required=True, metavar="DATE", help="first UTC day compared"
    )
    p.add_argument(
        "--until", type=until_arg, required=True, metavar="DATE", help="last UTC day compared"
    )
    p.add_argument(
        "--threshold",
        type=_threshold,
        default=Decimal(1),
        metavar="PERCENT",
        help="exit 6 when any figure drifts more than this, in percent of the provider's "
        "(default: 1)",
    )
    p.add_argument(
        "--admin-key",
        metavar="KEY",
        help="organisation admin key (default: $OPENAI_ADMIN_KEY or $ANTHROPIC_ADMIN_KEY)",
    )
    p.add_argument(
        "--base-url",
        metavar="URL",
        help="the provider's API (default: https://api.openai.com, https://api.anthropic.com)",
    )
    p.add_argument(
        "--report",
        metavar="FILE",
        help="read the usage report from this exported JSON (a page as the API returns it, or "
        "a list of pages) instead of the API",
    )
    p.add_argument(
        "--cost-report",
        metavar="FILE",
        help="with --report: the cost report's JSON (without it, tokens only are compared)",
    )
    p.add_argument(
        "--no-costs", action="store_true", help="compare tokens only (do not fetch the costs)"
    )
    p.add_argument(
        "--scope-tag",
        metavar="TAG",
        help="compare per project (OpenAI) or workspace (Anthropic): the ledger tag that "
        "holds its id (default: the provider's scopes are summed)",
    )
    p.add_argument("--output", metavar="FILE", help="write the FOCUS drift report (CSV) here")


def _whole_days(args: argparse.Namespace) -> str | None:
    for name, value in (("--since", args.since), ("--until", args.until)):
        if value.astimezone(UTC).time() != time():
            return f"{name} must be a UTC date or midnight: the reports are per UTC day"
    if args.since >= args.until:
        return "--since must be before --until"
    if args.cost_report and not args.report:
        return "--cost-report needs --report"
    return None


def _fetch(args: argparse.Namespace) -> ProviderReport:
    module: Any = _openai if args.provider == "openai" else _anthropic
    if args.report:
        usage = read_pages(args.report, "usage report")
        costs = read_pages(args.cost_report, "cost report") if args.cost_report else None
        return module.read(usage, costs)  # type: ignore[no-any-return]
    env = ENV_KEYS[args.provider]
    key = args.admin_key or os.environ.get(env)
    if not key:
        raise ReportError(f"give --admin-key or set {env} (or read an export with --report)")
    base = args.base_url or BASE_URLS[args.provider]
    if args.provider == "openai":
        headers = {"authorization": f"Bearer {key}"}
    else:
        headers = {"x-api-key": key, "anthropic-version": _anthropic.VERSION}
    name = "OpenAI" if args.provider == "openai" else "Anthropic"

    def pages(path: str, query: Sequence[tuple[str, str]], what: str) -> list[Any]:
        return fetch_pages(base, path, query, headers, f"{name} {what}")

    usage = pages(module.USAGE_PATH, module.usage_query(args.since, args.until), "usage report")
    costs = None
    if not args.no_costs:
        costs = pages(module.COSTS_PATH, module.costs_query(args.since, args.until), "costs")
    return module.read(usage, costs)  # type: ignore[no-any-return]


def _cmd_reconcile(args: argparse.Namespace) -> int:
    """compare the ledger with the provider's usage and cost reports

    Reads the organisation usage and cost reports of OpenAI (Usage and Costs APIs) or
    Anthropic (Admin API usage and cost reports), with an admin key or from exported files,
    and compares them with the ledger per UTC day and model: tokens per bucket and cost, the
    drift and its likely cause. Exit 0: all within --threshold; 6: some drift over it; 4: a
    report or ledger that cannot be read; 2: bad options.
    """
    problem = _whole_days(args)
    if problem:
        return fail(problem, EXIT_USAGE, command="reconcile")
    url = args.ledger or os.environ.get(ENV_LEDGER) or DEFAULT_LEDGER_URL
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        # Reading must not create an empty ledger where none was written.
        if path != ":memory:" and not Path(path).is_file():
            return fail(f"no ledger at {path} ({url})", EXIT_BAD_INPUT, command="reconcile")
    try:
        report = _fetch(args)
    except ReportError as exc:
        return fail(exc, EXIT_BAD_INPUT, command="reconcile")
    try:
        ledger = open_ledger(url)
    except LedgerError as exc:
        return fail(exc, EXIT_BAD_INPUT, command="reconcile")
    try:
        result = reconcile(
            report,
            ledger.records(args.since, args.until),
            args.since,
            args.until,
            threshold=args.threshold,
            scope_tag=args.scope_tag,
        )
    except LedgerError as exc:
        return fail(exc, EXIT_BAD_INPUT, command="reconcile")
    finally:
        ledger.close()
    if args.output:
        # Written beside and moved into place: a failed run leaves the last report whole.
        target = Path(args.output)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "w", encoding="utf-8", newline="") as out:
                write_csv(result, out)
            os.replace(tmp, target)
        except OSError as exc:
            return fail(f"cannot write {args.output}: {exc}", EXIT_BAD_INPUT, command="reconcile")
        finally:
            tmp.unlink(missing_ok=True)
    print(summary(result))
    sys.stdout.flush()
    return EXIT_DRIFT if result.exceeded else 0
