"""Where the pricing collector's time goes, stage by stage, in CPU seconds of this process.

The same workload as ``ingest.py`` (cumulative ``gen_ai.billing.tokens`` points of N series,
exported 3 times, in requests of <= 5000 points), run in-process through each stage alone:

* parse: ``ExportMetricsServiceRequest.FromString`` (protobuf, upb);
* decode: ``from_otlp`` (attribute maps, stream ids: TokenPoints), with the collector's
  ``SeriesCache`` (decode_uncached: without it);
* validate: ``check_point`` on every point;
* price: ``LedgerPricer.record`` of every point (the catalog lookup and the exact cost,
  the CostRecord);
* rows: ``record_row`` of every record (the ledger's column values);
* ingest: ``LedgerPricer.ingest`` of each request's points, everything above but decoding
  plus the marks and the SQL, in one transaction per request;
* raw insert: the same rows ``executemany``'d into an empty copy of the table, one
  transaction per request: the database's own limit for this shape of row;
* raw copy (PostgreSQL only): the same rows sent with ``COPY`` (text) into another empty
  copy, one transaction per request: what the ledger's own COPY costs the client.

CPU time (``time.process_time``), not wall clock, so that figures taken on a loaded machine
still compare; PostgreSQL's own CPU is not in them (another process).

    python bench/ingest_stages.py --series 10000 --ledgers sqlite postgresql
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import ingest  # the workload and the ledgers of the ingest benchmark


def _cpu(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.process_time()
    out = fn()
    return time.process_time() - t0, out


def run(backend: str, w: ingest.Workload) -> dict[str, float]:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )

    from otel_tokens.ledger import open_ledger
    from otel_tokens.ledger._base import record_row
    from otel_tokens.metering import LedgerPricer, SeriesCache, from_otlp
    from otel_tokens.metering.points import check_point

    bodies = [b for bodies in w.bodies for b in bodies]
    times: dict[str, float] = {}
    t, requests = _cpu(lambda: [ExportMetricsServiceRequest.FromString(b) for b in bodies])
    times["parse"] = t
    t, batches = _cpu(lambda: [list(from_otlp(r)) for r in requests])
    times["decode_uncached"] = t
    # As the collector decodes: what each series' attributes read as is kept between
    # requests (the first export reads every series, the later ones find them).
    cache = SeriesCache()
    t, batches = _cpu(lambda: [list(from_otlp(r, cache)) for r in requests])
    times["decode"] = t
    points = [p for batch in batches for p in batch]
    t, _ = _cpu(lambda: [check_point(p) for p in points])
    times["validate"] = t
    with tempfile.TemporaryDirectory() as tmp, ingest.ledger_url(backend, Path(tmp)) as url:
        ledger = open_ledger(url)
        pricer = LedgerPricer(ledger)
        t, records = _cpu(lambda: [pricer.record(p, p.start_ns, p.value) for p in points])
        times["price"] = t
        now = datetime.now(UTC)
        t, rows = _cpu(lambda: [record_row(r, now) for r in records])
        times["rows"] = t
        t0 = time.perf_counter()
        t, results = _cpu(lambda: [pricer.ingest(batch) for batch in batches])
        times["ingest"] = t
        times["ingest_wall"] = time.perf_counter() - t0
        written = sum(len(r.records) for r in results)
        assert written == w.expected_records, (written, w.expected_records)
        times["raw_insert"], times["raw_insert_wall"] = raw_insert(url, rows, len(batches))
        if backend == "postgresql":
            times["raw_copy"], times["raw_copy_wall"] = raw_copy(url, rows, len(batches))
        ledger.close()
    return times


def raw_insert(url: str, rows: list[tuple[Any, ...]], transactions: int) -> tuple[float, float]:
    """CPU and wall seconds to executemany ``rows`` into a copy of cost_records."""
    from otel_tokens.ledger._schema import RECORD_COLUMNS

    columns = ", ".join((*RECORD_COLUMNS, "ingested_at"))
    size = max(1, len(rows) // transactions)
    parts = [rows[i : i + size] for i in range(0, len(rows), size)]
    if url.startswith("sqlite:///"):
        import sqlite3

        conn = sqlite3.connect(url[len("sqlite:///") :], isolation_level=None)
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE raw AS SELECT * FROM cost_records WHERE 0")
        conn.execute("CREATE UNIQUE INDEX raw_id ON raw (id)")
        sql = f"INSERT OR IGNORE INTO raw ({columns}) VALUES ({', '.join('?' * len(rows[0]))})"

        def go() -> None:
            for part in parts:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(sql, part)
                conn.execute("COMMIT")

    else:
        import psycopg

        conn = psycopg.connect(url, autocommit=True)
        conn.execute("CREATE TABLE raw (LIKE cost_records INCLUDING ALL)")
        sql = (
            f"INSERT INTO raw ({columns}) VALUES ({', '.join(['%s'] * len(rows[0]))}) "
            "ON CONFLICT DO NOTHING"
        )

        def go() -> None:
            for part in parts:
                with conn.transaction(), conn.cursor() as cur:
                    cur.executemany(sql, part)

    t0 = time.perf_counter()
    cpu, _ = _cpu(go)
    wall = time.perf_counter() - t0
    conn.close()
    return cpu, wall


def raw_copy(url: str, rows: list[tuple[Any, ...]], transactions: int) -> tuple[float, float]:
    """CPU and wall seconds to COPY ``rows`` into a copy of cost_records (PostgreSQL)."""
    import psycopg

    from otel_tokens.ledger._schema import RECORD_COLUMNS

    columns = ", ".join((*RECORD_COLUMNS, "ingested_at"))
    size = max(1, len(rows) // transactions)
    parts = [rows[i : i + size] for i in range(0, len(rows), size)]
    conn = psycopg.connect(url, autocommit=True)
    conn.execute("CREATE TABLE raw_copy (LIKE cost_records INCLUDING ALL)")

    def go() -> None:
        for part in parts:
            with (
                conn.transaction(),
                conn.cursor() as cur,
                cur.copy(f"COPY raw_copy ({columns}) FROM STDIN") as copy,
            ):
                for row in part:
                    copy.write_row(row)

    t0 = time.perf_counter()
    cpu, _ = _cpu(go)
    wall = time.perf_counter() - t0
    conn.close()
    return cpu, wall


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--exports", type=int, default=3)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument(
        "--ledgers", nargs="+", choices=("sqlite", "postgresql"), default=["sqlite", "postgresql"]
    )
    args = parser.parse_args()
    w = ingest.build(args.series, args.exports, args.batch, 10, 20260101)
    print(
        f"# {w.points} points ({args.series} series x {args.exports} exports), "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
        "CPU seconds of this process, points per CPU second"
    )
    for backend in args.ledgers:
        t = run(backend, w)
        n = w.points
        cells = []
        for stage in (
            "parse",
            "decode_uncached",
            "decode",
            "validate",
            "price",
            "rows",
            "ingest",
            "raw_insert",
        ):
            cells.append(f"{stage} {t[stage]:.2f}s ({n / t[stage] / 1000:.0f}k/s)")
        pipeline = t["parse"] + t["decode"] + t["ingest"]
        cells.append(f"pipeline {pipeline:.2f}s ({n / pipeline / 1000:.1f}k/s)")
        if "raw_copy" in t:
            cells.append(f"raw_copy {t['raw_copy']:.2f}s ({n / t['raw_copy'] / 1000:.0f}k/s)")
        walls = f"ingest wall {t['ingest_wall']:.2f}s, raw wall {t['raw_insert_wall']:.2f}s"
        if "raw_copy_wall" in t:
            walls += f", raw copy wall {t['raw_copy_wall']:.2f}s"
        cells.append(walls)
        print(f"{backend:<11}" + "; ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
