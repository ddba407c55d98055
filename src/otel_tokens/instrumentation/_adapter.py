"""The contract between the core and a provider adapter: plain facts, both ways.

An adapter reads its own client library's request options, response objects and stream
events, and returns facts (`Request`, `ResponseFacts`). It never sees the call, its span or
the metric instruments: the core applies the facts. Adding a provider is one adapter module,
one usage converter (``usage/``), one `Description` (``_descriptions.py``) and its tests; see
docs/ARCHITECTURE.md, "Adding a provider".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry.util.types import AttributeValue

if TYPE_CHECKING:  # the pricing package is loaded on the first priced call, not at start-up
    from decimal import Decimal

    from ..pricing import Processing
    from ..usage import TokenUsage


@dataclass(slots=True)
class Request:
    """What an adapter read from one API request, on the caller's thread.

    Only what the call needs at once; attributes that only the span needs are read from
    ``body`` (a one-level copy) by the adapter's ``request_attributes``.
    """

    operation: str
    provider: str
    model: str | None
    endpoint: str = ""
    stream: bool = False
    server_address: str | None = None
    server_port: int | None = None
    processing: Processing = "standard"
    attributes: dict[str, AttributeValue] | None = None  # known at once (captured content)
    body: Mapping[str, Any] = field(default_factory=dict)
    # Another span (the client library's own) may carry this call: see `Description`.
    defer_span: bool = False
    injected_usage: bool = False  # we asked for a usage chunk the user did not
    capture_content: bool = False  # OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT


@dataclass(frozen=True, slots=True)
class ResponseFacts:
    """What an adapter read from a response or a finished stream."""

    usage: TokenUsage | None = None
    model: str | None = None  # the model that served the call (gen_ai.response.model)
    response_id: str | None = None
    finish_reasons: tuple[str, ...] = ()
    # The processing tier the provider says it served (its own tier names mapped by the
    # adapter); None: as requested.
    processing: Processing | None = None
    attributes: Mapping[str, AttributeValue] | None = None  # e.g. captured output content
    error: tuple[str, str] | None = None  # (type, message): a failure reported, not raised
    # A cost the provider reported for the call (amount, currency), beside our price of it
    # (_reconcile.py): OpenRouter's usage.cost, LiteLLM's response_cost.
    provider_cost: tuple[Decimal, str] | None = None


NO_FACTS = ResponseFacts()


class StreamState:
    """One stream's accumulator: reads each event as it passes, returns facts at the end."""

    def event(self, event: Any) -> bool:
        """Read one event (cheaply: this is per chunk); True hides it from the user's code
        (an event we asked for that they did not)."""
        return False

    def finish(self, error: BaseException | None) -> ResponseFacts:
        """The facts of the stream so far (usage estimated where it was not reported)."""
        return NO_FACTS


class TailState(StreamState):
    """A state read only at the end: per event the watcher keeps the last two events
    (``last``, ``previous``) and counts them (``events``), and calls nothing.

    A subclass that must see every event (to hide one) sets ``passive = False`` and calls
    `keep` from its `event`.
    """

    passive = True

    def __init__(self) -> None:
        self.events = 0
        self.last: Any = None
        self.previous: Any = None

    def keep(self, event: Any) -> None:
        self.previous = self.last
        self.last = event
        self.events += 1


class Adapter(Protocol):
    """A provider's knowledge of its own shapes; everything else is the core's.

    Optional: ``stream_of(request, result) -> Any``, for a library whose request method
    returns a stream *inside* its result (botocore's response dict holds an ``EventStream``
    under ``stream`` or ``body``): the stream object to watch in place, or ``None`` (not a
    stream). The core looks it up once per instrumentation (`_wrapper.Bound`) and calls it
    only for results that are not themselves one of the `Description`'s stream classes.

    Optional: ``peer_span(span) -> bool``, for a library another instrumentation also wraps
    with a span of its own per call (OpenTelemetry's botocore): is ``span`` that span? A
    request the adapter marks ``defer_span`` then rides on it (``_peer_span.py``).
    """

    def read_request(self, client: Any, args: tuple[Any, ...], kwargs: Any) -> Request | None:
        """The request's facts, or ``None`` if it is not metered (on the caller's thread,
        before the request is sent: read as little as possible). ``args`` and ``kwargs`` are
        those of the wrapped request method (the library's own signature), less ``self``."""

    def request_attributes(self, request: Request) -> dict[str, AttributeValue]:
        """The span's request attributes (``gen_ai.request.*``), read from the body copy."""

    def max_output_tokens(self, request: Request) -> int | None:
        """The most output tokens the request can be billed for (budget pre-flight checks)."""

    def estimate_input(self, request: Request) -> int:
        """Input tokens of the request, counted locally (budget pre-flight checks)."""

    def read_response(self, request: Request, response: Any) -> ResponseFacts:
        """Facts of a parsed, non-streamed response (a model object or decoded JSON)."""

    def stream_state(self, request: Request) -> StreamState:
        """A fresh accumulator for one stream of this request."""


class LibrarySpanReader(Protocol):
    """For a client library that makes its own span per API call (anthropic 2.x): how to
    read that span and its outcome from the library's hooks (see `Description`)."""

    def finished_call(self, args: Any, kwargs: Any) -> tuple[Any, BaseException | None, Any]:
        """(span, error, data) of the library's "finish the API call span" hook."""

    def finished_stream(self, instance: Any, args: Any, kwargs: Any) -> tuple[Any, Any]:
        """(span, error) of the library's "a streamed message ended" hook."""

    def raised_type(self, error: BaseException | None) -> str | None:
        """The error type the user will see for ``error``, where the library wraps it."""

    def stream_snapshot(self, request: Request, instance: Any) -> ResponseFacts:
        """Facts from the library's own accumulated stream (a raw stream we never saw)."""
