"""The collector on a PostgreSQL ledger (a fresh schema per test): exact records, and a
ledger connection that dies is retryable, reconnected, and loses nothing."""

from __future__ import annotations

import json
import time

import psycopg
import pytest

from _services import PG_BASE
from otel_tokens.collector import Collector

from .conftest import (
    CUMULATIVE,
    DELTA,
    TokenClient,
    cost_total,
    expected_cost,
    export_until_ok,
    get,
    grpc_exporter,
    http_exporter,
    otlp_request,
    post,
    quiet_exporter_logs,
    records_of,
    totals,
)


@pytest.mark.parametrize("temporality", [DELTA, CUMULATIVE], ids=["delta", "cumulative"])
def test_postgres_ledger_exact(pg_url: str, temporality: object) -> None:
    with Collector(ledger=pg_url, http_endpoint="127.0.0.1:0", grpc_endpoint="127.0.0.1:0") as c:
        client = TokenClient(temporality)  # type: ignore[arg-type]
        h = http_exporter(c.http_url or "")
        g = grpc_exporter(c.grpc_target or "")
        for i in range(4):
            client.add("input", 7000 + i)
            client.add("cache_write_1h", 100 * i)
            data = client.collect()
            assert (h if i % 2 else g).export(data).name == "SUCCESS"
            assert (g if i % 2 else h).export(data).name == "SUCCESS"
        g.shutdown()
    records = records_of(pg_url)
    assert totals(records) == {k: v for k, v in client.sent.items() if v}
    assert cost_total(records) == expected_cost(client.sent)


def test_postgres_connection_loss_is_retryable_and_reconnects(pg_url: str) -> None:
    app = "otel_tokens_" + pg_url.rsplit("%3D", 1)[1]
    url = f"{pg_url}&application_name={app}"
    with Collector(ledger=url, http_endpoint="127.0.0.1:0", grpc_endpoint="none") as c:
        client = TokenClient(CUMULATIVE)
        client.add("input", 1000)
        assert http_exporter(c.http_url or "").export(client.collect()).name == "SUCCESS"
        # The database drops the collector's connection (restart, failover, idle kill).
        with psycopg.connect(PG_BASE, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s",
                (app,),
            ).fetchall()
        assert killed == [(True,)]
        client.add("input", 234)
        data = client.collect()
        answer = post(f"{c.http_url}/v1/metrics", otlp_request(data).SerializeToString())
        assert answer.status == 503 and answer.headers["retry-after"] == "1"
        assert json.loads(get(f"{c.http_url}/healthz").body)["ledger"] == "down"
        with quiet_exporter_logs():
            export_until_ok(http_exporter(c.http_url or "", timeout=5), data, time.monotonic() + 20)
        assert json.loads(get(f"{c.http_url}/healthz").body)["ledger"] == "up"
    assert totals(records_of(pg_url)) == {"input": 1234}
