"""Riding on another instrumentation's span of the same call (OpenTelemetry's botocore
instrumentation makes one per Bedrock call, with ``gen_ai.usage.*`` on it).

Two spans with usage for one call would double-count in any backend that sums spans, and
two ``gen_ai.client.token.usage`` records in any that sums the metric. So where the
adapter says such a peer is active (`Request.defer_span`), the call makes no span of its
own: it adopts the peer's span, whichever of the two wrappers is outside the other,

- the peer's wrapper outside ours: its span is current when our wrapper starts the call;
- ours outside: its span is current inside the library, where `_wrapper.inner_hook` (around a
  method every call runs once inside both wrappers: botocore's ``_make_request``) finds it.
  No peer span there (the peer did not trace this call): the call starts its own span there,
  current for the rest of the call.

The peer writes its own usage attributes, and ends its span, when *it* sees the response:
before our call ends (ours is the outer wrapper, or a stream it finishes first) or after
(its wrapper is outside ours). Its span's ``end`` is stood in for by `PeerEnd` until our call
has ended: then our attributes are written on the span last (the exact usage and cost win
over the peer's), and the span ends at the time the peer ended it. The peer records the
GenAI client metrics (duration, token usage) itself; the `Recorder` does not record ours for
such a call (docs/bedrock.md says what that leaves).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

from .._safety import log_once

if TYPE_CHECKING:
    from ._call import Call


class PeerEnd:
    """Stands in for the peer span's ``end`` (an instance attribute over its method) until
    our call has written its attributes on the span."""

    __slots__ = ("attributes", "end_ns", "released", "span")

    def __init__(self, span: Any) -> None:
        self.span = span
        self.end_ns: int | None = None  # when the peer ended the span, if it has
        self.attributes: Mapping[str, AttributeValue] | None = None  # ours, once ended
        self.released = False

    def __call__(self, end_time: int | None = None) -> None:
        """The peer ends its span."""
        if self.end_ns is None:
            self.end_ns = end_time if end_time is not None else time.time_ns()
        if self.attributes is not None:
            self._release()

    def written(self, attributes: Mapping[str, AttributeValue]) -> None:
        """Our call has ended with ``attributes`` (already on the span): the peer may still
        overwrite them; they are written again when it ends the span."""
        self.attributes = attributes
        if self.end_ns is not None:
            self._release()

    def _release(self) -> None:
        if self.released:
            return
        self.released = True
        span = self.span
        try:
            del span.end  # its own method again
        except Exception as exc:
            log_once("peer_span.release", exc)
            return
        try:
            if self.attributes:
                span.set_attributes(self.attributes)
        except Exception as exc:
            log_once("peer_span.attributes", exc)
        try:  # called from the peer's code too: never raises into it
            span.end(end_time=self.end_ns)
        except Exception as exc:
            log_once("peer_span.end", exc)


def adopt_peer(call: Call, is_peer: Callable[[Any], bool]) -> bool:
    """Carry ``call`` on the current span if it is the peer's: True if it now does."""
    span = trace.get_current_span()
    if not span.is_recording() or not is_peer(span):
        return False
    call.adopt(span)
    if call.span is not span:
        return False
    held = PeerEnd(span)
    span.end = held  # type: ignore[method-assign]
    call.peer_end = held
    return True
