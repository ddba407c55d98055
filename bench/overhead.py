"""Overhead of otel-tokens' instrumentation, and of peer instrumentations measured the same way.

Each client talks to an in-process ``httpx2.MockTransport`` that returns pre-encoded, realistic
bodies (an OpenAI chat completion with cached and reasoning token details, an OpenAI SSE stream
ending in an ``include_usage`` chunk, an Anthropic message, an Anthropic SSE stream), so the
network does not hide the cost. Telemetry goes to the real OpenTelemetry SDK: a TracerProvider
whose BatchSpanProcessor feeds an exporter that drops spans (``--span-processor simple`` for a
SimpleSpanProcessor instead), and a MeterProvider with an InMemoryMetricReader that is not
collected while timing.

The same client objects run instrumented and uninstrumented in the same process, alternating
in rounds (instrument, measure, uninstrument, measure; the order flips every round); each
instrumentation gets a fresh interpreter. Times are the calling thread's CPU time by default
(``--clock wall`` for perf_counter). Added time is the difference of the medians of the per-call
times. That is what the application waits for, not all the CPU spent: otel-tokens records on a
background thread. So each row also gives the CPU time added across all threads of the process
("all threads"): ``process_time`` over each round's batch of calls and an ``otel_tokens.flush()``
after it (the recording thread's work included), per call, median of the rounds. Per stream
chunk, streams of two lengths are timed and the added time is split as ``a + b * chunks``:
``b`` (the slope) is the per-chunk cost and ``a`` the stream's own per-call cost, so per-call
work does not leak into the per-chunk figure. For otel-tokens only, a second per-chunk row per
stream, "client parsing excluded", takes the same slope over streams that yield event objects
the client parsed once before timing: each timed call still gets a real ``Stream`` from the
client, but with its ``__stream__`` (SSE decoding, JSON, pydantic; ~65 µs per openai chunk,
whose noise the first row cannot see through) replaced in both modes by a generator over the
kept events, so the row shows our per-chunk path alone (anthropic: the SDK span's per-event
``item()``, in ``Stream.__iter__``, still runs in both modes). See bench/README.md.

    python bench/overhead.py --quick          # < 60 s
    python bench/overhead.py                  # a few minutes
    python bench/overhead.py --json out.json  # also write the results as JSON ("-": stdout)
    python bench/overhead.py --profile        # where our added time goes (cProfile)
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import importlib
import inspect
import json
import os
import platform
import pstats
import statistics
import subprocess
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from _report import write_json

# Targets from the issue.
TARGET_CALL_US = 30.0
TARGET_CHUNK_US = 1.0

OPENAI_MODEL = "o4-mini-2025-04-16"
ANTHROPIC_MODEL = "claude-sonnet-4-6"
OPENAI_URL = "https://api.openai.com/v1"
ANTHROPIC_URL = "https://api.anthropic.com"
SDK_SCOPE = "com.anthropic.sdk.python"
COST_ATTR = "gen_ai.usage.cost.amount"

_TEXT = "The quick brown fox jumps over the lazy dog and then it writes a short report"
_WORDS = tuple(f" {w}" for w in _TEXT.split(" "))


def _text(n: int) -> str:
    return "".join(_WORDS[i % len(_WORDS)] for i in range(n))


# --- canned responses ---------------------------------------------------------------------
def openai_completion() -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-bench0001",
            "object": "chat.completion",
            "created": 1_760_000_000,
            "model": OPENAI_MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": _text(300),
                        "refusal": None,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": 1_240,
                "completion_tokens": 428,
                "total_tokens": 1_668,
                "prompt_tokens_details": {"cached_tokens": 1_024, "audio_tokens": 0},
                "completion_tokens_details": {
                    "reasoning_tokens": 128,
                    "audio_tokens": 0,
                    "accepted_prediction_tokens": 0,
                    "rejected_prediction_tokens": 0,
                },
            },
            "service_tier": "default",
            "system_fingerprint": "fp_bench",
        }
    ).encode()


def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def openai_stream(chunks: int, usage_chunk: bool = True) -> tuple[bytes, ...]:
    """A role chunk, ``chunks`` content chunks, a finish chunk, the usage chunk (as asked
    for with ``include_usage``) and [DONE]."""
    base = {
        "id": "chatcmpl-bench0002",
        "object": "chat.completion.chunk",
        "created": 1_760_000_000,
        "model": OPENAI_MODEL,
        "service_tier": "default",
        "system_fingerprint": "fp_bench",
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        body = {**base, "choices": [choice]}
        if usage_chunk:  # with include_usage, every other chunk says "usage": null
            body["usage"] = None
        return _sse(body)

    events = [chunk({"role": "assistant", "content": "", "refusal": None})]
    events += [chunk({"content": _WORDS[i % len(_WORDS)]}) for i in range(chunks)]
    events.append(chunk({}, "stop"))
    usage = {
        "prompt_tokens": 1_240,
        "completion_tokens": chunks + 128,
        "total_tokens": 1_240 + chunks + 128,
        "prompt_tokens_details": {"cached_tokens": 1_024, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 128, "audio_tokens": 0},
    }
    if usage_chunk:
        events.append(_sse({**base, "choices": [], "usage": usage}))
    events.append(b"data: [DONE]\n\n")
    return tuple(events)


_ANTHROPIC_USAGE = {
    "input_tokens": 1_240,
    "cache_creation_input_tokens": 256,
    "cache_read_input_tokens": 1_024,
    "cache_creation": {"ephemeral_5m_input_tokens": 256, "ephemeral_1h_input_tokens": 0},
    "server_tool_use": None,
    "service_tier": "standard",
}


def anthropic_message() -> bytes:
    return json.dumps(
        {
            "id": "msg_bench0001",
            "type": "message",
            "role": "assistant",
            "model": ANTHROPIC_MODEL,
            "content": [{"type": "text", "text": _text(300)}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {**_ANTHROPIC_USAGE, "output_tokens": 300},
        }
    ).encode()


def anthropic_stream(chunks: int) -> tuple[bytes, ...]:
    """message_start, a text block of ``chunks`` content_block_delta events, message_delta."""
    message = {
        "id": "msg_bench0002",
        "type": "message",
        "role": "assistant",
        "model": ANTHROPIC_MODEL,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**_ANTHROPIC_USAGE, "output_tokens": 1},
    }
    events = [
        _sse({"type": "message_start", "message": message}, "message_start"),
        _sse(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            "content_block_start",
        ),
        _sse({"type": "ping"}, "ping"),
    ]
    events += [
        _sse(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": _WORDS[i % len(_WORDS)]},
            },
            "content_block_delta",
        )
        for i in range(chunks)
    ]
    events.append(_sse({"type": "content_block_stop", "index": 0}, "content_block_stop"))
    events.append(
        _sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {
                    "output_tokens": chunks,
                    "input_tokens": 1_240,
                    "cache_creation_input_tokens": 256,
                    "cache_read_input_tokens": 1_024,
                    "server_tool_use": None,
                },
            },
            "message_delta",
        )
    )
    events.append(_sse({"type": "message_stop"}, "message_stop"))
    return tuple(events)


# --- in-process transport -----------------------------------------------------------------
def mock_http_client(body: bytes | tuple[bytes, ...]) -> Any:
    """An ``httpx2.Client`` answering every request with ``body`` (a tuple: an SSE stream).

    A stream's pre-encoded events arrive one per transport chunk, as from a network.
    """
    import httpx2

    class Events(httpx2.SyncByteStream):
        __slots__ = ("events",)

        def __init__(self, events: tuple[bytes, ...]) -> None:
            self.events = events

        def __iter__(self) -> Iterator[bytes]:
            return iter(self.events)

    if isinstance(body, tuple):
        sse = {"content-type": "text/event-stream"}

        def handler(request: Any) -> Any:
            return httpx2.Response(200, headers=sse, stream=Events(body))
    else:
        plain = {"content-type": "application/json"}

        def handler(request: Any) -> Any:
            return httpx2.Response(200, headers=plain, content=body)

    return httpx2.Client(transport=httpx2.MockTransport(handler))


# --- telemetry ----------------------------------------------------------------------------
class DropExporter:
    """Drops spans; counts them by scope, and keeps them only while ``keep`` is a list."""

    def __init__(self) -> None:
        self.by_scope: Counter[str] = Counter()
        self.keep: list[Any] | None = None

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        for span in spans:
            scope = span.instrumentation_scope
            self.by_scope[scope.name if scope else "?"] += 1
        if self.keep is not None:
            self.keep.extend(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


@dataclass
class Telemetry:
    tracer_provider: Any
    meter_provider: Any
    reader: Any
    exporter: DropExporter
    processor: str

    @classmethod
    def make(cls, processor: str) -> Telemetry:
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        exporter = DropExporter()
        tracer_provider = TracerProvider()
        span_processor = (
            SimpleSpanProcessor(exporter)  # type: ignore[arg-type]
            if processor == "simple"
            else BatchSpanProcessor(exporter)  # type: ignore[arg-type]
        )
        tracer_provider.add_span_processor(span_processor)
        reader = InMemoryMetricReader()
        meter_provider = MeterProvider(metric_readers=[reader])
        # Global too, for anything that asks the API instead of taking the providers given.
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(meter_provider)
        return cls(tracer_provider, meter_provider, reader, exporter, processor)

    def flushed_spans(self, fn: Callable[[], None]) -> list[Any]:
        """Spans ended by ``fn()``."""
        self.tracer_provider.force_flush()
        self.exporter.keep = []
        try:
            fn()
            self.tracer_provider.force_flush()
            return self.exporter.keep
        finally:
            self.exporter.keep = None


# --- what is measured ---------------------------------------------------------------------
@dataclass
class Workload:
    """One kind of call on one client: ``call()`` makes it and consumes the whole result."""

    key: str  # call | stream_short | stream_long, + _sdk_on / _sdk_off for anthropic
    call: Callable[[], None]
    per_round: int  # timed calls per round and mode
    chunks: int = 0  # content chunks per stream (0: not a stream)


def cheap_stream_workloads(
    plan: Plan,
    nonstream: Callable[[], None],
    streamer: Callable[[Any], Callable[[], None]],
    streaming_client: Callable[[int], Any],
    tag: str = "",
) -> list[Workload]:
    """A plain call, short streams and long streams, for a client whose streams cost a fifth
    of openai's per chunk or less: three times the long streams, in the same time.
    ``streaming_client(n)`` answers every call with a stream of ``n`` content chunks."""
    return [
        Workload(f"call{tag}", nonstream, plan.calls),
        Workload(
            f"stream_short{tag}",
            streamer(streaming_client(plan.short)),
            plan.short_calls,
            plan.short,
        ),
        Workload(
            f"stream_long{tag}",
            streamer(streaming_client(plan.long)),
            plan.long_calls * 3,
            plan.long,
        ),
    ]


@dataclass
class Plan:
    rounds: int
    warmup: int
    short: int
    long: int
    calls: int  # timed calls per round and mode: non-streamed
    short_calls: int  # short streams
    long_calls: int  # long streams
    clock: str
    span_processor: str
    include_usage: bool = True  # OpenAI streams ask for their usage chunk

    @classmethod
    def of(cls, args: argparse.Namespace) -> Plan:
        quick = args.quick
        scale = args.scale or 1.0
        return cls(
            rounds=args.rounds or (6 if quick else 24),
            warmup=5 if quick else 20,
            short=args.short,
            long=args.long,
            calls=max(2, round((15 if quick else 40) * scale)),
            # Streams: enough that the per-chunk slope resolves tenths of a µs in a default
            # run (with 10 and 3, its quartiles over rounds spanned ~3 µs).
            short_calls=max(2, round((5 if quick else 30) * scale)),
            long_calls=max(1, round((1 if quick else 9) * scale)),
            clock=args.clock,
            span_processor=args.span_processor,
            include_usage=not args.no_include_usage,
        )

    def argv(self) -> list[str]:
        return [
            "--rounds",
            str(self.rounds),
            "--short",
            str(self.short),
            "--long",
            str(self.long),
            "--clock",
            self.clock,
            "--span-processor",
            self.span_processor,
            "--plan",
            json.dumps(asdict(self)),
        ]


def isolated_workloads(
    open_stream: Callable[[Any], Any], clients: tuple[Any, Any], plan: Plan, tag: str = ""
) -> list[Workload]:
    """Streams whose client parsing is taken out (otel-tokens only): the "per chunk, client
    parsing excluded" rows.

    ``open_stream(client)`` makes the call and returns the client's real ``Stream``. Here,
    before timing and uninstrumented, the short and the long stream are read once and the
    event objects the client yielded (its pydantic models) are kept. A timed call then makes
    the same call, with the stream class's ``__stream__`` (the SSE decoding and parsing)
    replaced, for that call only, by a generator over the kept events: the client still builds
    a real ``Stream``, the instrumentation watches it as in production (it swaps the
    ``_iterator`` that ``__stream__`` made), and the user's loop runs over
    ``Stream.__iter__`` as usual. Both modes run the same replacement; the slope between the
    two lengths leaves only the per-chunk work: ours, plus the iteration layers both share.
    """
    out = []
    for key, client, chunks in zip(
        ("iso_short", "iso_long"), clients, (plan.short, plan.long), strict=True
    ):
        stream = open_stream(client)
        items = list(stream)  # the real client, uninstrumented
        run = _fed(partial(open_stream, client), type(stream), items)
        # Cheap calls (no parsing): three times as many as non-streamed ones, as the slope
        # is only worth the noise of a call spread over 190 chunks.
        out.append(Workload(f"{key}{tag}", run, plan.calls * 3, chunks))
    return out


def _fed(open_stream: Callable[[], Any], cls: type, items: list[Any]) -> Callable[[], None]:
    """A call whose ``cls`` stream yields ``items`` instead of parsing its response body."""
    owner = next(k for k in cls.__mro__ if "__stream__" in vars(k))  # dunder: not mangled
    original = vars(owner)["__stream__"]

    def feed(self: Any) -> Iterator[Any]:
        # As the client's __stream__ does, less the parsing: anthropic's SDK span observer
        # (per call here; its per-event item() is in Stream.__iter__ and still runs), and the
        # response closed at the end.
        observer = getattr(self, "_observer", None)
        response = self.response
        if observer is not None:
            observer.begin()
        try:
            yield from items
            if observer is not None:
                observer.end("read")
        finally:
            response.close()

    def run() -> None:
        setattr(owner, "__stream__", feed)  # noqa: B010
        try:
            for _ in open_stream():
                pass
        finally:
            setattr(owner, "__stream__", original)  # noqa: B010

    return run


def openai_workloads(plan: Plan, isolated: bool = False) -> list[Workload]:
    import openai

    messages = [
        {"role": "system", "content": "You are a concise assistant. " * 8},
        {"role": "user", "content": "Summarise the attached report in three sentences. " * 6},
    ]

    def client(body: bytes | tuple[bytes, ...]) -> Any:
        return openai.OpenAI(
            api_key="sk-bench",
            base_url=OPENAI_URL,
            max_retries=0,
            http_client=mock_http_client(body),
        )

    plain = client(openai_completion())

    def nonstream() -> None:
        plain.chat.completions.create(
            model=OPENAI_MODEL, messages=messages, max_completion_tokens=512
        )

    usage_chunk: dict[str, Any] = (
        {"stream_options": {"include_usage": True}} if plan.include_usage else {}
    )

    def streamer(c: Any) -> Callable[[], None]:
        def run() -> None:
            stream = c.chat.completions.create(
                model=OPENAI_MODEL,
                messages=messages,
                max_completion_tokens=512,
                stream=True,
                **usage_chunk,
            )
            for _ in stream:
                pass

        return run

    work = [
        Workload("call", nonstream, plan.calls),
        Workload(
            "stream_short",
            streamer(client(openai_stream(plan.short, plan.include_usage))),
            plan.short_calls,
            plan.short,
        ),
        Workload(
            "stream_long",
            streamer(client(openai_stream(plan.long, plan.include_usage))),
            plan.long_calls,
            plan.long,
        ),
    ]
    if isolated:

        def open_stream(c: Any) -> Any:
            return c.chat.completions.create(
                model=OPENAI_MODEL,
                messages=messages,
                max_completion_tokens=512,
                stream=True,
                **usage_chunk,
            )

        clients = (
            client(openai_stream(plan.short, plan.include_usage)),
            client(openai_stream(plan.long, plan.include_usage)),
        )
        work += isolated_workloads(open_stream, clients, plan)
    return work


def anthropic_workloads(
    plan: Plan, tracer_provider: Any, sdk_span: bool, isolated: bool = False
) -> list[Workload]:
    import anthropic

    option: Any = {"tracer_provider": tracer_provider} if sdk_span else False
    messages = [
        {"role": "user", "content": "Summarise the attached report in three sentences. " * 6},
    ]
    system = "You are a concise assistant. " * 8

    def client(body: bytes | tuple[bytes, ...]) -> Any:
        return anthropic.Anthropic(
            api_key="sk-ant-bench",
            base_url=ANTHROPIC_URL,
            max_retries=0,
            open_telemetry=option,
            http_client=mock_http_client(body),
        )

    plain = client(anthropic_message())

    def nonstream() -> None:
        plain.messages.create(
            model=ANTHROPIC_MODEL, max_tokens=1024, system=system, messages=messages
        )

    def streamer(c: Any) -> Callable[[], None]:
        def run() -> None:
            stream = c.messages.create(
                model=ANTHROPIC_MODEL,
                max_tokens=1024,
                system=system,
                messages=messages,
                stream=True,
            )
            for _ in stream:
                pass

        return run

    tag = "_sdk_on" if sdk_span else "_sdk_off"
    work = cheap_stream_workloads(
        plan, nonstream, streamer, lambda n: client(anthropic_stream(n)), tag
    )
    if isolated:

        def open_stream(c: Any) -> Any:
            return c.messages.create(
                model=ANTHROPIC_MODEL,
                max_tokens=1024,
                system=system,
                messages=messages,
                stream=True,
            )

        clients = (client(anthropic_stream(plan.short)), client(anthropic_stream(plan.long)))
        work += isolated_workloads(open_stream, clients, plan, tag)
    return work


# --- the instrumentations -----------------------------------------------------------------
class Guard:
    """The client libraries' functions before instrumentation, to undo what an instrumentor's
    ``uninstrument()`` leaves wrapped (so its "uninstrumented" runs are really uninstrumented).
    """

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        import wrapt

        self.proxy = getattr(wrapt, "BaseObjectProxy", wrapt.ObjectProxy)  # wrapt 2: the base
        self.entries: list[tuple[Any, str, Any]] = []
        for name, module in list(sys.modules.items()):
            if module is None or not name.startswith(prefixes):
                continue
            for attr, value in list(vars(module).items()):
                if isinstance(value, type) and value.__module__ == name:
                    for key, member in list(vars(value).items()):
                        if inspect.isfunction(member) or isinstance(
                            member, (staticmethod, classmethod)
                        ):
                            self.entries.append((value, key, member))
                elif inspect.isfunction(value):
                    self.entries.append((module, attr, value))
        self.leaked: list[tuple[Any, str, Any]] | None = None

    def undo(self) -> list[str]:
        """Put back what is still wrapped; the names of what was (found on the first call)."""
        if self.leaked is None:
            self.leaked = [
                (owner, key, original)
                for owner, key, original in self.entries
                if isinstance(vars(owner).get(key), self.proxy)
            ]
        for owner, key, original in self.leaked:
            setattr(owner, key, original)
        return [f"{getattr(o, '__qualname__', o.__name__)}.{k}" for o, k, _ in self.leaked]


@dataclass
class Subject:
    """An instrumentation to measure: ours or a peer."""

    name: str
    label: str
    provider: str  # "openai" | "anthropic" | "gemini" | "bedrock"
    module: str
    cls: str
    peer: bool
    library: str = ""  # the client library's module prefix, if not ``provider``
    instrumentor: Any = None
    guard: Guard | None = None
    leftovers: list[str] = field(default_factory=list)

    def load(self) -> str | None:
        """Import the instrumentor; the reason it cannot be measured, if it cannot."""
        try:
            self.instrumentor = getattr(importlib.import_module(self.module), self.cls)()
        except Exception as exc:
            return f"not importable here ({type(exc).__name__}: {exc})"
        return None

    @contextlib.contextmanager
    def active(self, on: bool, telemetry: Telemetry) -> Iterator[None]:
        if not on:
            yield
            return
        if self.guard is None:
            self.guard = Guard((self.library or self.provider,))
        self.instrumentor.instrument(
            tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
        )
        if not self.instrumentor.is_instrumented_by_opentelemetry:
            raise RuntimeError("instrument() did nothing (a dependency conflict?)")
        try:
            yield
        finally:
            self.instrumentor.uninstrument()
            self.leftovers = self.guard.undo()


SUBJECTS = {
    s.name: s
    for s in (
        Subject(
            "ours_openai",
            "otel-tokens",
            "openai",
            "otel_tokens.instrumentation",
            "OpenAIInstrumentor",
            peer=False,
        ),
        Subject(
            "ours_anthropic",
            "otel-tokens",
            "anthropic",
            "otel_tokens.instrumentation",
            "AnthropicInstrumentor",
            peer=False,
        ),
        Subject(
            "ours_gemini",
            "otel-tokens",
            "gemini",
            "otel_tokens.instrumentation",
            "GeminiInstrumentor",
            peer=False,
            library="google.genai",
        ),
        Subject(
            "ours_bedrock",
            "otel-tokens",
            "bedrock",
            "otel_tokens.instrumentation",
            "BedrockInstrumentor",
            peer=False,
            library="botocore",
        ),
        Subject(
            "openai_v2",
            "openai-v2 (OpenTelemetry)",
            "openai",
            "opentelemetry.instrumentation.openai_v2",
            "OpenAIInstrumentor",
            peer=True,
        ),
        Subject(
            "openllmetry_openai",
            "openai (OpenLLMetry)",
            "openai",
            "opentelemetry.instrumentation.openai",
            "OpenAIInstrumentor",
            peer=True,
        ),
        Subject(
            "openllmetry_anthropic",
            "anthropic (OpenLLMetry)",
            "anthropic",
            "opentelemetry.instrumentation.anthropic",
            "AnthropicInstrumentor",
            peer=True,
        ),
        Subject(
            "otel_botocore",
            "botocore (OpenTelemetry)",
            "bedrock",
            "opentelemetry.instrumentation.botocore",
            "BotocoreInstrumentor",
            peer=True,
            library="botocore",
        ),
        Subject(
            "otel_google_genai",
            "google-genai (OpenTelemetry)",
            "gemini",
            "opentelemetry.instrumentation.google_genai",
            "GoogleGenAiSdkInstrumentor",
            peer=True,
            library="google.genai",
        ),
        Subject(
            "openllmetry_google_genai",
            "google-genai (OpenLLMetry)",
            "gemini",
            "opentelemetry.instrumentation.google_generativeai",
            "GoogleGenerativeAiInstrumentor",
            peer=True,
            library="google.genai",
        ),
        Subject(
            "openinference_google_genai",
            "google-genai (OpenInference)",
            "gemini",
            "openinference.instrumentation.google_genai",
            "GoogleGenAIInstrumentor",
            peer=True,
            library="google.genai",
        ),
    )
}
DISTRIBUTIONS = {
    "openai_v2": "opentelemetry-instrumentation-openai-v2",
    "openllmetry_openai": "opentelemetry-instrumentation-openai",
    "openllmetry_anthropic": "opentelemetry-instrumentation-anthropic",
    "otel_botocore": "opentelemetry-instrumentation-botocore",
    "otel_google_genai": "opentelemetry-instrumentation-google-genai",
    "openinference_google_genai": "openinference-instrumentation-google-genai",
    "openllmetry_google_genai": "opentelemetry-instrumentation-google-generativeai",
}
API = {
    "openai": "chat",
    "anthropic": "messages",
    "gemini": "generate_content",
    "bedrock": "converse",
}


def workloads_of(
    subject: Subject, plan: Plan, tracer_provider: Any, isolated: bool = False
) -> list[Workload]:
    """Every workload of ``subject``'s client library (anthropic's with its SDK span on, then
    off; "client parsing excluded" streams only where ``isolated``, for openai and anthropic)."""
    if subject.provider == "openai":
        return openai_workloads(plan, isolated)
    if subject.provider == "anthropic":
        return anthropic_workloads(plan, tracer_provider, True, isolated) + anthropic_workloads(
            plan, tracer_provider, False, isolated
        )
    import gemini_bedrock

    if subject.provider == "gemini":
        return gemini_bedrock.gemini_workloads(plan)
    return gemini_bedrock.bedrock_workloads(plan)


def single_workload(
    subject: str, key: str, *, short: int = 10, long: int = 200, include_usage: bool = True
) -> tuple[Subject, Telemetry, Callable[[], None]]:
    """``subject``'s first workload whose key starts with ``key`` (anthropic's with its SDK
    span off), with telemetry of its own: for the scripts that drive one workload in a
    process of their own (instructions.py, backlog.py)."""
    plan = Plan(
        rounds=1,
        warmup=0,
        short=short,
        long=long,
        calls=1,
        short_calls=1,
        long_calls=1,
        clock="cpu",
        span_processor="batch",
        include_usage=include_usage,
    )
    telemetry = Telemetry.make("batch")
    s = SUBJECTS[subject]
    reason = s.load()
    if reason:
        raise SystemExit(f"{subject}: {reason}")
    if s.provider == "anthropic":
        work = anthropic_workloads(plan, telemetry.tracer_provider, sdk_span=False)
    else:
        work = workloads_of(s, plan, telemetry.tracer_provider)
    return s, telemetry, next(w.call for w in work if w.key.startswith(key))


# --- timing -------------------------------------------------------------------------------
CLOCKS: dict[str, Callable[[], int]] = {
    "wall": time.perf_counter_ns,
    "cpu": time.thread_time_ns,  # this thread's CPU time: not the time others took the CPU
}


def time_calls(fn: Callable[[], None], n: int, clock: Callable[[], int]) -> list[int]:
    out = []
    for _ in range(n):
        start = clock()
        fn()
        out.append(clock() - start)
    return out


@dataclass
class Samples:
    """Per-call times (ns) of each workload, instrumented (``on``) and not: pooled, and the
    median of each round. ``process``: each round's CPU time of all threads (ns) per call,
    the background recording flushed."""

    pooled: dict[tuple[bool, str], list[int]] = field(default_factory=dict)
    rounds: dict[tuple[bool, str], list[float]] = field(default_factory=dict)
    process: dict[tuple[bool, str], list[float]] = field(default_factory=dict)

    def add(self, on: bool, key: str, times: list[int], process_ns: int | None = None) -> None:
        self.pooled.setdefault((on, key), []).extend(times)
        self.rounds.setdefault((on, key), []).append(statistics.median(times))
        if process_ns is not None:
            self.process.setdefault((on, key), []).append(process_ns / len(times))

    def all_threads(self, on: bool, key: str) -> float | None:
        """µs: the median of the rounds' CPU time of all threads per call (None: not taken)."""
        values = self.process.get((on, key))
        return statistics.median(values) / 1000.0 if values else None

    def median(self, on: bool, key: str) -> float:
        """µs."""
        return statistics.median(self.pooled[(on, key)]) / 1000.0

    def by_round(self, on: bool, key: str) -> list[float]:
        return [t / 1000.0 for t in self.rounds[(on, key)]]


def _flusher() -> Callable[[], Any]:
    """``otel_tokens.flush``: runs and waits for the recording queued on its background thread
    (a no-op if there is none)."""
    try:
        otel_tokens = importlib.import_module("otel_tokens")
    except ImportError:
        return lambda: None
    flush: Callable[[], Any] = getattr(otel_tokens, "flush", lambda: None)
    return flush


def warm_up(subject: Subject, telemetry: Telemetry, workloads: list[Workload], warmup: int) -> None:
    """Run each workload ``warmup`` times on both paths (imports, caches, price catalog,
    tiktoken), then move what was made so far out of the collector's way: it lives for the
    whole run, and a full collection over it must not land in one mode's calls (the calls'
    own garbage is still collected, and counted)."""
    for on in (True, False):
        with subject.active(on, telemetry):
            for w in workloads:
                for _ in range(warmup):
                    w.call()
    gc.collect()
    gc.freeze()


def measure(
    subject: Subject, telemetry: Telemetry, workloads: list[Workload], plan: Plan
) -> Samples:
    clock = CLOCKS[plan.clock]
    flush = _flusher()
    warm_up(subject, telemetry, workloads, plan.warmup)
    samples = Samples()
    try:
        for r in range(plan.rounds):
            for w in workloads:  # on and off of one workload close in time: less drift
                for on in (True, False) if r % 2 == 0 else (False, True):
                    with subject.active(on, telemetry):
                        w.call()  # the first call after a switch is not timed
                        flush()  # nor is its background recording
                        # All threads: the batch and its background recording, in both modes.
                        start = time.process_time_ns()
                        times = time_calls(w.call, w.per_round, clock)
                        flush()
                        process_ns = time.process_time_ns() - start
                        samples.add(on, w.key, times, process_ns)
    finally:
        gc.unfreeze()
    return samples


def check(subject: Subject, telemetry: Telemetry, workloads: list[Workload]) -> dict[str, Any]:
    """That the subject really records: its spans, usage on them, its metrics."""

    def usage_keys(spans: list[Any]) -> set[str]:
        return {
            k
            for s in spans
            for k in (s.attributes or {})
            # OpenInference: llm.token_count.prompt
            if "input_tokens" in k or "prompt_tokens" in k or "token_count" in k or k == COST_ATTR
        }

    with subject.active(True, telemetry):
        on = {w.key: telemetry.flushed_spans(w.call) for w in workloads}
    off = {w.key: telemetry.flushed_spans(w.call) for w in workloads}
    metrics: set[str] = set()
    data = telemetry.reader.get_metrics_data()
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            metrics.update(f"{sm.scope.name}: {m.name}" for m in sm.metrics)
    out: dict[str, Any] = {"metrics": sorted(metrics), "workloads": {}}
    for w in workloads:
        new_keys = usage_keys(on[w.key]) - usage_keys(off[w.key])
        out["workloads"][w.key] = {
            "spans_instrumented": sorted({s.instrumentation_scope.name for s in on[w.key]}),
            "spans_uninstrumented": sorted({s.instrumentation_scope.name for s in off[w.key]}),
            "usage_attributes_added": sorted(new_keys),
            "cost_on_span": any((s.attributes or {}).get(COST_ATTR) for s in on[w.key]),
            "records_usage": bool(new_keys),
        }
    return out


# --- results ------------------------------------------------------------------------------
@dataclass
class Row:
    what: str
    who: str
    kind: str  # call | chunk | chunk_isolated | stream_call | sdk_call | sdk_chunk
    uninstrumented_us: float
    instrumented_us: float
    # The added time figured round by round (on and off of one round are close in time):
    # first quartile, median, third quartile. Robust to load that changes between rounds.
    rounds_us: tuple[float, float, float]
    note: str = ""
    valid: bool = True  # False: the instrumentation recorded no usage on these calls
    # CPU time added across all threads of the process (the background recording included),
    # figured like ``added_us`` from the medians of the rounds' per-call values.
    all_threads_added_us: float | None = None
    # With --runs: each run's added time (the row itself then holds medians across runs).
    added_us_by_run: tuple[float, ...] = ()

    @property
    def added_us(self) -> float:
        return self.instrumented_us - self.uninstrumented_us

    @property
    def noisy(self) -> bool:
        """The added time of the pooled medians is outside the middle half of the rounds'."""
        q1, _, q3 = self.rounds_us
        return not q1 <= self.added_us <= q3

    @property
    def ratio(self) -> float:
        if not self.uninstrumented_us:
            return float("nan")
        return self.instrumented_us / self.uninstrumented_us

    def as_dict(self) -> dict[str, Any]:
        return {
            "what": self.what,
            "instrumentation": self.who,
            "kind": self.kind,
            "median_uninstrumented_us": round(self.uninstrumented_us, 3),
            "median_instrumented_us": round(self.instrumented_us, 3),
            "added_us": round(self.added_us, 3),
            "all_threads_added_us": _round(self.all_threads_added_us),
            "added_us_by_round_q1_median_q3": [round(x, 3) for x in self.rounds_us],
            "noisy": self.noisy,
            "valid": self.valid,
            "ratio": round(self.ratio, 4),
            "added_us_by_run": [round(x, 3) for x in self.added_us_by_run],
            "note": self.note,
        }


def combine_runs(runs: list[list[Row]]) -> list[Row]:
    """One row per measurement from several runs (each subject a fresh process per run): the
    median across runs of each figure, and every run's added time.

    Separate processes' runs differ by several µs as a whole (bench/README.md,
    "One call at a time"), so the median of a few runs says more than any one of them."""
    by_key: dict[tuple[str, str], list[Row]] = {}
    for rows in runs:
        for r in rows:
            by_key.setdefault((r.what, r.who), []).append(r)
    out = []
    for rs in by_key.values():
        if len(rs) == 1:
            out.append(rs[0])
            continue
        med = statistics.median
        uninstrumented = med(r.uninstrumented_us for r in rs)
        added = tuple(r.added_us for r in rs)
        all_threads = [r.all_threads_added_us for r in rs if r.all_threads_added_us is not None]
        q1, q2, q3 = (med(r.rounds_us[i] for r in rs) for i in range(3))
        out.append(
            replace(
                rs[0],
                uninstrumented_us=uninstrumented,
                instrumented_us=uninstrumented + med(added),
                rounds_us=(q1, q2, q3),
                all_threads_added_us=med(all_threads) if all_threads else None,
                valid=all(r.valid for r in rs),
                added_us_by_run=added,
            )
        )
    return out


def _round(x: float | None, digits: int = 3) -> float | None:
    return None if x is None else round(x, digits)


def _all_threads_added(samples: Samples, key: str, on: str = "") -> float | None:
    """µs of CPU of all threads added per call: instrumented against not (``on`` given: the
    uninstrumented ``on`` workload against ``key``)."""
    a = samples.all_threads(False, on) if on else samples.all_threads(True, key)
    b = samples.all_threads(False, key)
    return None if a is None or b is None else a - b


def _slope(long: float | None, short: float | None, dn: int) -> float | None:
    return None if long is None or short is None else (long - short) / dn


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return (values[0],) * 3 if values else (float("nan"),) * 3
    q = statistics.quantiles(values, n=4)
    return q[0], statistics.median(values), q[2]


def rows_for(subject: Subject, samples: Samples, workloads: list[Workload], tag: str) -> list[Row]:
    """A per-call row, a per-chunk row (the slope between the short and the long stream), the
    same slope over pre-parsed events if they were measured (otel-tokens only), and the
    stream's own per-call part."""
    by_key = {w.key: w for w in workloads}
    suffix = f"_{tag}" if tag else ""
    label = " (SDK span on)" if tag == "sdk_on" else " (SDK span off)" if tag else ""
    name = f"{subject.provider} {API[subject.provider]}"
    call, short, long = (by_key[f"{k}{suffix}"] for k in ("call", "stream_short", "stream_long"))
    med, rnd = samples.median, samples.by_round

    def added_by_round(key: str) -> list[float]:
        return [a - b for a, b in zip(rnd(True, key), rnd(False, key), strict=True)]

    def chunk_row(
        short: Workload, long: Workload, what: str, kind: str, note: str
    ) -> tuple[Row, list[float]]:
        dn = long.chunks - short.chunks
        slopes = [
            (dl - ds) / dn
            for dl, ds in zip(added_by_round(long.key), added_by_round(short.key), strict=True)
        ]
        row = Row(
            what,
            subject.label,
            kind,
            (med(False, long.key) - med(False, short.key)) / dn,
            (med(True, long.key) - med(True, short.key)) / dn,
            _quartiles(slopes),
            note,
            all_threads_added_us=_slope(
                _all_threads_added(samples, long.key), _all_threads_added(samples, short.key), dn
            ),
        )
        return row, slopes

    between = f"slope between {short.chunks}- and {long.chunks}-chunk streams"
    per_chunk, slopes = chunk_row(short, long, f"{name} stream, per chunk{label}", "chunk", between)
    isolated = []
    if f"iso_short{suffix}" in by_key:
        sdk = " (its per-event span observer still runs)" if tag == "sdk_on" else ""
        isolated = [
            chunk_row(
                by_key[f"iso_short{suffix}"],
                by_key[f"iso_long{suffix}"],
                f"{name} stream, per chunk (client parsing excluded){label}",
                "chunk_isolated",
                f"otel-tokens only: {between} of the client's pre-parsed events; the client's "
                f"SSE decoding and parsing (its Stream.__stream__) left out in both modes{sdk}",
            )[0]
        ]
    fixed_off = med(False, short.key)
    fixed_added = med(True, short.key) - fixed_off - per_chunk.added_us * short.chunks
    short_all, chunk_all = _all_threads_added(samples, short.key), per_chunk.all_threads_added_us
    fixed_all = (
        None if short_all is None or chunk_all is None else short_all - chunk_all * short.chunks
    )
    return [
        Row(
            f"{name} non-stream, per call{label}",
            subject.label,
            "call",
            med(False, call.key),
            med(True, call.key),
            _quartiles(added_by_round(call.key)),
            all_threads_added_us=_all_threads_added(samples, call.key),
        ),
        per_chunk,
        *isolated,
        Row(
            f"{name} stream, per call (fixed part){label}",
            subject.label,
            "stream_call",
            fixed_off,
            fixed_off + fixed_added,
            _quartiles(
                [
                    d - s * short.chunks
                    for d, s in zip(added_by_round(short.key), slopes, strict=True)
                ]
            ),
            f"{short.chunks}-chunk stream's added time less {short.chunks} x per-chunk added",
            all_threads_added_us=fixed_all,
        ),
    ]


def sdk_rows(samples: Samples, workloads: list[Workload]) -> list[Row]:
    """anthropic's own tracing, from the uninstrumented runs: SDK span on against off."""
    by_key = {w.key: w for w in workloads}
    med, rnd = samples.median, samples.by_round
    who = "anthropic SDK's own span, no instrumentation"
    dn = by_key["stream_long_sdk_on"].chunks - by_key["stream_short_sdk_on"].chunks

    def per_chunk(tag: str) -> float:
        return (med(False, f"stream_long_{tag}") - med(False, f"stream_short_{tag}")) / dn

    def round_slopes(tag: str) -> list[float]:
        long, short = rnd(False, f"stream_long_{tag}"), rnd(False, f"stream_short_{tag}")
        return [(a - b) / dn for a, b in zip(long, short, strict=True)]

    on, off = rnd(False, "call_sdk_on"), rnd(False, "call_sdk_off")
    return [
        Row(
            "anthropic messages non-stream, per call: SDK tracing cost",
            who,
            "sdk_call",
            med(False, "call_sdk_off"),
            med(False, "call_sdk_on"),
            _quartiles([a - b for a, b in zip(on, off, strict=True)]),
            "uninstrumented; open_telemetry=False against the SDK's default tracing",
            all_threads_added_us=_all_threads_added(samples, "call_sdk_off", "call_sdk_on"),
        ),
        Row(
            "anthropic messages stream, per chunk: SDK tracing cost",
            who,
            "sdk_chunk",
            per_chunk("sdk_off"),
            per_chunk("sdk_on"),
            _quartiles(
                [
                    a - b
                    for a, b in zip(round_slopes("sdk_on"), round_slopes("sdk_off"), strict=True)
                ]
            ),
            all_threads_added_us=_slope(
                _all_threads_added(samples, "stream_long_sdk_off", "stream_long_sdk_on"),
                _all_threads_added(samples, "stream_short_sdk_off", "stream_short_sdk_on"),
                dn,
            ),
        ),
    ]


def format_table(rows: list[Row]) -> str:
    head = (
        "what",
        "instrumentation",
        "uninstr µs",
        "instr µs",
        "added µs",
        "all threads added µs",
        "ratio",
        "added by round: median [quartiles]",
    )
    runs = any(r.added_us_by_run for r in rows)
    if runs:
        head = (*head, "added, lowest..highest run")
    body = []
    for r in rows:
        fine = r.kind in ("chunk", "chunk_isolated", "sdk_chunk")
        f = "{:.3f}" if fine else "{:.1f}"
        by_round = "{1:+.2f} [{0:+.2f}..{2:+.2f}]" if fine else "{1:+.1f} [{0:+.0f}..{2:+.0f}]"
        body.append(
            (
                r.what,
                r.who,
                f.format(r.uninstrumented_us),
                f.format(r.instrumented_us),
                ("{:+.3f}" if fine else "{:+.1f}").format(r.added_us),
                "-"
                if r.all_threads_added_us is None
                else ("{:+.3f}" if fine else "{:+.1f}").format(r.all_threads_added_us),
                # Over pre-parsed events the uninstrumented slope is ~0 (a list's iteration).
                "-" if r.kind == "chunk_isolated" else f"{r.ratio:.3f}",
                by_round.format(*r.rounds_us) + (" noisy" if r.noisy else ""),
            )
        )
        if runs:
            by_run = r.added_us_by_run
            span = "{:+.3f}..{:+.3f}" if fine else "{:+.1f}..{:+.1f}"
            body[-1] = (*body[-1], span.format(min(by_run), max(by_run)) if by_run else "-")
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(head, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for line in body:
        cells = [
            c.ljust(w) if i in (0, 1, 7) else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def verdicts(rows: list[Row]) -> list[dict[str, Any]]:
    """Targets: < 30 µs per call, < 1 µs per chunk, and below every peer on the same row.

    The per-chunk target applies to both per-chunk rows; the one with the client's parsing
    excluded (``client_parsing_excluded``) has no peer row."""
    out = []
    for r in rows:
        if r.who != "otel-tokens" or r.kind not in ("call", "chunk", "chunk_isolated"):
            continue
        target = TARGET_CALL_US if r.kind == "call" else TARGET_CHUNK_US
        others = [p for p in rows if p.who != r.who and p.what == r.what and p.valid]
        peers = {p.who: p.added_us for p in others}
        out.append(
            {
                "what": r.what,
                "client_parsing_excluded": r.kind == "chunk_isolated",
                "valid": r.valid,
                "added_us": round(r.added_us, 3),
                "added_us_median_by_round": round(r.rounds_us[1], 3),
                "all_threads_added_us": _round(r.all_threads_added_us),
                "target_us": target,
                "meets_target": r.valid and r.added_us < target,
                "peers_added_us": {k: round(v, 3) for k, v in peers.items()},
                "peers_all_threads_added_us": {
                    p.who: _round(p.all_threads_added_us) for p in others
                },
                "below_every_peer": (
                    (r.valid and all(r.added_us < v for v in peers.values())) if peers else None
                ),
            }
        )
    return out


# --- profiling ----------------------------------------------------------------------------
_OURS = ("otel_tokens", "opentelemetry", "genai_prices", "wrapt")
# Functions whose cumulative time includes the client's own work (they wrap it).
_AROUND = ("wrapper", "parse_hook", "_watch", "finish_api_call_span_hook")


def profile_added(subject: Subject, telemetry: Telemetry, work: Workload, n: int, top: int) -> str:
    """cProfile of ``work`` instrumented, GC off: time per call in instrumentation code.

    Lists the cumulative and own time of the functions of otel-tokens, the OpenTelemetry SDK,
    genai-prices and wrapt, per call (per chunk for a stream). cProfile inflates small
    functions: read the shares, not the absolute numbers, which the timed run gives.
    """
    with subject.active(True, telemetry):
        for _ in range(5):
            work.call()
        prof = cProfile.Profile()
        gc.collect()
        gc.disable()
        try:
            prof.enable()
            for _ in range(n):
                work.call()
            prof.disable()
        finally:
            gc.enable()
    stats: Any = pstats.Stats(prof)
    units = n * (work.chunks or 1)
    per = "chunk" if work.chunks else "call"
    found = []
    for (file, line, func), (_, ncalls, own, cum, _callers) in stats.stats.items():
        if not any(f"/{p}/" in file for p in _OURS):
            continue
        where = file.split("site-packages/")[-1].split("/src/")[-1]
        wraps = "  [includes the client's own work]" if func in _AROUND else ""
        found.append((cum, own, ncalls, f"{func}  ({where}:{line}){wraps}"))
    found.sort(reverse=True)
    lines = [
        f"{subject.name} {work.key}: µs per {per} under cProfile (GC off): "
        f"cumulative, own, calls per {per}"
    ]
    for cum, own, ncalls, what in found[:top]:
        lines.append(
            f"  {cum / units * 1e6:9.2f} {own / units * 1e6:8.2f} {ncalls / units:7.2f}  {what}"
        )
    return "\n".join(lines)


# --- running ------------------------------------------------------------------------------
def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in (
        "otel-tokens",
        "openai",
        "anthropic",
        "google-genai",
        "boto3",
        "botocore",
        "httpx2",
        "opentelemetry-sdk",
        "wrapt",
        *DISTRIBUTIONS.values(),
        "opentelemetry-util-genai",
    ):
        with contextlib.suppress(PackageNotFoundError):
            out[dist] = version(dist)
    return out


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_subject(name: str, plan: Plan) -> dict[str, Any]:
    """Measure one instrumentation in this process: its rows, checks and problems."""
    subject = SUBJECTS[name]
    started = time.perf_counter()
    result: dict[str, Any] = {"subject": name, "label": subject.label, "rows": [], "skipped": None}
    reason = subject.load()
    if reason is not None:
        result["skipped"] = reason
        return result
    telemetry = Telemetry.make(plan.span_processor)
    iso = not subject.peer  # client parsing excluded: otel-tokens only
    work = workloads_of(subject, plan, telemetry.tracer_provider, iso)
    try:
        for w in work:  # the client's own first-call costs, before anything is compared
            w.call()
        result["checks"] = check(subject, telemetry, work)
        samples = measure(subject, telemetry, work, plan)
    except Exception as exc:
        versions = _versions()
        result["skipped"] = (
            f"fails with openai {versions.get('openai')} / anthropic "
            f"{versions.get('anthropic')}: {type(exc).__name__}: {exc}"
        )
        return result
    if subject.provider != "anthropic":
        rows = rows_for(subject, samples, work, "")
    else:
        rows = rows_for(subject, samples, work, "sdk_on") + rows_for(
            subject, samples, work, "sdk_off"
        )
        if not subject.peer:
            rows += sdk_rows(samples, work)
    bad = {k for k, c in result["checks"]["workloads"].items() if not c["records_usage"]}
    for r in rows:
        if bad & _keys_of(r):
            r.valid = False
            r.note = "INVALID: recorded no usage (see checks)" + (f"; {r.note}" if r.note else "")
    result["rows"] = [asdict(r) for r in rows]
    result["leftover_wrappers"] = subject.leftovers
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    return result


def _keys_of(row: Row) -> set[str]:
    """The workloads a row is figured from."""
    tag = "_sdk_on" if "(SDK span on)" in row.what else ""
    tag = "_sdk_off" if "(SDK span off)" in row.what else tag
    if row.kind == "call":
        return {f"call{tag}"}
    if row.kind in ("chunk", "stream_call"):
        return {f"stream_short{tag}", f"stream_long{tag}"}
    if row.kind == "chunk_isolated":
        return {f"iso_short{tag}", f"iso_long{tag}"}
    return set()


def run_isolated(name: str, plan: Plan) -> dict[str, Any]:
    """``run_subject`` in a fresh interpreter: nothing one instrumentation leaves behind
    (patched modules, wrappers its uninstrument() misses) reaches the next."""
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", name, *plan.argv()],
        stdout=subprocess.PIPE,
        check=False,
        text=True,
    )
    if proc.returncode != 0:
        return {
            "subject": name,
            "label": SUBJECTS[name].label,
            "rows": [],
            "skipped": f"worker failed (exit {proc.returncode}); see its output above",
        }
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _git_state() -> dict[str, Any]:
    root = Path(__file__).resolve().parents[1]

    def git(*cmd: str) -> str:
        proc = subprocess.run(
            ["git", "-C", str(root), *cmd], capture_output=True, text=True, check=False
        )
        return proc.stdout.strip()

    with contextlib.suppress(OSError):
        return {
            "commit": git("rev-parse", "HEAD"),
            "src_changed": git("status", "--porcelain", "src"),
        }
    return {}


def _rows_of(results: list[dict[str, Any]]) -> list[Row]:
    return [
        Row(
            **{
                **r,
                "rounds_us": tuple(r["rounds_us"]),
                "added_us_by_run": tuple(r.get("added_us_by_run", ())),
            }
        )
        for res in results
        for r in res["rows"]
    ]


def _report(
    runs: list[list[dict[str, Any]]], plan: Plan, elapsed: float, load_at_start: list[float]
) -> dict[str, Any]:
    rows = combine_runs([_rows_of(results) for results in runs])
    results = [res for results in runs for res in results]
    machine = {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "processor": _cpu_model(),
        "load_average_at_start": load_at_start,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    skipped = {res["subject"]: res["skipped"] for res in results if res["skipped"]}
    problems: list[str] = []
    for res in results:
        if res.get("leftover_wrappers"):
            problems.append(
                f"{res['subject']}: uninstrument() leaves {len(res['leftover_wrappers'])} "
                f"functions wrapped ({', '.join(res['leftover_wrappers'][:4])}...); the bench "
                "put the originals back after each instrumented round"
            )
        for key, c in (res.get("checks") or {}).get("workloads", {}).items():
            if not c["records_usage"]:
                problems.append(f"{res['subject']}: no usage recorded on {key}: {c}")
    return {
        "machine": machine,
        "versions": _versions(),
        "git": _git_state(),
        "plan": asdict(plan),
        "runs": len(runs),
        "elapsed_s": round(elapsed, 1),
        "rows": rows,
        "verdicts": verdicts(rows),
        "skipped": skipped,
        "problems": list(dict.fromkeys(problems)),  # --runs: once, not once per run
        "checks": {res["subject"]: res.get("checks") for res in results},
    }


def _print_report(report: dict[str, Any], out: Callable[[str], None]) -> None:
    rows: list[Row] = report["rows"]
    plan, machine = report["plan"], report["machine"]
    out(format_table(rows))
    out("")
    for name, reason in report["skipped"].items():
        out(f"not measured: {name}: {reason}")
    for problem in report["problems"]:
        out(f"note: {problem}")

    def all_threads(us: float | None) -> str:
        return "?" if us is None else f"{us:+.3f}"

    for v in report["verdicts"]:
        peers = ", ".join(
            f"{k} {p:+.3f} ({all_threads(v['peers_all_threads_added_us'].get(k))} all threads)"
            for k, p in v["peers_added_us"].items()
        )
        ok = v["meets_target"] and v["below_every_peer"] is not False
        flag = "OK  " if ok else "MISS" if v["valid"] else "INVALID (recorded nothing)"
        below = "below every peer" if v["below_every_peer"] else "NOT below every peer"
        only = " (otel-tokens only)" if v["client_parsing_excluded"] else ""
        out(
            f"{flag} {v['what']}: {v['added_us']:+.3f} µs caller thread (by round "
            f"{v['added_us_median_by_round']:+.3f}), {all_threads(v['all_threads_added_us'])} µs "
            f"all threads; target < {v['target_us']:g} (caller thread) "
            f"{'met' if v['meets_target'] else 'MISSED'}; "
            f"{below if peers else 'no peer'}{f' ({peers})' if peers else ''}{only}"
        )
    out(
        f"machine: {machine['nproc']} CPUs ({machine['processor']}), Python {machine['python']}, "
        f"load average {machine['load_average_at_start'][0]} at start, "
        f"{machine['load_average_at_end'][0]} at end; "
        + (f"{report['runs']} runs (medians across runs), " if report.get("runs", 1) > 1 else "")
        + f"{plan['rounds']} rounds, "
        f"{plan['clock']} clock, {plan['span_processor']} span processor, "
        f"openai streams {'with' if plan.get('include_usage', True) else 'without'} "
        f"include_usage, {report['elapsed_s']:.0f} s"
    )
    out(
        "caller thread: the time the application's call takes longer; all threads: CPU the "
        "process spends in all (the recording thread included)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and calls (< 60 s)")
    parser.add_argument("--rounds", type=int, help="round pairs (instrumented, uninstrumented)")
    parser.add_argument("--scale", type=float, help="multiplies the timed calls per round")
    parser.add_argument("--short", type=int, default=10, help="content chunks, short stream")
    parser.add_argument("--long", type=int, default=200, help="content chunks, long stream")
    parser.add_argument(
        "--clock",
        choices=tuple(CLOCKS),
        default="cpu",
        help="cpu (default): the calling thread's CPU time, which other processes on a shared "
        "machine do not inflate; wall: perf_counter. Either way the CPU time of all threads "
        "(the background recording included) is reported too",
    )
    parser.add_argument("--span-processor", choices=("batch", "simple"), default="batch")
    parser.add_argument(
        "--no-include-usage",
        action="store_true",
        help="OpenAI streams without stream_options.include_usage: no usage chunk, so "
        "otel-tokens reads every chunk's text and counts it",
    )
    parser.add_argument("--only", nargs="+", choices=tuple(SUBJECTS), help="subjects to run")
    parser.add_argument("--no-peers", action="store_true", help="measure otel-tokens only")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="measure every subject in this process, not one process each",
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=1,
        help="run every subject this many times, each in a fresh process, and report the "
        "median across runs (with each run's added time)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write JSON to PATH ('-': stdout)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="profile where otel-tokens' added time goes, instead of timing",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--plan", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    plan = Plan(**json.loads(args.plan)) if args.plan else Plan.of(args)
    warnings.simplefilter("ignore", DeprecationWarning)

    if args.worker:
        print(json.dumps(run_subject(args.worker, plan)))
        return 0

    names = [
        n
        for n, s in SUBJECTS.items()
        if (not args.only or n in args.only) and not (args.no_peers and s.peer)
    ]
    if args.profile:
        for name in names:
            subject = SUBJECTS[name]
            if subject.peer or subject.load() is not None:
                continue
            telemetry = Telemetry.make(plan.span_processor)
            work = workloads_of(subject, plan, telemetry.tracer_provider)
            for w in work:
                if not w.key.startswith("stream_short"):
                    n = 20 if w.chunks else 300
                    print(profile_added(subject, telemetry, w, n, 40), "\n", flush=True)
        return 0

    load = [round(x, 2) for x in os.getloadavg()]
    if load[0] > 0.5 * (os.cpu_count() or 1):
        _log(
            f"warning: load average {load[0]} on {os.cpu_count()} CPUs: other work shares the "
            "machine; figures are noisier (see the by-round column)"
            + ("; prefer --clock cpu" if plan.clock == "wall" else "")
        )
    started = time.perf_counter()
    runs = []
    for run in range(max(1, args.runs)):
        results = []
        for name in names:
            res = run_subject(name, plan) if args.in_process else run_isolated(name, plan)
            status = f"skipped: {res['skipped']}" if res["skipped"] else f"{res['elapsed_s']} s"
            _log(f"{name}{f' (run {run + 1})' if args.runs > 1 else ''}: {status}")
            results.append(res)
        runs.append(results)
    report = _report(runs, plan, time.perf_counter() - started, load)
    _print_report(report, _log if args.json == "-" else print)
    if args.json:
        write_json(args.json, {**report, "rows": [r.as_dict() for r in report["rows"]]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
