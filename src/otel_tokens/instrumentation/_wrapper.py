"""The one call wrapper every provider uses.

Each client library has a single method every API call passes through once (the API
client's ``request``), whatever the public method: ``create``, ``parse``, the ``.stream()``
helpers, ``with_raw_response``, beta resources, platform clients. We wrap that method; a
provider `Adapter` only reads its own request and response shapes.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from opentelemetry.instrumentation.utils import is_instrumentation_enabled

from .._safety import log_once
from ..attribution import current as current_attribution
from ._adapter import Adapter, Request, ResponseFacts
from ._call import Call
from ._peer_span import adopt_peer
from ._recording import Recorder
from ._streams import watch_generator, watch_stream


class Switch:
    """Turned off by ``uninstrument()``: wrappers captured earlier then pass straight through."""

    __slots__ = ("on",)

    def __init__(self) -> None:
        self.on = True


@dataclass(frozen=True, slots=True)
class Bound:
    """One instrumented client library: its adapter, the recorder its calls end through, its
    stream classes, and the switch ``uninstrument()`` turns off."""

    recorder: Recorder
    adapter: Adapter
    stream_types: tuple[type, ...]
    switch: Switch
    stream_iterator: str = "_iterator"  # `Description.stream_iterator`
    # The context-window guard's mode ("raise" or "observe"), None when off (the default).
    context_guard: str | None = None
    # The adapter's optional ``stream_of`` (a stream inside a result), looked up once here:
    # the calls of adapters without one pay a None check, not an attribute lookup.
    stream_of: Callable[[Request, Any], Any] | None = field(init=False)
    # The adapter's optional ``peer_span(span) -> bool``: is ``span`` another
    # instrumentation's span of the same call, which the call rides on (_peer_span.py)?
    peer_span: Callable[[Any], bool] | None = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stream_of", getattr(self.adapter, "stream_of", None))
        object.__setattr__(self, "peer_span", getattr(self.adapter, "peer_span", None))

    def is_stream(self, result: Any) -> bool:
        return isinstance(result, self.stream_types)


# The call being metered in this context: nested paths (a helper calling another
# instrumented method, a second instrumentation of ours) count it once.
ACTIVE_CALL: ContextVar[tuple[Call, Request, Bound] | None] = ContextVar(
    "otel_tokens_active_call", default=None
)

# Raw responses (``with_raw_response``/``with_streaming_response``) whose body we have not
# seen yet: metered when the user calls ``.parse()`` (hooked), or ended at collection.
_pending_raw: weakref.WeakKeyDictionary[
    Any, tuple[Call, Request, Bound, weakref.finalize[Any, Any]]
] = weakref.WeakKeyDictionary()


# The dict behind _pending_raw: "is any raw response waiting?" on every call without a
# Python-level __len__ (entries of collected keys linger until removed: then the slow path).
_raw_waiting: dict[Any, Any] = _pending_raw.data  # type: ignore[attr-defined]


def _begin(bound: Bound, client: Any, args: Any, kwargs: Any) -> tuple[Call, Request] | None:
    if not bound.switch.on or ACTIVE_CALL.get() is not None or not is_instrumentation_enabled():
        return None
    adapter = bound.adapter
    try:
        request = adapter.read_request(client, args, kwargs)
        if request is None:
            return None
        call = Call(bound.recorder, request, adapter)
    except Exception as exc:
        log_once("request", exc)
        return None
    if request.defer_span and bound.peer_span is not None:
        try:  # the peer's wrapper is outside ours: its span is current now
            adopt_peer(call, bound.peer_span)
        except Exception as exc:
            log_once("peer_span.adopt", exc)
    if bound.context_guard is not None:
        _guard(bound.context_guard, call, request, adapter)
    budgets = bound.recorder.budgets
    if budgets is not None:
        from ..budgets import BudgetExceeded

        try:
            call.reservation = budgets.preflight(
                provider=request.provider,
                model=request.model,
                attribution=current_attribution(),
                input_tokens=lambda: adapter.estimate_input(request),
                max_output_tokens=adapter.max_output_tokens(request),
            )
        except BudgetExceeded as exc:  # enforce mode: refuse before the request is sent
            call.end(None, exc)
            raise
        except Exception as exc:
            log_once("budgets.preflight", exc)
    return call, request


def _guard(mode: str, call: Call, request: Request, adapter: Adapter) -> None:
    """The context-window guard (opt-in): refuse a request that cannot fit, before it is
    sent, or mark it on the span."""
    from ..window import ContextWindowExceeded, check_context_window

    try:
        check_context_window(
            mode,  # type: ignore[arg-type]
            model=request.model,
            input_tokens=lambda: adapter.estimate_input(request),
            max_output_tokens=adapter.max_output_tokens(request),
            span=call.span,
        )
    except ContextWindowExceeded as exc:
        call.end(None, exc)
        raise
    except Exception as exc:
        log_once("context_guard", exc)


def complete(call: Call, request: Request, bound: Bound, result: Any) -> None:
    """Meter a successful result; never raises, never replaces the result."""
    if call.ended:  # already metered by a library hook (the client's own span)
        return
    try:
        if bound.is_stream(result):
            watch_stream(result, call, bound.adapter.stream_state(request), bound.stream_iterator)
        elif (
            bound.stream_of is not None and (inner := bound.stream_of(request, result)) is not None
        ):
            watch_stream(inner, call, bound.adapter.stream_state(request), bound.stream_iterator)
        elif is_raw(result):
            _complete_raw(call, request, bound, result)
        else:
            call.end_reading(partial(bound.adapter.read_response, request, result))
    except Exception as exc:
        log_once("response", exc)
        call.end(None)


_raw_types: dict[type, bool] = {}


def is_raw(result: Any) -> bool:
    """A raw response (``with_raw_response``/``with_streaming_response``); known per class,
    since looking up a missing attribute on a pydantic model costs microseconds."""
    cls = type(result)
    try:
        return _raw_types[cls]
    except KeyError:
        raw = _raw_types[cls] = hasattr(result, "http_response") and hasattr(result, "parse")
        return raw


def _complete_raw(call: Call, request: Request, bound: Bound, raw: Any) -> None:
    if raw in _pending_raw:  # already waiting for .parse() (seen by a library hook first)
        return
    if not request.stream and _body_read(raw):
        # with_raw_response, not streamed: the client has read the body; take the usage from
        # it without calling .parse(), whose errors belong to the user's own .parse() call.
        call.end_reading(partial(_read_raw, request, bound.adapter, raw))
        return
    # Streamed, or body not read yet: metered when the user calls .parse(); if they never
    # do, the call ends (without usage) when the raw response is collected.
    _pending_raw[raw] = (call, request, bound, weakref.finalize(raw, call.end, None))


def _body_read(raw: Any) -> bool:
    try:
        raw.http_response.content  # noqa: B018 (raises if the body was not read)
    except Exception:  # with_streaming_response: the user reads it
        return False
    return True


def _read_raw(request: Request, adapter: Adapter, raw: Any) -> ResponseFacts:
    try:
        data = raw.http_response.json()
    except Exception:  # not JSON
        return ResponseFacts()
    return adapter.read_response(request, data)


def _salvage(instance: Any) -> None:
    """The client failed *after* a billed response (its own parsing raised): keep the usage."""
    active = ACTIVE_CALL.get()
    if active is None or instance in _pending_raw:
        return
    call, request, bound = active
    if call.ended or request.stream:
        return
    try:
        data = instance.http_response.json()
        call.salvaged = bound.adapter.read_response(request, data)
    except Exception as exc:
        log_once("salvage", exc)


class _HeldEnd:
    """Stands in for an adopted span's ``end`` while ``.parse()`` runs: the client library
    ends its span when ``.parse()`` reads the body, before we can read the usage from it; the
    end is noted, and made once our attributes are on the span."""

    __slots__ = ("end_ns", "span")

    def __init__(self, span: Any) -> None:
        self.span = span
        self.end_ns: int | None = None

    def __call__(self, end_time: int | None = None) -> None:
        if self.end_ns is None:
            self.end_ns = end_time if end_time is not None else time.time_ns()

    def release(self) -> None:
        try:
            del self.span.end  # its own method again
            if self.end_ns is not None:
                self.span.end(end_time=self.end_ns)
        except Exception as exc:
            log_once("parse.release", exc)


def _hold(instance: Any) -> _HeldEnd | None:
    """A raw response waiting for ``.parse()`` whose call rides on the library's span."""
    try:
        pending = _pending_raw.get(instance)
        if pending is None:
            return None
        call = pending[0]
        if call.span is None or call.owns_span:
            return None
        held = _HeldEnd(call.span)
        call.span.end = held  # type: ignore[method-assign]
    except Exception as exc:
        log_once("parse.hold", exc)
        return None
    return held


def _parsed(instance: Any, result: Any) -> None:
    try:
        pending = _pending_raw.pop(instance, None)
        if pending is not None:
            call, request, bound, finalizer = pending
            finalizer.detach()  # the stream or object now carries the call
            complete(call, request, bound, result)
    except Exception as exc:
        log_once("parse", exc)


def parse_hook(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    """Around ``APIResponse.parse()``: meter the stream or object a raw response yields.

    Every plain call passes here too (the client parses its own response): with no raw
    response waiting, that is two falsy checks around the client's own call."""
    held = _hold(instance) if _raw_waiting else None
    try:
        try:
            result = wrapped(*args, **kwargs)
        except Exception:
            _salvage(instance)
            raise
        if _raw_waiting:
            _parsed(instance, result)
    finally:
        if held is not None:
            held.release()
    return result


async def async_parse_hook(
    wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any
) -> Any:
    held = _hold(instance) if _raw_waiting else None
    try:
        try:
            result = await wrapped(*args, **kwargs)
        except Exception:
            _salvage(instance)
            raise
        if _raw_waiting:
            _parsed(instance, result)
    finally:
        if held is not None:
            held.release()
    return result


def _completed(call: Call, request: Request, bound: Bound, result: Any) -> Any:
    complete(call, request, bound, result)
    return result


def _watched(call: Call, request: Request, bound: Bound, generator: Any) -> Any:
    return watch_generator(generator, call, bound.adapter.stream_state(request))


_Then = Callable[[Call, Request, Bound, Any], Any]


def _sync_wrapper(bound: Bound, then: _Then) -> Callable[..., Any]:
    def wrapper(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
        started = _begin(bound, instance, args, kwargs)
        if started is None:
            return wrapped(*args, **kwargs)
        call, request = started
        active = ACTIVE_CALL.set((call, request, bound))
        context = call.activate()
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            call.deactivate(context)
            ACTIVE_CALL.reset(active)
            call.end(None, exc)
            raise
        call.deactivate(context)
        ACTIVE_CALL.reset(active)
        return then(call, request, bound, result)

    return wrapper


def _async_wrapper(bound: Bound, then: _Then) -> Callable[..., Any]:
    async def wrapper(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
        started = _begin(bound, instance, args, kwargs)
        if started is None:
            return await wrapped(*args, **kwargs)
        call, request = started
        active = ACTIVE_CALL.set((call, request, bound))
        context = call.activate()
        try:
            result = await wrapped(*args, **kwargs)
        except BaseException as exc:
            call.deactivate(context)
            ACTIVE_CALL.reset(active)
            call.end(None, exc)
            raise
        call.deactivate(context)
        ACTIVE_CALL.reset(active)
        return then(call, request, bound, result)

    return wrapper


def sync_request_wrapper(bound: Bound) -> Callable[..., Any]:
    """Around the client's one request method: the call's span is current while it runs,
    and the result (object, raw response or stream) is metered."""
    return _sync_wrapper(bound, _completed)


def async_request_wrapper(bound: Bound) -> Callable[..., Any]:
    return _async_wrapper(bound, _completed)


def sync_generator_wrapper(bound: Bound) -> Callable[..., Any]:
    """Around a method that returns the stream as a plain generator, which only sends the
    request when first pulled (google-genai's ``request_streamed``): the user's code never
    holds that generator, so it is replaced by one that watches it and makes the call's span
    current while each chunk is pulled (the request included)."""
    return _sync_wrapper(bound, _watched)


def async_generator_wrapper(bound: Bound) -> Callable[..., Any]:
    """`sync_generator_wrapper` for a coroutine that sends the request and returns an async
    generator (google-genai's ``async_request_streamed``)."""
    return _async_wrapper(bound, _watched)


def inner_hook(bound: Bound) -> Callable[..., Any]:
    """Around a library method every call runs once, inside every instrumentation's wrapper
    (botocore's ``_make_request``): a call deferring to a peer's span (_peer_span.py) that has
    no span yet adopts the peer's, current here (our wrapper is outside the peer's), or,
    if the peer did not trace this call, starts its own, current for the rest of the call."""

    def hook(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
        active = ACTIVE_CALL.get()
        if active is None or active[2] is not bound or active[0].span is not None:
            return wrapped(*args, **kwargs)
        call = active[0]
        token: object = None
        try:
            if not call.ended and (
                bound.peer_span is None or not adopt_peer(call, bound.peer_span)
            ):
                call.start_span()
                token = call.activate()
        except Exception as exc:
            log_once("peer_span.inner", exc)
        try:
            return wrapped(*args, **kwargs)
        finally:
            call.deactivate(token)

    return hook
