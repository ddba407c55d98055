"""The one instrumentor, driven by a provider's `Description`.

``instrument()`` only registers a post-import hook for the client library: the library is
patched when the application imports it (at once if it already has), so an application
that never imports ``anthropic`` never pays for it, and start-up imports nothing heavy. The
recorder, the adapter and the price catalog come later still: the first two when the library
is patched, the catalog on the first call that ends.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import threading
from collections.abc import Collection
from typing import TYPE_CHECKING, Any, ClassVar

import wrapt
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import unwrap

from .._safety import log_once
from ._description import Description, Target

if TYPE_CHECKING:
    from ._recording import Recorder

_log = logging.getLogger("otel_tokens")
# budgets.ENV_BUDGETS, named here: importing budgets loads the price catalog.
ENV_BUDGETS = "OTEL_TOKENS_BUDGETS"
# window.ENV_CONTEXT_GUARD, named here: the window package is imported only when it is on.
ENV_CONTEXT_GUARD = "OTEL_TOKENS_CONTEXT_GUARD"

# One recorder per (providers, catalog, budgets): instruments are made once. Values keep
# their key objects alive, so that an id() in a key is never reused.
_recorders: dict[tuple[int, int, int, int], tuple[Recorder, tuple[Any, ...]]] = {}
_lock = threading.RLock()


def _recorder(options: dict[str, Any]) -> Recorder:
    """``budgets``: a `BudgetManager`; by default one from ``OTEL_TOKENS_BUDGETS`` if set."""
    from ._recording import Recorder

    tp, mp = options.get("tracer_provider"), options.get("meter_provider")
    catalog, budgets = options.get("catalog"), options.get("budgets")
    key = (id(tp), id(mp), id(catalog), id(budgets))
    with _lock:
        found = _recorders.get(key)
        if found is not None:
            return found[0]
        keep = (tp, mp, catalog, budgets)
        if budgets is None and os.environ.get(ENV_BUDGETS):
            from ..budgets import BudgetManager

            budgets = BudgetManager.from_env(catalog=catalog, meter_provider=mp)
        recorder = Recorder(tracer_provider=tp, meter_provider=mp, catalog=catalog, budgets=budgets)
        _recorders[key] = (recorder, keep)
        return recorder


def _resolve(target: Target) -> tuple[Any, str]:
    """(owner, name) of ``target``: its class or module, and the attribute's last name."""
    owner: Any = importlib.import_module(target.module)
    *path, name = target.attribute.split(".")
    for part in path:
        owner = getattr(owner, part)
    getattr(owner, name)  # AttributeError if this release has no such function
    return owner, name


def _load(spec: str) -> Any:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


class _Patching:
    """One ``instrument()`` of a library: patches it when it is imported, once, unless
    ``uninstrument()`` came first."""

    def __init__(self, description: Description, options: dict[str, Any]) -> None:
        from ._wrapper import Switch

        self.description = description
        self.options = options
        self.switch = Switch()
        self.wrapped: list[tuple[Any, str]] = []
        self.cancelled = False

    def on_import(self, module: Any = None) -> None:
        with _lock:
            if self.cancelled or self.wrapped:
                return
            try:
                self._patch()
            except Exception as exc:  # never break the application's import
                log_once(f"instrument.{self.description.name}", exc)
                self._unpatch()

    def cancel(self) -> None:
        with _lock:
            self.cancelled = True
            self.switch.on = False  # wrappers captured earlier (with_raw_response) pass through
            self._unpatch()

    def _patch(self) -> None:
        from . import _library_span, _wrapper

        d = self.description
        # A peer the adapter rides on (peer_inner) wraps the public method too: not a warning.
        if d.public_method is not None and d.peer_inner is None:
            _warn_if_wrapped(d.public_method)
        hooks = d.library_span
        library_span = hooks is not None and all(
            _exists(t) for t in (hooks.call_started, hooks.call_finished, hooks.stream_ended)
        )
        options = {k: self.options[k] for k in d.options if k in self.options}
        adapter = _load(d.adapter)(library_span=library_span, **options)
        bound = _wrapper.Bound(
            recorder=_recorder(self.options),
            adapter=adapter,
            stream_types=tuple(_load(s) for s in d.streams),
            switch=self.switch,
            stream_iterator=d.stream_iterator,
            context_guard=self.options.get("context_guard"),
        )
        self._wrap(d.sync_request, _wrapper.sync_request_wrapper(bound))
        if d.async_request is not None:
            self._wrap(d.async_request, _wrapper.async_request_wrapper(bound))
        if d.sync_stream_request is not None:
            self._wrap(d.sync_stream_request, _wrapper.sync_generator_wrapper(bound))
        if d.async_stream_request is not None:
            owner, name = _resolve(d.async_stream_request)
            # An async generator function (cohere's chat_stream) returns its generator without
            # being awaited: it is wrapped as a sync one, whose watcher handles both kinds.
            if inspect.isasyncgenfunction(inspect.getattr_static(owner, name)):
                self._wrap(d.async_stream_request, _wrapper.sync_generator_wrapper(bound))
            else:
                self._wrap(d.async_stream_request, _wrapper.async_generator_wrapper(bound))
        for targets, hook in (
            (d.parse, _wrapper.parse_hook),
            (d.async_parse, _wrapper.async_parse_hook),
        ):
            for target in targets:
                if _exists(target):  # raw responses of releases without it are not metered
                    self._wrap(target, hook)
        if d.peer_inner is not None and _exists(d.peer_inner):
            self._wrap(d.peer_inner, _wrapper.inner_hook(bound))
        if library_span and hooks is not None:
            self._wrap(hooks.call_started, _library_span.call_start_hook)
            self._wrap(hooks.call_finished, _library_span.call_finish_hook(adapter))
            self._wrap(hooks.stream_ended, _library_span.stream_end_hook(adapter))

    def _wrap(self, target: Target, wrapper: Any) -> None:
        owner, name = _resolve(target)
        wrapt.wrap_function_wrapper(owner, name, wrapper)
        self.wrapped.append((owner, name))

    def _unpatch(self) -> None:
        unwrap_all(self.wrapped, self.description.name)


def unwrap_all(wrapped: list[tuple[Any, str]], library: str) -> None:
    """Undo the patches listed in ``wrapped`` (emptied), the last first; one that fails is
    logged once and the others are still undone."""
    while wrapped:
        owner, name = wrapped.pop()
        try:
            unwrap(owner, name)
        except Exception as exc:
            log_once(f"uninstrument.{library}", exc)


def _context_guard(option: str | None) -> str | None:
    """The guard mode: the ``context_guard`` option (a bad value raises ValueError, to the
    caller of ``instrument()``), else ``OTEL_TOKENS_CONTEXT_GUARD`` (a bad value is logged
    and the guard stays off: configuration never breaks the application)."""
    if option is None and not os.environ.get(ENV_CONTEXT_GUARD):
        return None  # off: the window package is not imported
    from ..window import guard_mode

    if option is not None:
        return guard_mode(option)
    try:
        return guard_mode(None)
    except ValueError as exc:
        log_once("context_guard.env", exc)
        return None


def _exists(target: Target) -> bool:
    try:
        _resolve(target)
    except (AttributeError, ImportError):
        return False
    return True


def _warn_if_wrapped(target: Target) -> None:
    """Another GenAI instrumentation on the same library would record usage a second time."""
    try:
        owner, name = _resolve(target)
        # Looked up without binding: a method wrapped by wrapt binds to a BoundFunctionWrapper.
        if isinstance(inspect.getattr_static(owner, name), wrapt.FunctionWrapper):
            _log.warning(
                "otel-tokens: %s is already instrumented by another library; its spans "
                "would carry usage too and backends would count tokens twice. Disable it "
                "with OTEL_PYTHON_DISABLED_INSTRUMENTATIONS (see docs/instrumentation.md, "
                "'Double instrumentation').",
                target,
            )
    except Exception:
        return


class LibraryInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Instruments the client library its `description` names; one subclass per provider.

    ``instrument()`` accepts ``tracer_provider``, ``meter_provider``, ``catalog`` (a
    `Catalog`), ``budgets`` (a `BudgetManager`), ``context_guard`` (``"raise"``,
    ``"observe"`` or ``"off"``; default ``OTEL_TOKENS_CONTEXT_GUARD``, see
    docs/preflight.md) and the description's adapter options.
    """

    # No __init__: BaseInstrumentor is a singleton whose __init__ runs on every construction.
    description: ClassVar[Description]
    _patching: _Patching | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return (self.description.requirement,)

    def _instrument(self, **kwargs: Any) -> None:
        if kwargs.get("recording") not in (None, "inline"):
            _log.warning(
                "otel-tokens: recording=%r is no longer supported: every call is recorded "
                "on the thread that ends it",
                kwargs["recording"],
            )
        kwargs = {**kwargs, "context_guard": _context_guard(kwargs.get("context_guard"))}
        patching = self._patching = _Patching(self.description, kwargs)
        # Runs at once if the library is already imported, else when the application
        # imports it.
        wrapt.register_post_import_hook(patching.on_import, self.description.module)

    def _uninstrument(self, **kwargs: Any) -> None:
        patching, self._patching = self._patching, None
        if patching is not None:
            patching.cancel()
