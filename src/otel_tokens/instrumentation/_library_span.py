"""Riding on a client library's own call span (anthropic 2.x makes one per API call).

Two spans with usage for one call would double-count in any backend that sums spans, so
where the library makes its own span we make none: the call adopts the library's span and
writes our attributes on it before the library ends it. Three hooks, around the library's
functions: "the API call's span is started" (adopted then, at the call's start; where the
library's span does not record, ours starts there instead), "the API call's span is
finished" (non-streamed calls, failures) and "a streamed message ended". The provider's
`LibrarySpanReader` reads their arguments; this module holds what is done with them, for
any provider.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from .._safety import log_once
from ._adapter import LibrarySpanReader
from ._call import Call
from ._wrapper import ACTIVE_CALL, Bound, complete

# The library's spans carrying a streamed call of ours, until the library ends them.
_span_calls: weakref.WeakValueDictionary[int, Call] = weakref.WeakValueDictionary()


def call_start_hook(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    """Around the library's "start the API call span", which returns the span or None."""
    span = wrapped(*args, **kwargs)
    try:
        active = ACTIVE_CALL.get()
        if active is not None and active[0].span is None:
            call = active[0]
            if span is not None and span.is_recording():
                call.adopt(span)
            else:  # the library's span records nothing: the call gets ours
                call.start_span()
    except Exception as exc:
        log_once("library_span.start_call", exc)
    return span


def call_finish_hook(reader: LibrarySpanReader) -> Callable[..., Any]:
    """Around the library's "finish the API call span": adopt the span, and meter a
    non-streamed call onto it before the library ends it."""

    def hook(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
        try:
            active = ACTIVE_CALL.get()
            if active is not None:
                span, error, data = reader.finished_call(args, kwargs)
                if span is not None:
                    _adopted(active, span, error, data)
        except Exception as exc:
            log_once("library_span.finish_call", exc)
        return wrapped(*args, **kwargs)

    return hook


def _adopted(
    active: tuple[Call, Any, Bound], span: Any, error: BaseException | None, data: Any
) -> None:
    call, request, bound = active
    call.adopt(span)
    if call.span is not span:
        return
    if error is not None:
        call.end(None, error)
    elif data is not None and (
        bound.is_stream(data) or (request.stream and hasattr(data, "parse"))
    ):
        # Streamed (raw or not): ended by the "streamed message ended" hook.
        _span_calls[id(span)] = call
    elif data is not None:
        complete(call, request, bound, data)


def stream_end_hook(reader: LibrarySpanReader) -> Callable[..., Any]:
    """Around the library's "a streamed message ended": finish our call with what was seen,
    before the library ends its span."""

    def hook(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
        try:
            span, error = reader.finished_stream(instance, args, kwargs)
            call = _span_calls.pop(id(span), None) if span is not None else None
            if call is not None and not call.ended:
                _end_stream(reader, call, instance, error)
        except Exception as exc:
            log_once("library_span.stream_end", exc)
        return wrapped(*args, **kwargs)

    return hook


def _end_stream(reader: LibrarySpanReader, call: Call, instance: Any, error: Any) -> None:
    error = error if isinstance(error, BaseException) else None
    raised = reader.raised_type(error)
    if call.finisher is not None:
        if raised is not None:  # the user gets the client's wrapper, not this error
            call.finisher.finish(None, reported=(raised, str(error)))
        else:
            call.finisher.finish(error)
    else:  # a raw stream whose .parse() we have not seen: the library's own snapshot
        facts = reader.stream_snapshot(call.request, instance)
        if raised is not None:
            facts = replace(facts, error=(raised, str(error)))
            error = None
        call.end_with(facts, error)
