"""What the core needs to know to instrument a client library: data, no code.

One `Description` per provider (``_descriptions.py``) drives the generic instrumentor
(``_instrumentor.py``): which module to wait for, which functions to wrap, which classes
are its streams, and which adapter reads its shapes. Everything is named by string, so a
description costs nothing to import and the client library is imported only by the
application.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Target:
    """A function to wrap: ``attribute`` (``"Class.method"`` or ``"function"``) of
    ``module``."""

    module: str
    attribute: str

    def __str__(self) -> str:
        return f"{self.module}.{self.attribute}"


@dataclass(frozen=True, slots=True)
class LibrarySpan:
    """The hooks of a client library that makes its own span per API call (see
    ``_library_span.py``): wrapped together, or not at all (then we make our own span)."""

    call_started: Target  # the library starts an API call's span (returns it, or None)
    call_finished: Target  # the library finishes an API call's span
    stream_ended: Target  # the library ends a streamed message


@dataclass(frozen=True, slots=True)
class Description:
    """One client library, as the generic instrumentor sees it."""

    name: str  # for messages: "openai"
    requirement: str  # what instrumentation_dependencies() returns: "openai >= 1.66"
    module: str  # patched when the application imports it: "openai"
    adapter: str  # "package.module:Class"; constructed with library_span= and the options
    streams: tuple[str, ...]  # the library's stream classes, "module:Class"
    sync_request: Target  # the one method every API call passes through
    async_request: Target | None  # its async twin, where the library has async clients
    # A library whose streams are plain generators from a method of their own (not a stream
    # object from `sync_request`): that method, and its async twin (awaited, it returns an
    # async generator), or an async generator function (not awaited). The generator is
    # replaced by a watching one (see _streams.py).
    sync_stream_request: Target | None = None
    async_stream_request: Target | None = None
    # The private attribute of a stream object that holds the iterator it pulls its events
    # from, swapped for the watcher (botocore's EventStream: "_event_generator").
    stream_iterator: str = "_iterator"
    parse: tuple[Target, ...] = ()  # raw responses' .parse() (sync); optional each
    async_parse: tuple[Target, ...] = ()
    library_span: LibrarySpan | None = None
    # A public method another GenAI instrumentation would wrap: found wrapped, we warn of
    # double counting.
    public_method: Target | None = None
    # instrument() keyword arguments handed to the adapter (besides library_span).
    options: tuple[str, ...] = ()
    # Where another instrumentation makes its own span for the same call (OpenTelemetry's
    # botocore instrumentation), and the adapter's `peer_span` recognises it: a library
    # method every call runs once inside every wrapper, where the call adopts that span if
    # our wrapper is the outer one (see _peer_span.py).
    peer_inner: Target | None = None
