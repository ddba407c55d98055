"""The ``otel-tokens`` command: thin over the library modules."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal, Inexact, localcontext
from importlib.metadata import version as _dist_version
from typing import TYPE_CHECKING

from . import reporting
from ._arguments import EXIT_UNPRICED, Subparsers, add_command, fail, instant_arg
from .collector.cli import add_parser as add_collector_parser
from .pricing import (
    PROCESSING_VALUES,
    Catalog,
    PriceFileError,
    PriceResult,
    Processing,
    correction_status,
    decimal_str,
    known_to_catalog,
)
from .reconcile import add_parser as add_reconcile_parser
from .usage import InvalidUsageError, TokenUsage

if TYPE_CHECKING:
    from .budgets import Budget
    from .ledger import Ledger

_LEDGER_HELP = "ledger URL (default: $OTEL_TOKENS_LEDGER or sqlite:///otel-tokens-ledger.db)"


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otel-tokens",
        description="Exact, billable LLM token usage and cost on OpenTelemetry.",
    )
    parser.add_argument("--version", action="version", version=_dist_version("otel-tokens"))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in _COMMANDS:
        register(sub)
    return parser


def _add_budgets(sub: Subparsers) -> None:
    b = add_command(sub, "budgets", _cmd_budgets)
    b.add_argument("--ledger", help=_LEDGER_HELP)
    b.add_argument("--budgets", help="budgets YAML (default: $OTEL_TOKENS_BUDGETS)")
    b.add_argument("--at", type=instant_arg, help="evaluate at this instant instead of now")
    b.add_argument("--json", action="store_true", help="print JSON")
    b.add_argument(
        "--forecast",
        action="store_true",
        help="add each budget's forecast: use at the end of the period and when it runs out "
        "(estimates, with the method and its backtested error)",
    )


def _cmd_budgets(args: argparse.Namespace) -> int:
    """spent, remaining and projected spend of each budget, from the ledger

    For each budget in the budgets file: what its scope spent in the current period (from the
    ledger's cost records, exact), the remaining amount and the projected end-of-period spend at
    the current rate. With --forecast: the use expected at the end of the period and when the
    budget runs out, by a day-of-week forecast of the ledger's history (estimates, with the
    method and its backtested error).
    """
    import os

    from .budgets import ENV_BUDGETS, BudgetConfigError, budget_status, load_budgets
    from .ledger import LedgerError, open_ledger

    path = args.budgets or os.environ.get(ENV_BUDGETS)
    if not path:
        return fail(f"give --budgets FILE or set {ENV_BUDGETS}")
    try:
        budgets = load_budgets(path)
        ledger = open_ledger(args.ledger)
    except (BudgetConfigError, LedgerError) as exc:
        return fail(exc)
    if args.forecast:
        try:
            return _budget_forecast(budgets, ledger, args)
        finally:
            ledger.close()
    try:
        rows = budget_status(budgets, ledger.records(), args.at)
    finally:
        ledger.close()
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "budget": r.budget.name,
                        "unit": r.budget.unit,
                        "mode": r.budget.mode,
                        "window": r.window,
                        "spent": decimal_str(r.spent),
                        "limit": decimal_str(r.limit),
                        "remaining": decimal_str(r.remaining),
                        "projected": None if r.projected is None else decimal_str(r.projected),
                    }
                    for r in rows
                ],
                indent=2,
            )
        )
        return 0
    header = ("budget", "mode", "period", "spent", "limit", "remaining", "projected", "unit")
    table = [header] + [
        (
            r.budget.name,
            r.budget.mode,
            r.window,
            decimal_str(r.spent),
            decimal_str(r.limit),
            decimal_str(r.remaining),
            "-" if r.projected is None else decimal_str(r.projected.quantize(Decimal("1e-6"))),
            r.budget.unit,
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _budget_forecast(budgets: list[Budget], ledger: Ledger, args: argparse.Namespace) -> int:
    from .budgets import budget_forecast
    from .ledger import LedgerError
    from .reporting import ForecastMethod

    method = ForecastMethod()
    at = args.at or datetime.now(UTC)
    # Each budget's window for its status, and the trailing window at every backtest cut-off.
    days = method.window_days + method.backtest_cutoffs + method.backtest_horizon_days
    history = datetime.combine(at.astimezone(UTC).date(), datetime.min.time(), UTC)
    since = min([history - timedelta(days=days), *(b.window(at)[0] for b in budgets)])
    try:
        rows = budget_forecast(budgets, ledger.records(since, at), at, method)
    except LedgerError as exc:
        return fail(exc)

    def estimate(value: Decimal | None) -> str | None:
        # An estimate claims no more precision than a millionth (a token for token budgets).
        if value is None:
            return None
        return decimal_str(value.quantize(Decimal("1e-6")))

    def instant(value: datetime | None) -> str | None:
        return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")

    if args.json:
        print(
            json.dumps(
                {
                    "method": method.describe(),
                    "estimate": "projected and runs_out are forecasts, not billed amounts",
                    "budgets": [
                        {
                            "budget": r.status.budget.name,
                            "unit": r.status.budget.unit,
                            "mode": r.status.budget.mode,
                            "window": r.status.window,
                            "spent": decimal_str(r.status.spent),
                            "limit": decimal_str(r.status.limit),
                            "remaining": decimal_str(r.status.remaining),
                            "projected": estimate(r.projected),
                            "runs_out": instant(r.runs_out),
                            "history_days": None if r.rates is None else r.rates.history_days,
                            "backtest_mape_percent": (
                                None if r.backtest.mape is None else str(r.backtest.mape)
                            ),
                            "backtest_cutoffs": r.backtest.cutoffs,
                        }
                        for r in rows
                    ],
                },
                indent=2,
            )
        )
        return 0
    header = (
        "budget",
        "period",
        "spent",
        "limit",
        "remaining",
        "forecast",
        "runs out",
        "MAPE",
        "unit",
    )
    table = [header] + [
        (
            r.status.budget.name,
            r.status.window,
            decimal_str(r.status.spent),
            decimal_str(r.status.limit),
            decimal_str(r.status.remaining),
            estimate(r.projected) or "-",
            instant(r.runs_out) or "-",
            "-" if r.backtest.mape is None else f"{r.backtest.mape}% ({r.backtest.cutoffs})",
            r.status.budget.unit,
        )
        for r in rows
    ]
    print("spent, limit, remaining: exact, from the ledger; forecast (use at the end of the")
    print("period) and runs out: ESTIMATES; MAPE: backtest error (cut-offs)")
    print(f"method: {method.describe()}")
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _add_reprice(sub: Subparsers) -> None:
    r = add_command(sub, "reprice", _cmd_reprice)
    r.add_argument("--ledger", help=_LEDGER_HELP)
    r.add_argument("--prices", help="user price file (default: $OTEL_TOKENS_PRICES)")
    r.add_argument("--since", type=instant_arg, help="usage whose period ends after this instant")
    r.add_argument("--until", type=instant_arg, help="usage whose period ends at or before it")
    r.add_argument("--tenant", help="only this tenant's usage")
    r.add_argument("--model", help="only usage of this model (served, or priced by)")
    r.add_argument("--dry-run", action="store_true", help="show the adjustments, write none")
    r.add_argument("--json", action="store_true", help="print one JSON object")


def _cmd_reprice(args: argparse.Namespace) -> int:
    """re-price stored usage with the current prices: writes adjustment records

    Price the ledger's usage records of a period (and a tenant, a model) with the current
    catalog (genai-prices, otel-tokens' corrections and --prices) and write one adjustment
    record for each whose billed cost differs: ChargeCategory Adjustment, the difference as
    cost, quantity 0, x_Adjusts the usage record's id. Records are never edited; running it
    again adds nothing. Usage with no price now is left as it is.
    """
    from .ledger import LedgerError, open_ledger
    from .metering import LedgerPricer

    try:
        catalog = Catalog.load(args.prices)
        ledger = open_ledger(args.ledger)
    except (PriceFileError, LedgerError) as exc:
        return fail(exc)
    try:
        result = LedgerPricer(ledger, catalog).reprice(
            since=args.since,
            until=args.until,
            tenant=args.tenant,
            model=args.model,
            dry_run=args.dry_run,
        )
    finally:
        ledger.close()
    differences: dict[str, Decimal] = {}
    with localcontext(Context(prec=80, traps=[Inexact])):  # exact sums, or an error
        for a in result.adjustments:
            assert a.billed_cost is not None
            differences[a.currency] = differences.get(a.currency, Decimal(0)) + a.billed_cost
    summary = {
        "catalog_version": catalog.version,
        "dry_run": args.dry_run,
        "examined": result.examined,
        "adjustments": len(result.adjustments),
        "billed_difference": {c: decimal_str(v) for c, v in sorted(differences.items())},
        "unchanged": result.unchanged,
        "still_unpriced": result.still_unpriced,
        "not_adjusted": result.not_adjusted,
        "duplicates": result.duplicates,
    }
    if args.json:
        summary["adjustment_records"] = [a.to_cloudevent() for a in result.adjustments]
        print(json.dumps(summary, indent=2))
        return 0
    verb = "would write" if args.dry_run else "wrote"
    print(
        f"{result.examined} usage record(s) priced with {catalog.version}: {verb} "
        f"{len(result.adjustments)} adjustment(s); {result.unchanged} already at this price, "
        f"{result.still_unpriced} still unpriced"
    )
    for currency, value in sorted(differences.items()):
        print(f"  billed difference: {decimal_str(value)} {currency}")
    for a in result.adjustments:
        print(
            f"  {a.adjusts}: {a.model} {a.bucket} {a.period_end.isoformat()} "
            f"{decimal_str(a.adjusted_from) if a.adjusted_from is not None else 'unpriced'} "
            f"-> {_signed(a.billed_cost or Decimal(0))} ({a.price_id})"
        )
    for why in result.not_adjusted:
        print(f"  not adjusted: {why}")
    if result.duplicates:
        print(
            f"  {len(result.duplicates)} usage record(s) stored twice before record ids "
            "stopped naming the price (see docs/pricing.md): " + ", ".join(result.duplicates)
        )
    return 0


def _signed(value: Decimal) -> str:
    return ("+" if value >= 0 else "") + decimal_str(value)


def _add_demo(sub: Subparsers) -> None:
    d = add_command(sub, "demo", _cmd_demo)
    d.add_argument("--port", type=int, default=0, help="local server port (default: any free)")


def _cmd_demo(args: argparse.Namespace) -> int:
    """run the demo app under opentelemetry-instrument

    Run a small app making OpenAI, Anthropic, Gemini and Bedrock calls under
    opentelemetry-instrument and print a cost summary. With a provider's key set
    (OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY or GOOGLE_API_KEY,
    AWS_BEARER_TOKEN_BEDROCK or DEMO_BEDROCK=1) it calls the real APIs of the providers set;
    with none, it starts local fake servers that speak each provider's wire format (from a
    clone).
    """
    import contextlib
    import os

    from .demo import FakesMissingError, offline_providers, wants_offline

    env = dict(os.environ)
    with contextlib.ExitStack() as stack:
        if wants_offline(env):
            try:
                offline = stack.enter_context(offline_providers(args.port))
            except FakesMissingError as error:
                return fail(str(error))
            env.update(offline.environment)
            print(
                "No provider API key set: calling the bundled local servers "
                f"(OpenAI and Anthropic at {offline.url}, Gemini, Bedrock), which speak each "
                "provider's wire format.\n",
                flush=True,
            )
        code = _run_demo_app(env)
    return code


def _run_demo_app(env: dict[str, str]) -> int:
    import shutil
    import subprocess
    from pathlib import Path

    env.setdefault("OTEL_SERVICE_NAME", "otel-tokens-demo")
    env.setdefault("OTEL_TRACES_EXPORTER", "otel_tokens_summary")
    env.setdefault("OTEL_METRICS_EXPORTER", "none")
    env.setdefault("OTEL_LOGS_EXPORTER", "none")
    here = Path(sys.executable).parent
    launcher = here / "opentelemetry-instrument"
    program = str(launcher) if launcher.exists() else shutil.which("opentelemetry-instrument")
    if program is None:
        return fail(
            "opentelemetry-instrument not found; install the demo extra: "
            "pip install 'otel-tokens[demo]'"
        )
    return subprocess.call([program, sys.executable, "-m", "otel_tokens.demo.app"], env=env)


def _add_tiktoken_cache(sub: Subparsers) -> None:
    t = add_command(sub, "tiktoken-cache", _cmd_tiktoken_cache)
    t.add_argument("source")
    t.add_argument("cache_dir")


def _cmd_tiktoken_cache(args: argparse.Namespace) -> int:
    """install tiktoken encoding files for offline counting

    Copy o200k_base.tiktoken / cl100k_base.tiktoken from SOURCE into CACHE_DIR under the names
    tiktoken looks for; then set TIKTOKEN_CACHE_DIR=CACHE_DIR.
    """
    from .counting import install_tiktoken_files

    installed = install_tiktoken_files(args.source, args.cache_dir)
    if not installed:
        return fail(f"no *.tiktoken files found in {args.source}")
    print(f"installed {', '.join(installed)}; now: export TIKTOKEN_CACHE_DIR={args.cache_dir}")
    return 0


def _add_price(sub: Subparsers) -> None:
    p = add_command(sub, "price", _cmd_price)
    p.add_argument("model", help="model name as the provider reports it, e.g. gpt-4o")
    p.add_argument("--provider", help="gen_ai.provider.name (openai, anthropic, gcp.gemini, ...)")
    p.add_argument("--input", type=_count, required=True, help="input tokens, inclusive")
    p.add_argument("--output", type=_count, required=True, help="output tokens, inclusive")
    p.add_argument("--cache-read", type=_count, default=0, help="of --input: cache reads")
    p.add_argument(
        "--cache-write-5m", type=_count, default=0, help="of --input: cache writes, 5-minute TTL"
    )
    p.add_argument(
        "--cache-write-1h", type=_count, default=0, help="of --input: cache writes, 1-hour TTL"
    )
    p.add_argument("--reasoning", type=_count, default=0, help="of --output: reasoning tokens")
    p.add_argument("--web-search", type=_count, default=0, help="web-search requests billed")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--batch", action="store_true", help="price at the batch rate")
    group.add_argument(
        "--processing", choices=PROCESSING_VALUES, default="standard", help="price variant"
    )
    p.add_argument("--estimated", action="store_true", help="mark the usage as estimated")
    p.add_argument(
        "--at", type=instant_arg, help="price with the prices in force at this instant (ISO 8601)"
    )
    p.add_argument("--prices", help="user price file (default: $OTEL_TOKENS_PRICES)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _cmd_price(args: argparse.Namespace) -> int:
    """price one call's usage exactly

    Price token usage with the catalog in force at --at. Counts are inclusive, as in the
    OpenTelemetry GenAI conventions: --input includes cache reads and writes, --output includes
    reasoning.
    """
    processing: Processing = "batch" if args.batch else args.processing
    try:
        catalog = Catalog.load(args.prices)
        usage = TokenUsage.from_inclusive(
            input_total=args.input,
            output_total=args.output,
            cache_read=args.cache_read,
            cache_write_5m=args.cache_write_5m,
            cache_write_1h=args.cache_write_1h,
            reasoning=args.reasoning,
            web_search_requests=args.web_search,
            source="estimated" if args.estimated else "provider",
        )
    except (PriceFileError, InvalidUsageError) as exc:
        return fail(exc)
    result = catalog.price(
        usage, args.model, provider=args.provider, at=args.at, processing=processing
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(_format_result(result))
    if not result.is_priced:
        if not args.json:
            print(f"\notel-tokens: {result.status}: {result.reason}", file=sys.stderr)
        return EXIT_UNPRICED
    return 0


def _format_result(result: PriceResult) -> str:
    who = f"{result.model}" + (f" ({result.provider})" if result.provider else "")
    lines = [f"{who}: {result.status}"]
    if result.is_priced:
        rows = [
            (bucket, count, result.amounts.get(bucket)) for bucket, count in result.usage.buckets()
        ]
        width = max((len(b) for b, _, _ in rows), default=5)
        lines.append(f"  {'bucket':<{width}}  {'units':>12}  {'amount':>16}")
        for bucket, count, amount in rows:
            shown = "unpriced" if amount is None else decimal_str(amount)
            lines.append(f"  {bucket:<{width}}  {count:>12,}  {shown:>16}")
        assert result.total is not None
        lines.append(
            f"  {'total':<{width}}  {'':>12}  {decimal_str(result.total):>16} {result.currency}"
        )
    lines.append(f"price id:        {result.price_id or '-'}")
    lines.append(f"catalog version: {result.catalog_version}")
    if result.processing != "standard":
        lines.append(f"processing:      {result.processing}")
    if result.context_tier != "base":
        lines.append(f"context tier:    {result.context_tier}")
    return "\n".join(lines)


def _add_check_prices(sub: Subparsers) -> None:
    c = add_command(sub, "check-prices", _cmd_check_prices)
    c.add_argument("file", nargs="?")


def _cmd_check_prices(args: argparse.Namespace) -> int:
    """validate a price file; list otel-tokens' price corrections

    Validate a user price file, list its entries that match no model genai-prices knows (a
    custom model, or a typo), and list otel-tokens' own corrections over genai-prices with their
    source, date and whether genai-prices now covers them. Without FILE, only the corrections.
    """
    try:
        catalog = Catalog.load(args.file, use_env=False)
    except PriceFileError as exc:
        return fail(exc)
    user = catalog.user
    if user is not None:
        print(
            f"{args.file}: OK: {len(user.models)} model price(s), "
            f"{len(user.discounts)} discount(s), reporting currency {catalog.currency}"
        )
        entries = [("models", e) for e in user.models] + [("discounts", e) for e in user.discounts]
        for kind, entry in entries:
            if known_to_catalog(entry, catalog.corrections):
                continue
            what = f"model {entry.model}" if entry.model else f"pattern {entry.pattern}"
            scope = f" of provider {entry.provider}" if entry.provider else ""
            print(
                f"  {kind}[{entry.index}] ({what}{scope}) matches no model genai-prices knows: "
                "a custom model, or a typo?"
            )
    print(f"catalog version: {catalog.version}")
    corrections = catalog.corrections.models if catalog.corrections is not None else ()
    print(
        f"otel-tokens corrections over genai-prices {catalog.genai_prices_version}: "
        f"{len(corrections)}"
    )
    now = datetime.now(UTC)
    for entry in corrections:
        status = correction_status(entry, now)
        print(
            f"  {entry.key}: {status.state}: {status.detail}\n"
            f"    source: {entry.source} (read {entry.date})"
        )
    return 0


# Every command, in the order of ``otel-tokens --help``: each function registers its own.
_COMMANDS: tuple[Callable[[Subparsers], object], ...] = (
    _add_price,
    _add_check_prices,
    _add_tiktoken_cache,
    _add_demo,
    _add_budgets,
    _add_reprice,
    reporting.add_parsers,
    add_collector_parser,
    add_reconcile_parser,
)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
