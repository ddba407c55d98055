"""Our errors never reach the user's code: caught here and logged once per kind."""

from __future__ import annotations

import logging
import threading

_log = logging.getLogger("otel_tokens")
_seen: set[str] = set()
_seen_lock = threading.Lock()


def log_once(kind: str, exc: BaseException | None = None) -> None:
    """Log an internal failure the first time this ``kind`` happens, then stay quiet."""
    with _seen_lock:
        if kind in _seen:
            return
        _seen.add(kind)
    _log.warning(
        "otel-tokens: internal error in %s; the application call is unaffected "
        "(further errors of this kind are not logged)",
        kind,
        exc_info=exc,
    )


def reset_log_once() -> None:
    """For tests: log every kind again."""
    with _seen_lock:
        _seen.clear()
