"""One metered API call: its span from start to end, and the facts learnt about it.

The span starts when the call starts and is current while the client runs (spans and logs
made inside the call are its children); the call ends exactly once, on the thread that ends
it, where the `Recorder` prices it, writes the span's attributes, ends the span and records
the metric points. A span that the client library makes itself (anthropic 2.x) is adopted
instead of ours, and its owner ends it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind
from opentelemetry.util.types import AttributeValue

from .. import semconv as sc
from .._safety import log_once
from ..attribution import current as current_attribution
from ._adapter import NO_FACTS, Adapter, Request, ResponseFacts
from ._points import common_attributes
from ._scope import claim as claim_framework_scope

if TYPE_CHECKING:
    from ..budgets import Reservation
    from ..usage import TokenUsage
    from ._peer_span import PeerEnd
    from ._recording import Recorder


class Call:
    """One metered API call, ended exactly once (`end_with`, `end_reading` or `end`)."""

    __slots__ = (
        "__weakref__",
        "_attribution",
        "_ended",
        "_owns_span",
        "adapter",
        "finisher",
        "first_chunk_ns",
        "parent",
        "peer_end",
        "recorder",
        "request",
        "reservation",
        "salvaged",
        "span",
        "start_ns",
    )

    def __init__(
        self, recorder: Recorder, request: Request, adapter: Adapter | None = None
    ) -> None:
        """``adapter``: the provider's, whose ``request_attributes(request)`` gives the span
        the request's own attributes."""
        self.start_ns = time.time_ns()
        self.recorder = recorder
        self.request = request
        self.adapter = adapter
        self.first_chunk_ns: int | None = None
        self.finisher: Any = None  # the stream's finisher, for hooks that end streams early
        self._ended = False
        self._attribution: dict[str, str] | None = None  # read once: see `attribution`
        # Facts of a billed response the client then failed to parse (see _wrapper).
        self.salvaged: ResponseFacts | None = None
        self.reservation: Reservation | None = None  # budgets drawn on before sending
        # The context the call was made in: our span's parent, and where its attribution
        # (baggage) and enclosing workflows are read.
        self.parent = otel_context.get_current()
        self.span: Span | None = None
        self._owns_span = False
        # Riding on another instrumentation's span (_peer_span.py): its stand-in end, and
        # the sign that the peer records the GenAI client metrics of this call.
        self.peer_end: PeerEnd | None = None
        claim_framework_scope()  # a framework call around this one records no usage
        if not request.defer_span:
            self.start_span()

    @property
    def name(self) -> str:
        request = self.request
        return f"{request.operation} {request.model}" if request.model else request.operation

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def owns_span(self) -> bool:
        return self._owns_span

    @property
    def attribution(self) -> dict[str, str]:
        """Our attribution keys in the context the call was made in (its baggage), read once
        for the span and the metric points."""
        found = self._attribution
        if found is None:
            found = self._attribution = current_attribution(self.parent)
        return found

    def common_attributes(self) -> dict[str, AttributeValue]:
        """The attributes of the call's span and of every metric point."""
        return common_attributes(self.request)

    def start_attributes(self) -> dict[str, AttributeValue]:
        """What the span knows when the call starts (its sampler sees them)."""
        request = self.request
        attrs = self.common_attributes()
        if request.stream:
            attrs[sc.GEN_AI_REQUEST_STREAM] = True
        if self.adapter is not None:
            attrs.update(self.adapter.request_attributes(request))
        if request.attributes:
            attrs.update(request.attributes)
        attribution = self.attribution
        if attribution:
            attrs.update(attribution)
        return attrs

    def start_span(self) -> None:
        """Start our span (at the call's start time), under the context the call began in.

        At once, unless the request defers to a span the client library makes itself."""
        self.span = self.recorder.tracer.start_span(
            self.name,
            context=self.parent,
            kind=SpanKind.CLIENT,
            attributes=self.start_attributes(),
            start_time=self.start_ns,
        )
        self._owns_span = True

    def adopt(self, span: Span) -> None:
        """Carry this call on ``span`` (the client library's own), which its owner ends."""
        if self.span is None and span.is_recording():
            self.span = span
            self._owns_span = False

    def activate(self) -> object:
        """Make our span current for the call's duration; give the token to `deactivate`."""
        if self.span is None:
            return None
        return otel_context.attach(trace.set_span_in_context(self.span, self.parent))

    @staticmethod
    def deactivate(token: object) -> None:
        if token is not None:
            otel_context.detach(token)  # type: ignore[arg-type]

    def first_chunk(self) -> None:
        if self.first_chunk_ns is None:
            self.first_chunk_ns = time.time_ns()

    # --- ending (exactly once) ---------------------------------------------------------
    def end_with(self, facts: ResponseFacts, error: BaseException | None = None) -> None:
        """Price and record the call with ``facts``; only the first end counts."""
        if not self._ended:
            self._ended = True
            self.recorder.finish(self, facts, error, time.time_ns())

    def end_reading(
        self, read: Callable[[], ResponseFacts], error: BaseException | None = None
    ) -> None:
        """`end_with` the facts ``read()`` returns (an adapter reading the response); a
        reader that fails ends the call without usage, never raising."""
        if self._ended:
            return
        try:
            facts = read()
        except Exception as exc:
            log_once("response", exc)
            facts = NO_FACTS
        self.end_with(facts, error)

    def end(self, usage: TokenUsage | None, error: BaseException | None = None) -> None:
        """`end_with` nothing known but ``usage`` (or the salvaged facts, if any)."""
        if usage is None and self.salvaged is not None:
            self.end_with(self.salvaged, error)
        else:
            self.end_with(ResponseFacts(usage=usage) if usage is not None else NO_FACTS, error)
