"""What the framework instrumentations (LiteLLM, LangChain, the OpenAI Agents SDK) share:
wrapping a framework's entry points around a `FrameworkCall`, watching its streams, running
a framework run as a `workflow`, and patching the library when each of its modules is
imported (undone by ``uninstrument``). Each framework module keeps only its library's
knowledge: which functions, how to read a request and a response, what a run is named."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Iterator
from contextlib import AbstractContextManager, ExitStack
from typing import Any, ClassVar, Protocol

import wrapt
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import is_instrumentation_enabled

from .._safety import log_once
from ._adapter import NO_FACTS, Request, ResponseFacts
from ._framework import FrameworkCall
from ._instrumentor import unwrap_all

# (instance, args, kwargs) of the wrapped call -> its framework call, or None: not metered.
Begin = Callable[[Any, Any, Any], FrameworkCall | None]
# (framework call, what the wrapped call returned) -> what the caller gets; ends the call
# (or hands it to a stream watcher) and never raises.
Finish = Callable[[FrameworkCall, Any], Any]
# (request, response) -> the framework's own facts of the response.
Read = Callable[[Request, Any], ResponseFacts]


def end_response(fc: FrameworkCall, read: Read, response: Any) -> None:
    """End ``fc`` with what ``read`` finds in ``response``, unless a call inside claimed it
    (then nothing is read); a reader's error is logged once and the call ends without usage."""
    try:
        facts = NO_FACTS if fc.claimed else read(fc.call.request, response)
    except Exception as exc:
        log_once(f"{fc.scope.framework}.response", exc)
        facts = NO_FACTS
    fc.end(facts)


def ender(read: Read) -> Finish:
    """A `Finish` for a call whose result is the response: ended with ``read``'s facts."""

    def finish(fc: FrameworkCall, response: Any) -> Any:
        end_response(fc, read, response)
        return response

    return finish


def call_wrappers(begin: Begin, finish: Finish) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """wrapt wrappers (sync, async) that run the wrapped call inside the framework call
    ``begin`` opens (its span current, its scope open), end it with the error if the call
    raises, else hand the result to ``finish``."""

    def sync(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
        fc = begin(instance, args, kwargs)
        if fc is None:
            return wrapped(*args, **kwargs)
        fc.enter()
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            fc.exit()
            fc.end(NO_FACTS, exc)
            raise
        fc.exit()
        return finish(fc, result)

    async def asynchronous(
        wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any
    ) -> Any:
        fc = begin(instance, args, kwargs)
        if fc is None:
            return await wrapped(*args, **kwargs)
        fc.enter()
        try:
            result = await wrapped(*args, **kwargs)
        except BaseException as exc:
            fc.exit()
            fc.end(NO_FACTS, exc)
            raise
        fc.exit()
        return finish(fc, result)

    return sync, asynchronous


class Seen(Protocol):
    """What a watched stream's items told so far (a framework's chunks or events)."""

    def add(self, item: Any) -> None: ...

    def facts(self, request: Request, error: BaseException | None) -> ResponseFacts: ...


def end_stream(fc: FrameworkCall, seen: Seen, error: BaseException | None) -> None:
    try:
        facts = NO_FACTS if fc.claimed else seen.facts(fc.call.request, error)
    except Exception as exc:
        log_once(f"{fc.scope.framework}.stream", exc)
        facts = NO_FACTS
    fc.end(facts, error)


def _add(fc: FrameworkCall, seen: Seen, item: Any) -> None:
    fc.call.first_chunk()
    try:
        seen.add(item)
    except Exception as exc:
        log_once(f"{fc.scope.framework}.chunk", exc)


def watch(fc: FrameworkCall, stream: Iterator[Any], seen: Seen) -> Iterator[Any]:
    """``stream`` with the framework call's span current (and scope open) while each item
    is pulled, ended when the stream ends, fails or is closed."""
    error: BaseException | None = None
    try:
        while True:
            fc.enter()
            try:
                item = next(stream)
            except StopIteration:
                break
            finally:
                fc.exit()
            _add(fc, seen, item)
            yield item
    except GeneratorExit:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
        raise
    except BaseException as exc:
        error = exc
        raise
    finally:
        end_stream(fc, seen, error)


async def awatch(fc: FrameworkCall, stream: AsyncIterator[Any], seen: Seen) -> AsyncIterator[Any]:
    """`watch` for an async stream."""
    error: BaseException | None = None
    try:
        while True:
            fc.enter()
            try:
                item = await stream.__anext__()
            except StopAsyncIteration:
                break
            finally:
                fc.exit()
            _add(fc, seen, item)
            yield item
    except GeneratorExit:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
        raise
    except BaseException as exc:
        error = exc
        raise
    finally:
        end_stream(fc, seen, error)


def stream_wrapper(
    begin: Begin, seen: Callable[[], Seen], *, asynchronous: bool
) -> Callable[..., Any]:
    """A wrapt wrapper for a function returning a stream (an iterator, or with
    ``asynchronous`` an async iterator): the framework call lasts as long as the stream."""
    watcher: Callable[..., Any] = awatch if asynchronous else watch

    def wrapper(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
        fc = begin(instance, args, kwargs)
        if fc is None:
            return wrapped(*args, **kwargs)
        try:
            stream = wrapped(*args, **kwargs)
        except BaseException as exc:
            fc.end(NO_FACTS, exc)
            raise
        return watcher(fc, stream, seen())

    return wrapper


# (instance, args, kwargs) -> (workflow name, attribution tags of the calls inside), or
# None: this run is not a workflow.
Run = Callable[[Any, Any, Any], "tuple[str, dict[str, str]] | None"]


def context_wrappers(
    framework: str, opened: Callable[[Any, Any, Any], AbstractContextManager[Any] | None]
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """wrapt wrappers (sync, async) that run the wrapped call inside the context manager
    ``opened(instance, args, kwargs)`` returns (None: as without us). ``opened`` failing is
    logged once and the call runs as without us."""

    def enter(instance: Any, args: Any, kwargs: Any) -> AbstractContextManager[Any] | None:
        if not is_instrumentation_enabled():
            return None
        try:
            return opened(instance, args, kwargs)
        except Exception as exc:
            log_once(f"{framework}.context", exc)
            return None

    def sync(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
        around = enter(instance, args, kwargs)
        if around is None:
            return wrapped(*args, **kwargs)
        with around:
            return wrapped(*args, **kwargs)

    async def asynchronous(
        wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any
    ) -> Any:
        around = enter(instance, args, kwargs)
        if around is None:
            return await wrapped(*args, **kwargs)
        with around:
            return await wrapped(*args, **kwargs)

    return sync, asynchronous


def run_wrappers(
    framework: str, options: dict[str, Any], run: Run
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """wrapt wrappers (sync, async) that make a framework run (a graph, chain or agent run)
    a `workflow` roll-up named as ``run`` says, its tags on the calls inside. A workflow
    inside another is nested: each call is in both totals once (see `workflow`)."""
    from ..attribution import attribute
    from ..workflow import workflow

    tp, mp = options.get("tracer_provider"), options.get("meter_provider")

    def opened(instance: Any, args: Any, kwargs: Any) -> ExitStack | None:
        found = run(instance, args, kwargs)
        if found is None:
            return None
        name, tags = found
        with ExitStack() as stack:
            stack.enter_context(workflow(name, tracer_provider=tp, meter_provider=mp))
            if tags:
                stack.enter_context(attribute(**tags))
            return stack.pop_all()  # entered: the wrapped call runs inside, then it exits

    return context_wrappers(framework, opened)


def tag_wrappers(
    framework: str, tags: Callable[[Any, Any, Any], dict[str, str] | None]
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """wrapt wrappers (sync, async) that put ``tags`` (what is running: a tool) on the calls
    made inside the wrapped call, as attribution tags."""
    from ..attribution import attribute

    def opened(instance: Any, args: Any, kwargs: Any) -> attribute | None:
        found = tags(instance, args, kwargs)
        return attribute(**found) if found else None

    return context_wrappers(framework, opened)


class Patching:
    """One ``instrument()`` of a framework: patches each of its modules once, when it is
    imported, unless ``uninstrument()`` came first; a failure undoes every patch (the
    application's import never breaks)."""

    def __init__(self, framework: str, options: dict[str, Any]) -> None:
        self.framework = framework
        self.options = options
        self.wrapped: list[tuple[Any, str]] = []
        self.done: set[str] = set()
        self.cancelled = False

    def hook(self, patch: Callable[[Any], None]) -> Callable[[Any], None]:
        """A post-import hook running ``patch(module)`` once per module."""

        def on_import(module: Any) -> None:
            name = getattr(module, "__name__", "")
            if self.cancelled or name in self.done:
                return
            self.done.add(name)
            try:
                patch(module)
            except Exception as exc:  # never break the application's import
                log_once(f"instrument.{self.framework}", exc)
                self.cancel()

        return on_import

    def wrap(self, owner: Any, name: str, wrapper: Any) -> None:
        wrapt.wrap_function_wrapper(owner, name, wrapper)
        self.wrapped.append((owner, name))

    def cancel(self) -> None:
        self.cancelled = True
        unwrap_all(self.wrapped, self.framework)


class FrameworkInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """An instrumentor that patches a framework's modules as they are imported: a subclass
    names the framework, its dependency, and what to patch in each module (`patches`)."""

    framework: ClassVar[str]
    dependencies: ClassVar[tuple[str, ...]]
    _patching: Patching | None = None

    def patches(self, patching: Patching) -> dict[str, Callable[[Any], None]]:
        """module name -> what to patch in it (with ``patching.wrap``) once it is imported."""
        raise NotImplementedError

    def instrumentation_dependencies(self) -> Collection[str]:
        return self.dependencies

    def _instrument(self, **kwargs: Any) -> None:
        patching = self._patching = Patching(self.framework, kwargs)
        for module, patch in self.patches(patching).items():
            wrapt.register_post_import_hook(patching.hook(patch), module)

    def _uninstrument(self, **kwargs: Any) -> None:
        patching, self._patching = self._patching, None
        if patching is not None:
            patching.cancel()
