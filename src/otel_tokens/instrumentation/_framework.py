"""Framework calls: count each provider call once, whoever sees it first.

A framework (LiteLLM, LangChain...) wraps a model call of its own around the provider call.
Its instrumentation opens a `FrameworkCall` for the duration of that call: a span, current
while the framework runs (so the client's span, if any, is its child), and a *scope* in the
context. Every `Call` made inside the scope (a client instrumentation of ours metering the
provider request, or an inner framework call) *claims* it (`claim`, called as each `Call` is
made). When the framework call ends:

- claimed: the client's span already carries the usage; the framework's span keeps its
  attribution (what the call was for) and records no tokens, no price and no metric points;
- unclaimed: the framework reached the provider by a path we do not instrument, and the
  framework's own usage object is recorded through the same `Recorder` path as any client
  call, on the framework's span, with the provider and model the framework names.

So a provider call has exactly one usage-carrying span, with or without a client
instrumentation underneath. The scope object is shared by the context copies the framework
makes (threads, executors): a claim in any of them is seen at the end.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import Token
from typing import TYPE_CHECKING

from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from .. import semconv as sc
from .._safety import log_once
from ._adapter import NO_FACTS, Request, ResponseFacts
from ._call import Call
from ._scope import SCOPE, Scope

if TYPE_CHECKING:
    from ._recording import Recorder


class FrameworkCall:
    """One framework-level model call: `begin`, then `end` (once) with the framework's own
    facts, which are recorded only if no call inside claimed the scope."""

    __slots__ = ("_context_token", "_ended", "_scope_token", "call", "scope", "span")

    def __init__(
        self,
        recorder: Recorder,
        request: Request,
        framework: str,
        attributes: Mapping[str, AttributeValue] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """``tags``: what the call is for (graph node, agent), as attribution tags
        (``gen_ai.billing.tag.<key>``, in baggage like `attribution.attribute`'s): on this
        call's span and on the span of the client call inside, and on their metric points
        where ``OTEL_TOKENS_METRIC_ATTRIBUTES`` allows the key."""
        request.defer_span = True
        token = None
        if tags:
            context = otel_context.get_current()
            for key, value in tags.items():
                context = baggage.set_baggage(sc.BILLING_TAG_PREFIX + key, value[:256], context)
            token = otel_context.attach(context)
        try:
            # Made before our scope is set: it claims the scope of an enclosing framework
            # call (this call counts for it), never its own. Its parent context holds the
            # tags.
            self.call = Call(recorder, request)
        finally:
            if token is not None:
                otel_context.detach(token)
        self.scope = Scope(framework)
        start = self.call.start_attributes()
        if attributes:
            start.update(attributes)
        self.span = recorder.tracer.start_span(
            self.call.name,
            context=self.call.parent,
            kind=SpanKind.CLIENT,
            attributes=start,
            start_time=self.call.start_ns,
        )
        # Our span carries the call if it is not claimed; we end it ourselves.
        self.call.adopt(self.span)
        self._ended = False
        self._context_token: object | None = None
        self._scope_token: Token[Scope | None] | None = None

    def enter(self) -> None:
        """Make the span current and the scope open (on the caller's thread)."""
        self._context_token = otel_context.attach(
            trace.set_span_in_context(self.span, self.call.parent)
        )
        self._scope_token = SCOPE.set(self.scope)

    def exit(self) -> None:
        """Undo `enter` (the framework's function returned; its stream may still run)."""
        if self._scope_token is not None:
            SCOPE.reset(self._scope_token)
            self._scope_token = None
        if self._context_token is not None:
            otel_context.detach(self._context_token)  # type: ignore[arg-type]
            self._context_token = None

    @property
    def claimed(self) -> bool:
        return self.scope.claimed

    def end(
        self,
        facts: ResponseFacts = NO_FACTS,
        error: BaseException | None = None,
        attributes: Mapping[str, AttributeValue] | None = None,
    ) -> None:
        """End the framework call: record ``facts`` unless a call inside metered it; never
        raises. ``attributes``: added to the framework's span either way."""
        if self._ended:
            return
        self._ended = True
        span = self.span
        try:
            if attributes and span.is_recording():
                span.set_attributes(attributes)
            if not self.scope.claimed:
                self.call.end_with(facts, error)
            elif error is not None:
                span.set_attribute(sc.ERROR_TYPE, type(error).__qualname__)
                span.set_status(Status(StatusCode.ERROR, str(error)[:200]))
            if error is not None:
                span.record_exception(error)
        except Exception as exc:
            log_once("framework.end", exc)
        finally:
            try:
                span.end()
            except Exception as exc:
                log_once("span.end", exc)
