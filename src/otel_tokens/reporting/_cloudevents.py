"""CloudEvents 1.0 JSON lines (structured mode), as OpenMeter ingests them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import IO, Any

from ..records import CostRecord
from ._common import ExportResult, json_line


def cloudevent(record: CostRecord, default_subject: str | None = None) -> dict[str, Any]:
    """The record's CloudEvent; ``default_subject`` when it has no tenant (OpenMeter needs one)."""
    event = record.to_cloudevent()
    if "subject" not in event and default_subject:
        event["subject"] = default_subject
    return event


def write_cloudevents(
    records: Iterable[CostRecord], out: IO[str], default_subject: str | None = None
) -> ExportResult:
    """CloudEvents JSON lines (structured mode): one event per line, all records."""
    result = ExportResult()
    no_subject = unpriced = 0
    for record in records:
        event = cloudevent(record, default_subject)
        no_subject += "subject" not in event
        unpriced += not record.is_priced
        out.write(json_line(event))
        result.written += 1
    if unpriced:
        result.notes.append(f"{unpriced} event(s) of unpriced records carry null costs")
    if no_subject:
        result.notes.append(
            f"{no_subject} event(s) have no subject (no tenant); OpenMeter requires one: "
            "use --default-subject"
        )
    return result
