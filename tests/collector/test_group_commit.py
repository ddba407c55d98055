"""Requests that arrive while the ledger is busy are committed together (group commit,
issue 15): fewer transactions under concurrent senders, every request answered after the
commit that holds its points, and a failed transaction fails (retryably) every request
in it, so that retries still bill each point once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    NumberDataPoint,
)

from otel_tokens import semconv as sc
from otel_tokens.collector import Collector
from otel_tokens.ledger import LedgerError, open_ledger
from otel_tokens.metering import LedgerPricer, TokenPoint

from .conftest import BASE_ATTRS, post, records_of, totals
from .test_http import _token_request

T0 = 1_767_225_600 * 10**9


class _Held:
    """A real ledger whose transactions can be held at their start, counted, and failed."""

    def __init__(self, url: str) -> None:
        self.inner = open_ledger(url)
        self.url = url
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.transactions = 0
        self.fail_at: int | None = None  # this transaction (1-based) fails

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        self.transactions += 1
        number = self.transactions
        self.entered.set()
        self.gate.wait(20)
        if number == self.fail_at:
            raise LedgerError("disk I/O error (simulated)")
        with self.inner.transaction() as tx:
            yield tx

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _body(sender: int, points: int = 20) -> bytes:
    data = []
    for i in range(points):
        p = NumberDataPoint(start_time_unix_nano=T0, time_unix_nano=T0 + 10**9, as_int=1)
        attrs = {**BASE_ATTRS, sc.BILLING_TOKEN_BUCKET: "input", sc.BILLING_FEATURE: f"f{i}"}
        attrs[sc.BILLING_TENANT_ID] = f"sender-{sender}"
        p.attributes.extend(
            KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in attrs.items()
        )
        data.append(p)
    return _token_request(*data)


def _send_while_held(c: Collector, ledger: _Held, senders: int) -> list[int]:
    """One request held in its transaction, ``senders`` more sent meanwhile, then all let
    go: the statuses of the ``senders`` requests."""
    url = f"{c.http_url}/v1/metrics"
    ledger.gate.clear()
    ledger.entered.clear()
    with ThreadPoolExecutor(senders + 1) as pool:
        first = pool.submit(post, url, _body(0))
        assert ledger.entered.wait(10)
        rest = [pool.submit(post, url, _body(s)) for s in range(1, senders + 1)]
        assert c.pipeline is not None
        deadline = time.monotonic() + 10
        while len(c.pipeline._commits._queue) < senders and time.monotonic() < deadline:
            time.sleep(0.01)  # until every request waits for the ledger
        ledger.gate.set()
        assert first.result().status == 200
        return [f.result().status for f in rest]


def test_requests_waiting_for_the_ledger_share_one_transaction(sqlite_url: str) -> None:
    ledger = _Held(sqlite_url)
    with Collector(
        ledger=ledger,  # type: ignore[arg-type]
        http_endpoint="127.0.0.1:0",
        grpc_endpoint="none",
    ) as c:
        statuses = _send_while_held(c, ledger, senders=8)
        assert statuses == [200] * 8
        # The held one, then the eight together.
        assert ledger.transactions == 2
    records = records_of(sqlite_url)
    assert totals(records) == {"input": 9 * 20}
    assert {r.tenant for r in records} == {f"sender-{s}" for s in range(9)}


def test_a_failed_shared_transaction_fails_each_of_its_requests(sqlite_url: str) -> None:
    ledger = _Held(sqlite_url)
    ledger.fail_at = 2  # the group's, after the held one
    with Collector(
        ledger=ledger,  # type: ignore[arg-type]
        http_endpoint="127.0.0.1:0",
        grpc_endpoint="none",
    ) as c:
        assert _send_while_held(c, ledger, senders=5) == [503] * 5
        assert totals(records_of(sqlite_url)) == {"input": 20}  # the held one's only
        url = f"{c.http_url}/v1/metrics"
        for s in range(6):  # the senders retry (the held one's is a duplicate)
            assert post(url, _body(s)).status == 200
        assert ledger.transactions == 2 + 6
    assert totals(records_of(sqlite_url)) == {"input": 6 * 20}


def test_ingest_many_bills_a_point_in_two_batches_once() -> None:
    from otel_tokens.ledger import SQLiteLedger

    pricer = LedgerPricer(SQLiteLedger(":memory:"))
    attrs = {**BASE_ATTRS, sc.BILLING_TOKEN_BUCKET: "input"}
    a = TokenPoint("s", attrs, {}, T0, T0 + 10**9, 5, False)
    b = TokenPoint("s", attrs, {}, T0 + 10**9, T0 + 2 * 10**9, 7, False)
    first, second = pricer.ingest_many([[a, b], [b]])
    assert [r.quantity for r in first.records] == [5, 7]
    assert (second.records, second.unchanged, second.points) == ([], 1, 1)
    again = pricer.ingest_many([[a], [b]])
    assert [(r.records, r.unchanged) for r in again] == [([], 1), ([], 1)]
