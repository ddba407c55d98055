"""The one call wrapper every provider uses.

Each client library has a single method every API call passes through once (the API
client's ``request``), whatever the public method: ``create``, ``parse``, the ``.stream()``
helpers, ``with_raw_response``, beta resources, platform clients. We wrap that method; a
provider `Adapter` only reads its own request and response shapes.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from functools import partial
from typing import Any, Protocol

from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.util.types import AttributeValue

from ..attribution import current as current_attribution
from ..budgets import BudgetExceeded
from ..usage import TokenUsage
from ._recording import Call, HeldEnd, Recorder, Request, hold_end, release_end
from ._safety import log_once
from ._streams import StreamState, watch_stream


class Adapter(Protocol):
    """A provider's knowledge of its own shapes; everything else is shared."""

    def read_request(self, client: Any, options: Any) -> Request | None:
        """The request facts the call needs at once, or ``None`` if it is not metered.

        On the caller's thread: read as little as possible."""

    def request_attributes(self, request: Request) -> dict[str, AttributeValue]:
        """The span's request attributes (``gen_ai.request.*``), read from the body copy."""

    def max_output_tokens(self, request: Request) -> int | None:
        """The most output tokens the request can be billed for (budget pre-flight checks)."""

    def read_response(self, call: Call, request: Request, response: Any) -> TokenUsage | None:
        """Usage of a parsed, non-streamed response (a model object or decoded JSON)."""

    def keep_response(self, request: Request, response: Any) -> Any:
        """What `read_response` will read of ``response``, taken on the caller's thread when
        the reading waits for the recording thread: a few fields, so that the whole response
        (dozens of objects the garbage collector walks) is not held meanwhile. ``response``
        itself where more of it is needed (content capture, usage to count from the text)."""

    def stream_state(self, request: Request) -> StreamState:
        """A fresh accumulator for one stream of this request."""

    def is_stream(self, result: Any) -> bool:
        """True for the library's sync or async stream objects."""

    def estimate_input(self, request: Request) -> int:
        """Input tokens of the request, counted locally (for budget pre-flight checks)."""


# The call being metered in this context: nested paths (a helper calling another
# instrumented method, a second instrumentation of ours) count it once.
ACTIVE_CALL: ContextVar[tuple[Call, Request, Adapter] | None] = ContextVar(
    "otel_tokens_active_call", default=None
)


class Switch:
    """Turned off by ``uninstrument()``: wrappers captured earlier then pass straight through."""

    __slots__ = ("on",)

    def __init__(self) -> None:
        self.on = True


# Raw responses (``with_raw_response``/``with_streaming_response``) whose body we have not
# seen yet: metered when the user calls ``.parse()`` (hooked), or ended at collection.
_pending_raw: weakref.WeakKeyDictionary[
    Any, tuple[Call, Request, Adapter, weakref.finalize[Any, Any]]
] = weakref.WeakKeyDictionary()


# The dict behind _pending_raw: "is any raw response waiting?" on every call without a
# Python-level __len__ (entries of collected keys linger until removed: then the slow path).
_raw_waiting: dict[Any, Any] = _pending_raw.data  # type: ignore[attr-defined]


def _options_of(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
    # request(self, cast_to, options, *, stream=..., stream_cls=...)
    if "options" in kwargs:
        return kwargs["options"]
    return args[1] if len(args) > 1 else None


def _begin(
    recorder: Recorder, adapter: Adapter, switch: Switch, client: Any, args: Any, kwargs: Any
) -> tuple[Call, Request] | None:
    if not switch.on or ACTIVE_CALL.get() is not None or not is_instrumentation_enabled():
        return None
    try:
        request = adapter.read_request(client, _options_of(args, kwargs))
        if request is None:
            return None
        call = Call(recorder, request, adapter)
    except Exception as exc:
        log_once("request", exc)
        return None
    budgets = recorder.budgets
    if budgets is not None:
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


def complete(call: Call, request: Request, adapter: Adapter, result: Any) -> None:
    """Meter a successful result; never raises, never replaces the result."""
    if call.ended:  # already metered by a library hook (the client's own span)
        return
    try:
        if adapter.is_stream(result):
            watch_stream(result, call, adapter.stream_state(request))
        elif is_raw(result):
            _complete_raw(call, request, adapter, result)
        else:
            call.end_with_response(result)
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


def _complete_raw(call: Call, request: Request, adapter: Adapter, raw: Any) -> None:
    if raw in _pending_raw:  # already waiting for .parse() (seen by a library hook first)
        return
    if not request.stream and _body_read(raw):
        # with_raw_response, not streamed: the client has read the body; take the usage from
        # it without calling .parse(), whose errors belong to the user's own .parse() call.
        call.end_later(partial(_read_raw, call, request, adapter, raw))
        return
    # Streamed, or body not read yet: metered when the user calls .parse(); if they never
    # do, the call ends (without usage) when the raw response is collected.
    _pending_raw[raw] = (call, request, adapter, weakref.finalize(raw, call.end, None))


def _body_read(raw: Any) -> bool:
    try:
        raw.http_response.content  # noqa: B018 (raises if the body was not read)
    except Exception:  # with_streaming_response: the user reads it
        return False
    return True


def _read_raw(call: Call, request: Request, adapter: Adapter, raw: Any) -> TokenUsage | None:
    try:
        data = raw.http_response.json()
    except Exception:  # not JSON
        return None
    return adapter.read_response(call, request, data)


def _salvage(instance: Any) -> None:
    """The client failed *after* a billed response (its own parsing raised): keep the usage."""
    active = ACTIVE_CALL.get()
    if active is None or instance in _pending_raw:
        return
    call, request, adapter = active
    if call.ended or request.stream:
        return
    try:
        data = instance.http_response.json()
        call.salvaged = adapter.read_response(call, request, data)
    except Exception as exc:
        log_once("salvage", exc)


def _hold(instance: Any) -> tuple[Call, Any, HeldEnd] | None:
    """A raw response waiting for ``.parse()`` whose call rides on the client library's span:
    the library ends that span when ``.parse()`` reads the body, before we can read the
    usage; hold that end until our attributes are on the span."""
    try:
        pending = _pending_raw.get(instance)
        if pending is None:
            return None
        call = pending[0]
        span = call.adopted_span
        held = hold_end(span) if span is not None else None
    except Exception as exc:
        log_once("parse.hold", exc)
        return None
    return None if held is None else (call, span, held)


def _parsed(instance: Any, result: Any) -> None:
    try:
        pending = _pending_raw.pop(instance, None)
        if pending is not None:
            call, request, adapter, finalizer = pending
            finalizer.detach()  # the stream or object now carries the call
            complete(call, request, adapter, result)
    except Exception as exc:
        log_once("parse", exc)


def parse_hook(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    """Around ``APIResponse.parse()``: meter the stream or object a raw response yields.

    Every plain call passes here too (the client parses its own response): with no raw
    response waiting, that is two falsy checks around the client's own call."""
    holding = _hold(instance) if _raw_waiting else None
    try:
        result = wrapped(*args, **kwargs)
    except Exception:
        _salvage(instance)
        raise
    finally:
        if holding is not None:
            release_end(*holding)
    if _raw_waiting:
        _parsed(instance, result)
    return result


async def async_parse_hook(
    wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any
) -> Any:
    holding = _hold(instance) if _raw_waiting else None
    try:
        result = await wrapped(*args, **kwargs)
    except Exception:
        _salvage(instance)
        raise
    finally:
        if holding is not None:
            release_end(*holding)
    if _raw_waiting:
        _parsed(instance, result)
    return result


def sync_request_wrapper(
    recorder: Recorder, adapter: Adapter, switch: Switch
) -> Callable[..., Any]:
    def wrapper(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
        started = _begin(recorder, adapter, switch, instance, args, kwargs)
        if started is None:
            return wrapped(*args, **kwargs)
        call, request = started
        active = ACTIVE_CALL.set((call, request, adapter))
        context = call.activate()
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            call.deactivate(context)
            ACTIVE_CALL.reset(active)
            call.end(call.salvaged, exc)
            raise
        call.deactivate(context)
        ACTIVE_CALL.reset(active)
        complete(call, request, adapter, result)
        return result

    return wrapper


def async_request_wrapper(
    recorder: Recorder, adapter: Adapter, switch: Switch
) -> Callable[..., Any]:
    async def wrapper(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
        started = _begin(recorder, adapter, switch, instance, args, kwargs)
        if started is None:
            return await wrapped(*args, **kwargs)
        call, request = started
        active = ACTIVE_CALL.set((call, request, adapter))
        context = call.activate()
        try:
            result = await wrapped(*args, **kwargs)
        except BaseException as exc:
            call.deactivate(context)
            ACTIVE_CALL.reset(active)
            call.end(call.salvaged, exc)
            raise
        call.deactivate(context)
        ACTIVE_CALL.reset(active)
        complete(call, request, adapter, result)
        return result

    return wrapper
