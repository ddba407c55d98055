"""The context-window guard: a request that cannot fit its model's window is refused before
it is sent (``raise``) or marked on its span (``observe``).

Opt-in per instrumentor (``instrument(context_guard="raise"|"observe")``) or by
``OTEL_TOKENS_CONTEXT_GUARD``; off, the instrumentation never imports this module. The
input is the adapter's local count (the same one budgets reserve with), so no network call
is made on the caller's thread. A model whose window is unknown is let through.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Literal

from .. import semconv as sc
from ._errors import ContextWindowExceeded
from ._limits import limits_of

GuardMode = Literal["raise", "observe"]
ENV_CONTEXT_GUARD = "OTEL_TOKENS_CONTEXT_GUARD"
# A span event, not an attribute: the request was sent anyway (observe mode).
EVENT_CONTEXT_WINDOW_EXCEEDED = "gen_ai.billing.context_window.exceeded"
_MODES = ("raise", "observe")


def guard_mode(option: str | None) -> GuardMode | None:
    """The mode an instrumentor runs with: its ``context_guard`` option, else the
    environment; None (off) for "", "off", "none"."""
    value = option if option is not None else os.environ.get(ENV_CONTEXT_GUARD, "")
    value = value.strip().lower()
    if value in ("", "off", "none", "false"):
        return None
    if value not in _MODES:
        raise ValueError(
            f"context_guard must be 'raise', 'observe' or 'off', not {value!r} "
            f"(option or {ENV_CONTEXT_GUARD})"
        )
    return value  # type: ignore[return-value]


def check_context_window(
    mode: GuardMode,
    *,
    model: str | None,
    input_tokens: Callable[[], int],
    max_output_tokens: int | None,
    span: Any,
) -> None:
    """Raise `ContextWindowExceeded` (``raise``) or add an event to ``span`` (``observe``)
    when the input plus the requested output exceed the model's context window."""
    limits = limits_of(model)
    if limits is None:
        return
    n_in = input_tokens()
    needed = n_in + (max_output_tokens or 0)
    if needed <= limits.context_window:
        return
    if mode == "raise":
        raise ContextWindowExceeded(
            model=model,
            input_tokens=n_in,
            max_output_tokens=max_output_tokens,
            context_window=limits.context_window,
            detail="not sent (context_guard='raise')",
        )
    if span is not None and span.is_recording():
        attributes = {
            sc.BILLING_CONTEXT_WINDOW: limits.context_window,
            sc.BILLING_CONTEXT_WINDOW_INPUT_TOKENS: n_in,
        }
        if max_output_tokens is not None:
            attributes[sc.BILLING_CONTEXT_WINDOW_MAX_OUTPUT_TOKENS] = max_output_tokens
        span.add_event(EVENT_CONTEXT_WINDOW_EXCEEDED, attributes)
