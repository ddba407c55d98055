"""``report``'s table: rich when importable, else plain text; every digit of an amount shown."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

from ..pricing import decimal_str
from ._common import display_url, money, window
from ._grouping import Report, ReportLine


@dataclass(frozen=True, slots=True)
class _Column:
    header: str
    numeric: bool
    cell: Callable[[ReportLine], str]


@dataclass(frozen=True, slots=True)
class _Table:
    """The report laid out as text cells, for either renderer."""

    title: str
    caption: str
    columns: list[_Column]
    body: list[list[str]]
    totals: list[list[str]]
    notes: list[str]


def _table_columns(report: Report) -> list[_Column]:
    def key_cell(i: int) -> Callable[[ReportLine], str]:
        return lambda line: line.key[i] or "-"

    columns: list[_Column] = []
    for i, key in enumerate(report.by):
        if key == "currency":
            columns.append(_Column(key, False, lambda line: line.currency))
        else:
            columns.append(_Column(key, False, key_cell(i)))
    if "currency" not in report.by:
        columns.append(_Column("currency", False, lambda line: line.currency))
    columns.append(_Column("records", True, lambda line: f"{line.records:,}"))
    columns.append(_Column("tokens", True, lambda line: f"{line.tokens:,}"))
    if any(t.requests for t in report.totals):
        columns.append(_Column("requests", True, lambda line: f"{line.requests:,}"))
    columns.append(_Column("billed cost", True, lambda line: money(line.billed_cost) or "-"))

    def list_cell(line: ReportLine) -> str:
        if line.list_cost is None:
            return "-"
        return decimal_str(line.list_cost) + ("*" if line.no_list_price else "")

    columns.append(_Column("list cost", True, list_cell))
    if any(t.unpriced_tokens for t in report.totals):
        columns.append(_Column("unpriced tokens", True, lambda line: f"{line.unpriced_tokens:,}"))
    if any(t.unpriced_requests for t in report.totals):
        columns.append(
            _Column("unpriced requests", True, lambda line: f"{line.unpriced_requests:,}")
        )
    return columns


def _table_notes(report: Report) -> list[str]:
    notes = []
    if any(t.no_list_price and t.list_cost is not None for t in [*report.lines, *report.totals]):
        notes.append("* list cost of the records that have a list price only")
    if report.unpriced_records:
        tokens = sum(t.unpriced_tokens for t in report.totals)
        requests = sum(t.unpriced_requests for t in report.totals)
        what = f"{tokens:,} tokens" + (f", {requests:,} requests" if requests else "")
        notes.append(
            f"{report.unpriced_records:,} unpriced record(s) ({what}): no price, so no cost; "
            "their usage is in the 'unpriced' columns and not in the cost totals"
        )
    return notes


def _total_cells(columns: list[_Column], total: ReportLine) -> list[str]:
    cells = [c.cell(total) if c.numeric or c.header == "currency" else "" for c in columns]
    first_key = next(
        (i for i, c in enumerate(columns) if not c.numeric and c.header != "currency"), None
    )
    if first_key is not None:
        cells[first_key] = "total"
    return cells


def format_table(report: Report, ledger: str | None = None, *, plain: bool = False) -> str:
    """The report as a readable table: rich when importable (and not ``plain``), else text."""
    caption = ("ledger " + display_url(ledger) if ledger else "") + window(
        report.since, report.until
    )
    columns = _table_columns(report)
    table = _Table(
        title=f"Cost by {', '.join(report.by)}",
        caption=caption.strip(),
        columns=columns,
        body=[[c.cell(line) for c in columns] for line in report.lines],
        totals=[_total_cells(columns, t) for t in report.totals],
        notes=_table_notes(report),
    )
    if not plain:
        try:
            return _rich_table(table)
        except ImportError:
            pass
    return _plain_table(table)


def _rich_table(t: _Table) -> str:
    import io

    from rich import box
    from rich.console import Console
    from rich.table import Table

    encoding = (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "")
    table = Table(
        title=t.title,
        box=box.SIMPLE_HEAD if encoding.startswith("utf") else box.ASCII2,
        title_justify="left",
    )
    for c in t.columns:
        # Never ellipsize or wrap a number: every digit of an amount is shown.
        table.add_column(
            c.header, justify="right" if c.numeric else "left", no_wrap=c.numeric, overflow="fold"
        )
    for i, row in enumerate(t.body):
        table.add_row(*row, end_section=i == len(t.body) - 1)
    for row in t.totals:
        table.add_row(*row, style="bold")
    buffer = io.StringIO()
    probe = Console(file=io.StringIO(), width=1000, color_system=None)
    width = probe.measure(table).maximum
    console = Console(
        file=buffer, width=width, color_system=None, highlight=False, emoji=False, markup=False
    )
    console.print(table)
    for note in [t.caption, *t.notes] if t.caption else t.notes:
        console.print(note, soft_wrap=True)
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines()).strip("\n")


def _plain_table(t: _Table) -> str:
    rows = [[c.header for c in t.columns], *t.body, *t.totals]
    widths = [max(len(r[i]) for r in rows) for i in range(len(t.columns))]

    def fmt(row: list[str]) -> str:
        return "  ".join(
            cell.rjust(w) if c.numeric else cell.ljust(w)
            for cell, w, c in zip(row, widths, t.columns, strict=True)
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    out = [t.title]
    out.append(fmt(rows[0]))
    out.append(rule)
    out.extend(fmt(r) for r in t.body)
    if t.totals:
        out.append(rule)
        out.extend(fmt(r) for r in t.totals)
    if t.caption:
        out.append(t.caption)
    out.extend(t.notes)
    return "\n".join(out)
