"""Before the call: a request's tokens, context window and worst-case cost (`preflight`),
the context-window guard (`ContextWindowExceeded`), and fitting a conversation to a model
(`fit_messages`). See docs/preflight.md."""

from __future__ import annotations

from ._cache import MessageCountCache, default_cache
from ._errors import ContextWindowExceeded
from ._fit import fit_messages
from ._guard import (
    ENV_CONTEXT_GUARD,
    EVENT_CONTEXT_WINDOW_EXCEEDED,
    GuardMode,
    check_context_window,
    guard_mode,
)
from ._limits import ModelLimits, limits_of, register_context_window
from ._preflight import CountMethod, Preflight, count_input, preflight

__all__ = [
    "ENV_CONTEXT_GUARD",
    "EVENT_CONTEXT_WINDOW_EXCEEDED",
    "ContextWindowExceeded",
    "CountMethod",
    "GuardMode",
    "MessageCountCache",
    "ModelLimits",
    "Preflight",
    "check_context_window",
    "count_input",
    "default_cache",
    "fit_messages",
    "guard_mode",
    "limits_of",
    "preflight",
    "register_context_window",
]
