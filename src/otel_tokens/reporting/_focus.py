"""FOCUS 1.2 CSV and Parquet: one row per priced record, money as exact decimal text."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from .. import semconv as sc
from ..pricing import decimal_str
from ..records import CostRecord
from ._common import ExportError, ExportResult, atomic


def focus_columns() -> list[str]:
    """The FOCUS columns of a cost record, in ``CostRecord.to_focus`` order."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    probe = CostRecord("", epoch, epoch, "p", "m", sc.BUCKET_INPUT, 0, "USD", "v", "priced")
    return list(probe.to_focus())


def _tags_json(tags: Mapping[str, str]) -> str:
    return json.dumps(dict(tags), sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def focus_cells(record: CostRecord) -> dict[str, str | None]:
    """A record's FOCUS columns as text: exact decimal strings, Tags as JSON, None for null."""
    cells: dict[str, str | None] = {}
    for column, value in record.to_focus().items():
        if value is None or isinstance(value, str):
            cells[column] = value
        elif isinstance(value, Mapping):
            cells[column] = _tags_json(value)
        else:  # not produced today; never write a float or an exponent
            cells[column] = decimal_str(value) if isinstance(value, Decimal) else str(value)
    return cells


def _focus_split(records: Iterable[CostRecord], result: ExportResult) -> Iterator[CostRecord]:
    for record in records:
        if record.is_priced:
            yield record
        else:
            # FOCUS requires a cost on every row: never written with cost 0 (SPEC section 7).
            result.leave_out(f"{record.pricing_status} (no cost; FOCUS requires one)")


def write_focus_csv(records: Iterable[CostRecord], out: IO[str]) -> ExportResult:
    """FOCUS CSV: header of ``focus_columns()``; an empty cell is null; Tags are JSON."""
    result = ExportResult()
    columns = focus_columns()
    writer = csv.writer(out)
    writer.writerow(columns)
    for record in _focus_split(records, result):
        cells = focus_cells(record)
        writer.writerow(["" if cells[c] is None else cells[c] for c in columns])
        result.written += 1
    return result


def require_pyarrow() -> tuple[Any, Any]:
    """(pyarrow, pyarrow.parquet), imported by name: an optional dependency without stubs."""
    import importlib

    try:
        return importlib.import_module("pyarrow"), importlib.import_module("pyarrow.parquet")
    except ImportError:
        raise ExportError(
            "writing Parquet needs pyarrow, which is not installed: pip install pyarrow "
            "(or write CSV: an --output not ending in .parquet)"
        ) from None


def write_focus_parquet(records: Iterable[CostRecord], path: str | Path) -> ExportResult:
    """FOCUS as Parquet: the CSV's columns and text, every column a nullable string.

    Money stays exact decimal text (a Parquet decimal needs one fixed scale per column).
    """
    pa, pq = require_pyarrow()
    result = ExportResult()
    columns = focus_columns()
    data: dict[str, list[str | None]] = {c: [] for c in columns}
    for record in _focus_split(records, result):
        cells = focus_cells(record)
        for c in columns:
            data[c].append(cells[c])
        result.written += 1
    schema = pa.schema([pa.field(c, pa.string(), nullable=True) for c in columns])
    table = pa.Table.from_pydict(data, schema=schema)
    with atomic(path) as tmp:
        pq.write_table(table, tmp)
    return result
