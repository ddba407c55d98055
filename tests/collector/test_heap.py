"""The series' objects are kept out of Python's full collections (collector/_heap.py)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from otel_tokens.collector import Collector
from otel_tokens.collector._heap import SeriesHeap

from .conftest import post
from .test_group_commit import _body


class _Node:
    """A tracked object, and (with ``self.me``) a reference cycle."""

    me: _Node | None = None


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_objects_are_frozen_once_the_cache_has_grown_a_step() -> None:
    heap = SeriesHeap(step=100)
    heap.grown(99)
    assert gc.get_freeze_count() == 0
    kept = _Node()
    heap.grown(100)
    assert gc.get_freeze_count() > 0
    # Frozen, yet freed by reference counting when dropped.
    gone = weakref.ref(kept)
    del kept
    assert gone() is None
    frozen = gc.get_freeze_count()
    heap.grown(150)  # less than a step since: nothing to do
    assert gc.get_freeze_count() == frozen


def test_a_cache_that_starts_again_unfreezes_and_collects_frozen_cycles() -> None:
    heap = SeriesHeap(step=100)
    cycle = _Node()
    cycle.me = cycle
    gone = weakref.ref(cycle)
    heap.grown(100)
    del cycle
    gc.collect()
    assert gone() is not None  # frozen: full collections skip it
    heap.grown(5)  # the series cache started again empty (its bound)
    assert gone() is None


def test_garbage_is_collected_before_a_freeze() -> None:
    heap = SeriesHeap(step=1)
    cycle = _Node()
    cycle.me = cycle
    gone = weakref.ref(cycle)
    del cycle  # unreachable, not yet collected
    heap.grown(1)
    assert gone() is None  # collected, not frozen


def test_the_collector_freezes_after_a_commit_that_grew_the_cache(sqlite_url: str) -> None:
    with Collector(ledger=sqlite_url, http_endpoint="127.0.0.1:0", grpc_endpoint="none") as c:
        heap = c.pipeline._heap if c.pipeline is not None else None
        assert heap is not None
        heap.step = 20
        assert post(f"{c.http_url}/v1/metrics", _body(1, points=10)).status == 200
        assert gc.get_freeze_count() == 0
        assert post(f"{c.http_url}/v1/metrics", _body(2, points=10)).status == 200
        assert gc.get_freeze_count() > 0
