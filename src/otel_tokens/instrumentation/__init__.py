"""OpenTelemetry instrumentors for LLM client libraries.

Registered in the ``opentelemetry_instrumentor`` entry-point group, so
``opentelemetry-instrument python app.py`` finds them; or call ``instrument()`` yourself.
Both accept ``tracer_provider``, ``meter_provider``, ``catalog`` (a `Catalog`), ``budgets``
and ``recording`` (``"background"``, the default, or ``"inline"``; else
``OTEL_TOKENS_RECORDING``).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Collection
from typing import Any

import wrapt
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import unwrap

from .._background import queue
from ..budgets import BudgetManager
from ._recording import Recorder
from ._wrapper import (
    Switch,
    async_parse_hook,
    async_request_wrapper,
    parse_hook,
    sync_request_wrapper,
)

__all__ = ["AnthropicInstrumentor", "OpenAIInstrumentor"]

_log = logging.getLogger("otel_tokens")
ENV_RECORDING = "OTEL_TOKENS_RECORDING"
# Values keep their key objects alive, so that an id() in a key is never reused.
_recorders: dict[tuple[int, int, int, int, bool], tuple[Recorder, tuple[Any, ...]]] = {}
_recorders_lock = threading.Lock()


def _background(kwargs: dict[str, Any]) -> bool:
    mode = str(kwargs.get("recording") or os.environ.get(ENV_RECORDING) or "background")
    mode = mode.strip().lower()
    if mode not in ("background", "inline"):
        _log.warning("otel-tokens: %s=%r is not 'background' or 'inline'", ENV_RECORDING, mode)
        return True
    return mode == "background"


def _recorder(kwargs: dict[str, Any]) -> Recorder:
    """One recorder per (providers, catalog, budgets, mode): instruments are made once.

    ``budgets``: a `BudgetManager`; by default one from ``OTEL_TOKENS_BUDGETS`` if set.
    """
    tp, mp = kwargs.get("tracer_provider"), kwargs.get("meter_provider")
    catalog, budgets = kwargs.get("catalog"), kwargs.get("budgets")
    background = _background(kwargs)
    key = (id(tp), id(mp), id(catalog), id(budgets), background)
    with _recorders_lock:
        found = _recorders.get(key)
        if found is not None:
            return found[0]
        keep = (tp, mp, catalog, budgets)
        if budgets is None:
            budgets = BudgetManager.from_env(catalog=catalog, meter_provider=mp)
        recorder = Recorder(
            tracer_provider=tp,
            meter_provider=mp,
            catalog=catalog,
            budgets=budgets,
            background=background,
        )
        _recorders[key] = (recorder, keep)
        return recorder


# The SDK providers flush and shut down after recording what our queue holds: a user's
# force_flush() (serverless handlers, tests) then sees every call that has ended.
_PROVIDER_METHODS = (
    ("opentelemetry.sdk.trace", "TracerProvider", "force_flush"),
    ("opentelemetry.sdk.trace", "TracerProvider", "shutdown"),
    ("opentelemetry.sdk.metrics", "MeterProvider", "force_flush"),
    ("opentelemetry.sdk.metrics", "MeterProvider", "shutdown"),
)
_active: set[str] = set()


def _flush_first(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    try:
        timeout = kwargs.get("timeout_millis", args[0] if args else 10_000)
        queue.flush(min(float(timeout), 30_000) / 1000)
    except Exception:
        _log.debug("otel-tokens: could not flush before the provider", exc_info=True)
    return wrapped(*args, **kwargs)


def _hook_providers(who: str) -> None:
    with _recorders_lock:
        if not _active:
            for module, cls, name in _PROVIDER_METHODS:
                try:
                    wrapt.wrap_function_wrapper(module, f"{cls}.{name}", _flush_first)
                except (AttributeError, ImportError):  # the API without the SDK
                    continue
        _active.add(who)


def _unhook_providers(who: str) -> None:
    import importlib

    with _recorders_lock:
        _active.discard(who)
        if _active:
            return
        for module, cls, name in _PROVIDER_METHODS:
            try:
                unwrap(getattr(importlib.import_module(module), cls), name)
            except (AttributeError, ImportError):
                continue


def _warn_if_wrapped(module: str, attr: str, who: str) -> None:
    """Another GenAI instrumentation on the same library would record usage a second time."""
    try:
        import importlib

        owner: Any = importlib.import_module(module)
        for part in attr.split("."):
            owner = getattr(owner, part)
        if isinstance(owner, wrapt.FunctionWrapper):
            _log.warning(
                "otel-tokens: %s.%s is already instrumented by another library; its spans "
                "would carry usage too and backends would count tokens twice. Disable it "
                "with OTEL_PYTHON_DISABLED_INSTRUMENTATIONS (see README, 'Double "
                "instrumentation').",
                module,
                attr,
            )
    except Exception:
        return


class OpenAIInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Meters every call of the ``openai`` client (sync and async, Azure included)."""

    # No __init__: BaseInstrumentor is a singleton whose __init__ runs on every construction.
    _switch: Switch | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("openai >= 1.66",)

    def _instrument(self, **kwargs: Any) -> None:
        from .openai import OpenAIAdapter

        _warn_if_wrapped("openai.resources.chat.completions", "Completions.create", "openai")
        recorder = _recorder(kwargs)
        _hook_providers("openai")
        adapter = OpenAIAdapter(include_usage=kwargs.get("include_usage"))
        switch = self._switch = Switch()
        wrapt.wrap_function_wrapper(
            "openai._base_client",
            "SyncAPIClient.request",
            sync_request_wrapper(recorder, adapter, switch),
        )
        wrapt.wrap_function_wrapper(
            "openai._base_client",
            "AsyncAPIClient.request",
            async_request_wrapper(recorder, adapter, switch),
        )
        for module, name, hook in (
            ("openai._legacy_response", "LegacyAPIResponse.parse", parse_hook),
            ("openai._response", "APIResponse.parse", parse_hook),
            ("openai._response", "AsyncAPIResponse.parse", async_parse_hook),
        ):
            try:
                wrapt.wrap_function_wrapper(module, name, hook)
            except (AttributeError, ImportError):
                _log.debug("otel-tokens: %s.%s not found; raw streams not metered", module, name)

    def _uninstrument(self, **kwargs: Any) -> None:
        import openai._base_client as base
        import openai._response as response

        _unhook_providers("openai")
        if self._switch is not None:
            self._switch.on = False  # wrappers captured by with_raw_response pass through
        unwrap(base.SyncAPIClient, "request")
        unwrap(base.AsyncAPIClient, "request")
        unwrap(response.APIResponse, "parse")
        unwrap(response.AsyncAPIResponse, "parse")
        try:
            import openai._legacy_response as legacy

            unwrap(legacy.LegacyAPIResponse, "parse")
        except ImportError:
            pass


class AnthropicInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Meters every Messages call of the ``anthropic`` client (Bedrock and Vertex included)."""

    _switch: Switch | None = None
    _hooked_sdk_span = False

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("anthropic >= 0.49",)

    def _instrument(self, **kwargs: Any) -> None:
        from . import anthropic as provider

        _warn_if_wrapped("anthropic.resources.messages", "Messages.create", "anthropic")
        self._hooked_sdk_span = self._hook_sdk_span(provider)
        recorder = _recorder(kwargs)
        _hook_providers("anthropic")
        adapter = provider.AnthropicAdapter(use_sdk_span=self._hooked_sdk_span)
        switch = self._switch = Switch()
        wrapt.wrap_function_wrapper(
            "anthropic._base_client",
            "SyncAPIClient.request",
            sync_request_wrapper(recorder, adapter, switch),
        )
        wrapt.wrap_function_wrapper(
            "anthropic._base_client",
            "AsyncAPIClient.request",
            async_request_wrapper(recorder, adapter, switch),
        )
        wrapt.wrap_function_wrapper("anthropic._response", "APIResponse.parse", parse_hook)
        wrapt.wrap_function_wrapper(
            "anthropic._response", "AsyncAPIResponse.parse", async_parse_hook
        )

    @staticmethod
    def _hook_sdk_span(provider: Any) -> bool:
        """Hook anthropic 2.x's own span, if this release has one; else we make our own."""
        try:
            wrapt.wrap_function_wrapper(
                "anthropic._base_client",
                "finish_api_call_span",
                provider.finish_api_call_span_hook,
            )
        except (AttributeError, ImportError):
            return False
        try:
            wrapt.wrap_function_wrapper(
                "anthropic.lib._tracing._streaming",
                "StreamedMessage.end",
                provider.streamed_message_end_hook,
            )
        except (AttributeError, ImportError):
            import anthropic._base_client as base

            unwrap(base, "finish_api_call_span")
            return False
        return True

    def _uninstrument(self, **kwargs: Any) -> None:
        import anthropic._base_client as base
        import anthropic._response as response

        _unhook_providers("anthropic")
        if self._switch is not None:
            self._switch.on = False
        unwrap(base.SyncAPIClient, "request")
        unwrap(base.AsyncAPIClient, "request")
        unwrap(response.APIResponse, "parse")
        unwrap(response.AsyncAPIResponse, "parse")
        if self._hooked_sdk_span:
            import anthropic.lib._tracing._streaming as streaming

            unwrap(base, "finish_api_call_span")
            unwrap(streaming.StreamedMessage, "end")
            self._hooked_sdk_span = False
