"""Keeps what the collector learns of each series out of Python's full garbage collections.

The collector keeps, for every series it has seen, what its attributes read as
(`SeriesCache`), its reading and its unit prices (the pricer's): a few tracked objects per
series, hundreds of thousands at 100,000 series. A full collection walks every tracked
object with every thread stopped: measured 36 ms at 10,000 series and 138 ms at 100,000,
a pause that each request in flight waits for (docs/collector.md, latency).

Those objects live as long as the series does. So, each time the series cache has grown
by `STEP` series, the young objects are collected once (only those not frozen yet: a few
ms) and what survives is frozen (``gc.freeze``): later collections skip it. Frozen objects
are still freed by reference counting when dropped (the caches hold no cycles). When the
cache starts again empty (its bound), everything is unfrozen and collected once, so that a
cycle frozen and since dropped is not kept for ever.
"""

from __future__ import annotations

import gc
import threading

# Series between two freezes: the collection before each freeze scans about this many
# series' objects (~5 ms here), and no full collection has more to scan in between.
STEP = 5_000


class SeriesHeap:
    """Freezes the objects of the series learnt, `STEP` series at a time (see module)."""

    def __init__(self, step: int = STEP) -> None:
        self.step = step
        self._frozen_at = 0  # the series cache's size at the last freeze
        self._lock = threading.Lock()

    def grown(self, series: int) -> None:
        """After a commit: ``series`` is the series cache's size now."""
        if self._frozen_at <= series < self._frozen_at + self.step:
            return
        with self._lock:
            if series < self._frozen_at:  # the cache started again: collect all once
                gc.unfreeze()
            elif series < self._frozen_at + self.step:
                return
            gc.collect()
            gc.freeze()
            self._frozen_at = series
