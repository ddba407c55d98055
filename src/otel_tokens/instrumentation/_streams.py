"""One sync and one async stream watcher for every provider.

The call ends when the stream does, on the thread that ends it: after the last chunk, a
``close()`` or a failure the span is finished and exported. The user gets back the very
stream object the client made (``type(s) is openai.Stream``
holds): we swap its private ``_iterator`` (botocore's EventStream: ``_event_generator``, the
`Description`'s ``stream_iterator``) for a generator that passes every event through
the provider's `StreamState`. The call is ended exactly once, whichever comes first: the
stream is exhausted, fails, is closed, or is garbage-collected unfinished (even if it was
never iterated). A state reads what it needs from each event as it passes and keeps no
reference to the event: keeping events would make the garbage collector walk them.

Reading an event is what costs, per chunk: an attribute of a pydantic model costs about 1 µs
on a real stream, where the client's parsing between two chunks has emptied CPython's type
cache. A stream whose provider reports its usage at the end needs nothing from the events
in between: its `TailState` is not called per event, and the watcher only keeps the last two.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from functools import partial
from types import AsyncGeneratorType
from typing import Any

from .._safety import log_once
from ._adapter import ResponseFacts, StreamState, TailState
from ._call import Call


class Finisher:
    """Ends one streamed call once; shared by the watcher, close hooks and the finalizer."""

    __slots__ = ("__weakref__", "call", "done", "state", "watcher")

    def __init__(self, call: Call, state: StreamState) -> None:
        self.call = call
        self.state = state
        self.done = False
        self.watcher: Any = None  # a weak reference to the watching generator

    @property
    def pulling_now(self) -> bool:
        """True while the watcher runs: it waits on the client's iterator, so a close of the
        HTTP response comes from the client itself (end of body, failure), and the watcher
        ends the call with the right outcome right after. Asked of the generator, so that
        nothing is stored per chunk."""
        # Weakly referenced: the watcher's frame holds the client's iterator, which holds the
        # stream, whose collection must still be able to end the call.
        watcher = self.watcher() if self.watcher is not None else None
        if watcher is None:
            return False
        running: bool = (
            watcher.ag_running if isinstance(watcher, AsyncGeneratorType) else watcher.gi_running
        )
        return running

    def finish(
        self, error: BaseException | None = None, reported: tuple[str, str] | None = None
    ) -> None:
        """End the call with the state's facts; ``reported``: the (type, message) of a
        failure the user sees in another form than ``error`` (a library's wrapper)."""
        if self.done:
            return
        self.done = True
        read = partial(self.state.finish, error)
        if reported is not None:
            read = partial(_reporting, read, reported)
        self.call.end_reading(read, error)

    def __call__(self) -> None:  # weakref finalizer: the stream was dropped unfinished
        try:
            self.finish(None)
        except Exception as exc:
            log_once("stream.gc", exc)


def _reporting(read: Callable[[], ResponseFacts], reported: tuple[str, str]) -> ResponseFacts:
    return replace(read(), error=reported)


def _watch(inner: Iterator[Any], fin: Finisher) -> Iterator[Any]:
    # Per chunk this touches as little of our own state as it can: on a real stream the
    # client's parsing between two chunks has pushed it out of the CPU's caches. The close
    # hook asks this generator whether it is running (`gi_running`): no flag per chunk.
    state = fin.state
    read = state.event
    first = True
    try:
        if isinstance(state, TailState) and state.passive:
            # `TailState.keep`, inlined: a call per chunk would cost more than the stores.
            for item in inner:
                if first:
                    first = False
                    fin.call.first_chunk()
                state.previous = state.last
                state.last = item
                state.events += 1
                yield item
        else:
            for item in inner:
                if first:
                    first = False
                    fin.call.first_chunk()
                try:
                    hide = read(item)
                except Exception as exc:
                    log_once("stream.event", exc)
                    hide = False
                if not hide:
                    yield item
    except BaseException as exc:
        # GeneratorExit: closed or collected before the end; not an error of the call.
        fin.finish(None if isinstance(exc, GeneratorExit) else exc)
        raise
    fin.finish(None)


async def _awatch(inner: AsyncIterator[Any], fin: Finisher) -> AsyncIterator[Any]:
    # As `_watch`; the close hook asks `ag_running`, which is true while this awaits.
    state = fin.state
    read = state.event
    tail = state if isinstance(state, TailState) and state.passive else None
    first = True
    try:
        async for item in inner:
            if first:
                first = False
                fin.call.first_chunk()
            if tail is not None:
                tail.previous = tail.last
                tail.last = item
                tail.events += 1
                yield item
                continue
            try:
                hide = read(item)
            except Exception as exc:
                log_once("stream.event", exc)
                hide = False
            if not hide:
                yield item
    except BaseException as exc:
        fin.finish(None if isinstance(exc, GeneratorExit) else exc)
        raise
    fin.finish(None)


def watch_stream(
    stream: Any, call: Call, state: StreamState, iterator: str = "_iterator"
) -> Finisher | None:
    """Meter ``stream`` in place by swapping its ``iterator`` attribute (see
    `Description.stream_iterator`); returns its `Finisher`, or ``None`` if it cannot be
    watched."""
    fin = Finisher(call, state)
    call.finisher = fin
    try:
        inner = getattr(stream, iterator)  # anthropic builds it lazily: this creates it
        is_async = hasattr(inner, "__anext__")
        watcher = _awatch(inner, fin) if is_async else _watch(inner, fin)
        fin.watcher = weakref.ref(watcher)
        setattr(stream, iterator, watcher)
        _hook_close(stream, fin, is_async)
        weakref.finalize(stream, fin)
    except Exception as exc:
        log_once("stream.watch", exc)
        call.end(None)
        return None
    return fin


def _hook_close(stream: Any, fin: Finisher, is_async: bool) -> None:
    """End the call when the user closes the stream early (``close()``, ``with``).

    The client's stream helpers (``.stream()`` managers) close the HTTP response directly,
    so its close is hooked too.
    """
    targets = [(stream, "close")]
    response = getattr(stream, "response", None)
    if response is not None:
        targets.append((response, "aclose" if is_async else "close"))
    for owner, name in targets:
        original = getattr(owner, name, None)
        if original is None:
            continue
        try:
            setattr(owner, name, _closer(original, fin, is_async))
        except (AttributeError, TypeError):  # a response type that refuses new attributes
            continue


def _closer(original: Any, fin: Finisher, is_async: bool) -> Any:
    if is_async:

        async def aclose(*args: Any, **kwargs: Any) -> Any:
            try:
                return await original(*args, **kwargs)
            finally:
                if not fin.pulling_now:
                    fin.finish(None)

        return aclose

    def close(*args: Any, **kwargs: Any) -> Any:
        try:
            return original(*args, **kwargs)
        finally:
            if not fin.pulling_now:
                fin.finish(None)

    return close


def watch_generator(generator: Any, call: Call, state: StreamState) -> Any:
    """A generator that only the client library holds (its own stream of chunks), watched by
    replacing it: the returned generator passes every chunk through ``state`` and makes the
    call's span current while it pulls the next chunk from ``generator`` (a generator that
    sends its request when first pulled sends it inside the span). Ends the call once, as
    `watch_stream` does, also when the replacement is dropped before it is pulled."""
    fin = Finisher(call, state)
    call.finisher = fin
    if hasattr(generator, "__anext__"):
        watcher: Any = _awatch_steps(generator, fin)
    else:
        watcher = _watch_steps(generator, fin)
    fin.watcher = weakref.ref(watcher)
    weakref.finalize(watcher, fin)
    return watcher


def _watch_steps(inner: Iterator[Any], fin: Finisher) -> Iterator[Any]:
    call, read = fin.call, fin.state.event
    try:
        while True:
            token = call.activate()
            try:
                item = next(inner)
            except StopIteration:
                break
            finally:
                call.deactivate(token)
            call.first_chunk()
            if not _hidden(read, item):
                yield item
    except BaseException as exc:
        fin.finish(None if isinstance(exc, GeneratorExit) else exc)
        raise
    fin.finish(None)


async def _awatch_steps(inner: AsyncIterator[Any], fin: Finisher) -> AsyncIterator[Any]:
    call, read = fin.call, fin.state.event
    try:
        while True:
            token = call.activate()
            try:
                item = await inner.__anext__()
            except StopAsyncIteration:
                break
            finally:
                call.deactivate(token)
            call.first_chunk()
            if not _hidden(read, item):
                yield item
    except BaseException as exc:
        fin.finish(None if isinstance(exc, GeneratorExit) else exc)
        raise
    fin.finish(None)


def _hidden(read: Callable[[Any], bool], item: Any) -> bool:
    try:
        return read(item)
    except Exception as exc:
        log_once("stream.event", exc)
        return False
