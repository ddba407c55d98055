"""What every ``otel-tokens`` command shares on its command line: the one way to register a
command, the one way to fail, the exit codes and instants.

A private module of the top package, as ``_safety.py``: ``cli.py`` and every subpackage
with commands (``reporting``, ``collector``) use it.

``report`` and ``export`` take an instant or a UTC date (``--since``, ``--until``); ``price
--at``, ``budgets --at`` and ``reprice --since/--until`` take an instant with an offset only.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import TypeAlias, TypeVar

EXIT_USAGE = 2  # as argparse: a bad option or value
EXIT_UNPRICED = 3  # price: the usage has no price
# A ledger, price file, budgets file, export or collector configuration that cannot be
# read or written.
EXIT_BAD_INPUT = 4
EXIT_LISTEN = 5  # collector: an endpoint it cannot listen on
EXIT_DRIFT = 6  # reconcile: the ledger and the provider's report differ over the threshold

_T = TypeVar("_T")


def fail(message: object, code: int = EXIT_BAD_INPUT, *, command: str | None = None) -> int:
    """Say on stderr why a command stops, and return its exit code.

    ``report`` and ``export`` say ``otel-tokens COMMAND: error: ...`` as argparse does for
    their options; the other commands ``otel-tokens: ...``.
    """
    where = "otel-tokens" if command is None else f"otel-tokens {command}: error"
    print(f"{where}: {message}", file=sys.stderr)
    return code


Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Run: TypeAlias = Callable[[argparse.Namespace], int]  # a command: its arguments to an exit code


def add_command(
    subparsers: Subparsers,
    name: str,
    run: Run,
    *,
    epilog: str | None = None,
    raw: bool = False,
) -> argparse.ArgumentParser:
    """Register the command ``name`` that ``run`` does; its options go on the returned parser.

    ``run``'s docstring is the command's help, written once beside what it describes: its
    first paragraph is the command's line in ``otel-tokens --help``, the rest the description
    of ``otel-tokens NAME --help`` (argparse re-wraps both, unless ``raw``: then the
    description and ``epilog`` keep their lines as written). Under ``python -OO`` there are no
    docstrings, and so no help text; the command still runs.

    Each module that has commands registers each of them with this, in a function of
    ``subparsers`` that ``cli.py`` calls (``otel-tokens --help`` lists them in that order).
    """
    summary, _, description = inspect.cleandoc(run.__doc__ or "").partition("\n\n")
    parser = subparsers.add_parser(
        name,
        help=summary or None,
        description=description or None,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter if raw else argparse.HelpFormatter,
    )
    parser.set_defaults(func=run)
    return parser


def parse_instant(text: str, *, end_of_day: bool = False, dates: bool = True) -> datetime:
    """An ISO 8601 instant with a UTC offset, or (with ``dates``) a date: a UTC day.

    A date is the start of that day, or with ``end_of_day`` (for ``--until``) its end, i.e.
    the next midnight, so that ``--until 2026-03-31`` includes all of March 31. Without
    ``dates`` the text is taken as typed (no surrounding blanks).
    """
    if dates:
        text = text.strip()
        try:
            day = date.fromisoformat(text)
        except ValueError:
            pass
        else:
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return start + timedelta(days=1) if end_of_day else start
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        what, example = ("instant or date", "2026-03-01 or ") if dates else ("instant", "")
        raise ValueError(
            f"not an ISO 8601 {what}: {text!r} (e.g. {example}2026-03-01T12:00:00Z)"
        ) from None
    if value.tzinfo is None:
        raise ValueError(
            f"{text!r} has no UTC offset; add Z or +HH:MM" + (", or give a date" if dates else "")
        )
    return value


def argument_type(parse: Callable[[str], _T]) -> Callable[[str], _T]:
    """An argparse ``type`` of ``parse``: its ValueError becomes a usage error (exit 2)
    with the message as it is."""

    def convert(text: str) -> _T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


# --since: from the start of a date; --until: through its end (records are selected by
# since < ChargePeriodEnd <= until).
since_arg = argument_type(parse_instant)
until_arg = argument_type(lambda text: parse_instant(text, end_of_day=True))
instant_arg = argument_type(lambda text: parse_instant(text, dates=False))
