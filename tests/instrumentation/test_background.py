"""Background recording: what the caller's thread no longer does must still happen, once.

The real ``openai`` client against the bundled server; spans and points are read from the
SDK's in-memory exporters *without* going through ``otel_tokens.flush()`` where the point of
the test is that something else flushes.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otel_tokens
from otel_tokens import semconv as sc
from otel_tokens._background import BackgroundQueue, queue
from otel_tokens.demo.server import ProviderServer
from otel_tokens.instrumentation import AnthropicInstrumentor, OpenAIInstrumentor

from .conftest import Telemetry

MESSAGES: list[Any] = [{"role": "user", "content": "Hello there"}]


def _instrumented(inst: Any, telemetry: Telemetry) -> Iterator[Any]:
    inst.instrument(
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
        recording="background",
    )
    try:
        yield inst
    finally:
        inst.uninstrument()


@pytest.fixture
def background(telemetry: Telemetry) -> Iterator[OpenAIInstrumentor]:
    yield from _instrumented(OpenAIInstrumentor(), telemetry)


@pytest.fixture
def client(server: ProviderServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key="t", base_url=server.openai_base_url, max_retries=0) as c:
        yield c


def _ours(spans: Any) -> list[Any]:
    return [s for s in spans if s.instrumentation_scope.name == "otel_tokens"]


def _chat(client: openai.OpenAI) -> Any:
    return client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)


def test_span_has_the_calls_own_times_not_the_recording_threads(
    background: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    before = time.time_ns()
    _chat(client)
    returned = time.time_ns()
    time.sleep(0.05)  # the recording thread runs meanwhile, later than the call
    (span,) = _ours(telemetry.finished())
    assert before <= span.start_time <= span.end_time <= returned
    assert span.kind == trace.SpanKind.CLIENT
    assert span.attributes[sc.GEN_AI_USAGE_COST_AMOUNT] > 0


def test_span_is_a_child_of_the_span_current_at_the_call(
    background: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    tracer = telemetry.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("handler") as parent:
        _chat(client)
    (span,) = _ours(telemetry.finished())
    assert span.parent is not None
    assert span.parent.span_id == parent.get_span_context().span_id
    assert span.context.trace_id == parent.get_span_context().trace_id


def test_provider_force_flush_records_queued_calls_first(
    background: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    queue.interval = 5.0  # the recording thread would not get to it in this test's time
    try:
        _chat(client)
        assert telemetry.tracer_provider.force_flush()
        spans = _ours(telemetry.spans.get_finished_spans())  # no otel_tokens.flush() here
        assert len(spans) == 1
        _chat(client)
        telemetry.meter_provider.force_flush()
        data = telemetry.reader.get_metrics_data()
        metrics = [m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics]
        names = {m.name for m in metrics}
        assert sc.METRIC_CLIENT_OPERATION_DURATION in names
    finally:
        queue.interval = 0.02
        otel_tokens.flush()


def test_uninstrument_restores_the_providers_methods(telemetry: Telemetry) -> None:
    original = TracerProvider.force_flush
    inst = OpenAIInstrumentor()
    inst.instrument(tracer_provider=telemetry.tracer_provider)
    assert TracerProvider.force_flush is not original
    inst.uninstrument()
    assert TracerProvider.force_flush is original


def test_many_threads_every_call_recorded_once(
    background: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    def work() -> None:
        for _ in range(10):
            _chat(client)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(_ours(telemetry.finished())) == 80
    durations = telemetry.points(sc.METRIC_CLIENT_OPERATION_DURATION)
    assert sum(p.count for p in durations) == 80


def test_a_queued_openai_call_does_not_hold_its_response(
    background: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    # While it waits for the recording thread, a call keeps the few fields it will read,
    # not the whole response (dozens of objects the garbage collector would walk).
    queue.interval = 5.0  # the recording thread would not get to it in this test's time
    try:
        response = _chat(client)
        usage = response.usage
        assert usage is not None
        expected = (response.model, response.id, usage.prompt_tokens, usage.completion_tokens)
        reasons = (response.choices[0].finish_reason,)
        gone = weakref.ref(response)
        del response
        gc.collect()
        assert gone() is None
        assert queue.pending == 1  # not recorded yet
    finally:
        queue.interval = 0.02
    (span,) = _ours(telemetry.finished())
    a = span.attributes
    assert (
        a[sc.GEN_AI_RESPONSE_MODEL],
        a[sc.GEN_AI_RESPONSE_ID],
        a[sc.GEN_AI_USAGE_INPUT_TOKENS],
        a[sc.GEN_AI_USAGE_OUTPUT_TOKENS],
    ) == expected
    assert tuple(a[sc.GEN_AI_RESPONSE_FINISH_REASONS]) == reasons
    assert a[sc.GEN_AI_USAGE_COST_AMOUNT] > 0


def test_a_queued_anthropic_call_does_not_hold_its_response(
    server: ProviderServer, telemetry: Telemetry
) -> None:
    inst = AnthropicInstrumentor()
    queue.interval = 5.0
    try:
        for _ in _instrumented(inst, telemetry):
            with anthropic.Anthropic(
                api_key="t", base_url=server.anthropic_base_url, max_retries=0
            ) as c:
                message = c.messages.create(
                    model="claude-sonnet-4-5", max_tokens=64, messages=MESSAGES
                )
                expected = (
                    message.model,
                    message.id,
                    message.stop_reason,
                    message.usage.output_tokens,
                )
                gone = weakref.ref(message)
                del message
                gc.collect()
                assert gone() is None
            queue.interval = 0.02
            (span,) = [
                s for s in telemetry.finished() if s.attributes.get(sc.GEN_AI_USAGE_COST_AMOUNT)
            ]
            a = span.attributes
            assert (
                a[sc.GEN_AI_RESPONSE_MODEL],
                a[sc.GEN_AI_RESPONSE_ID],
                a[sc.GEN_AI_RESPONSE_FINISH_REASONS][0],
                a[sc.GEN_AI_USAGE_OUTPUT_TOKENS],
            ) == expected
    finally:
        queue.interval = 0.02
        otel_tokens.flush()


def test_full_queue_records_on_the_callers_thread() -> None:
    q = BackgroundQueue(max_pending=0)
    ran: list[str] = []
    q.submit(lambda: ran.append(threading.current_thread().name))
    assert ran == [threading.current_thread().name]  # back-pressure, nothing dropped
    assert q.run_by_callers == 1


def test_a_job_waiting_too_long_is_run_by_the_next_caller() -> None:
    # The recording thread sleeps 10 s before each batch: as if it could not get the GIL.
    q = BackgroundQueue(interval=10.0, max_delay=0.05)
    ran: list[tuple[str, str]] = []
    me = threading.current_thread().name
    q.submit(lambda: ran.append(("first", threading.current_thread().name)))
    q.submit(lambda: ran.append(("second", threading.current_thread().name)))
    assert ran == []  # young jobs wait for the thread
    time.sleep(0.1)
    q.submit(lambda: ran.append(("third", threading.current_thread().name)))
    assert ran == [("first", me)]  # the oldest, one per submit: the backlog stops growing
    q.submit(lambda: ran.append(("fourth", threading.current_thread().name)))
    assert ran == [("first", me), ("second", me)]
    assert q.pending == 2
    assert q.run_by_callers == 2
    assert q.flush(5)
    assert [name for name, _ in ran] == ["first", "second", "third", "fourth"]


def test_flush_runs_queued_jobs_and_waits_for_running_ones() -> None:
    q = BackgroundQueue(interval=0.0)
    started = threading.Event()
    done: list[int] = []

    def slow() -> None:
        started.set()
        time.sleep(0.2)
        done.append(1)

    q.submit(slow)
    assert started.wait(2)  # the recording thread is running it
    for i in range(5):
        q.submit(lambda i=i: done.append(i))
    assert q.flush(5)
    assert sorted(done) == [0, 1, 1, 2, 3, 4]
    assert q.pending == 0


def test_flush_times_out() -> None:
    q = BackgroundQueue(interval=0.0)
    started = threading.Event()
    q.submit(lambda: (started.set(), time.sleep(0.5)))
    assert started.wait(2)
    assert q.flush(0.05) is False
    assert q.flush(5) is True


def test_a_failing_job_does_not_stop_the_thread() -> None:
    q = BackgroundQueue(interval=0.0)
    done: list[int] = []

    def boom() -> None:
        raise RuntimeError("job failed")

    q.submit(boom)
    q.submit(lambda: done.append(1))
    assert q.flush(5)
    assert done == [1]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_records_queued_calls_in_the_parent_only(
    background: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    queue.interval = 5.0
    try:
        _chat(client)
        pid = os.fork()
        if pid == 0:  # the child: nothing of the parent's is left to record twice
            os._exit(0 if queue.pending == 0 else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        # flushed before the fork, by the parent
        assert len(_ours(telemetry.spans.get_finished_spans())) == 1
    finally:
        queue.interval = 0.02
        otel_tokens.flush()


def test_inline_mode_has_no_background_work(
    client: openai.OpenAI, telemetry: Telemetry
) -> None:
    inst = OpenAIInstrumentor()
    inst.instrument(
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
        recording="inline",
    )
    try:
        _chat(client)
        assert queue.pending == 0
        assert len(_ours(telemetry.spans.get_finished_spans())) == 1  # no flush needed
    finally:
        inst.uninstrument()


_EXPORT_TO_FILE = """
import os, sys
import openai
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from otel_tokens.instrumentation import OpenAIInstrumentor

OUT, URL = sys.argv[1], sys.argv[2]

class ToFile(SpanExporter):
    def export(self, spans):
        with open(OUT, "a") as f:
            for s in spans:
                f.write(s.name + "\\n")
        return SpanExportResult.SUCCESS

tp = TracerProvider()
tp.add_span_processor(SimpleSpanProcessor(ToFile()))
OpenAIInstrumentor().instrument(tracer_provider=tp, recording="background")

def chat(model):
    c = openai.OpenAI(api_key="t", base_url=URL, max_retries=0)
    c.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
"""


def test_queued_calls_are_exported_at_exit(server: ProviderServer, tmp_path: Any) -> None:
    """A short script that exits right after its call still exports the call's span."""
    out = tmp_path / "spans.txt"
    script = _EXPORT_TO_FILE + """
from otel_tokens._background import queue
queue.interval = 60.0  # only the exit handler can record it
chat("gpt-4o-mini")
"""
    subprocess.run(
        [sys.executable, "-c", script, str(out), server.openai_base_url], check=True, timeout=60
    )
    assert out.read_text().splitlines() == ["chat gpt-4o-mini"]


def test_a_tracer_provider_made_later_still_sees_spans(
    background: OpenAIInstrumentor, client: openai.OpenAI
) -> None:
    """SimpleSpanProcessor over a fresh provider: independent of the fixture's exporter."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    inst = OpenAIInstrumentor()
    inst.uninstrument()
    inst.instrument(tracer_provider=provider, recording="background")
    _chat(client)
    provider.force_flush()
    assert len(_ours(exporter.get_finished_spans())) == 1


# --- anthropic's own span: its end is held until our attributes are on it ------------------
@pytest.fixture
def anthropic_background(telemetry: Telemetry) -> Iterator[Any]:
    from otel_tokens.instrumentation import AnthropicInstrumentor

    yield from _instrumented(AnthropicInstrumentor(), telemetry)


@pytest.mark.parametrize("stream", [False, True])
def test_sdk_span_ends_when_the_sdk_ended_it_with_our_attributes(
    anthropic_background: Any,
    server: ProviderServer,
    telemetry: Telemetry,
    monkeypatch: pytest.MonkeyPatch,
    stream: bool,
) -> None:
    import anthropic

    monkeypatch.delenv("ANTHROPIC_OPEN_TELEMETRY", raising=False)
    client = anthropic.Anthropic(
        api_key="t",
        base_url=server.anthropic_base_url,
        max_retries=0,
        open_telemetry={"tracer_provider": telemetry.tracer_provider},
    )
    queue.interval = 0.2  # the recording thread runs well after the call returned
    try:
        before = time.time_ns()
        kwargs: dict[str, Any] = {
            "model": "claude-haiku-4-5",
            "max_tokens": 64,
            "messages": MESSAGES,
        }
        if stream:
            for _ in client.messages.create(stream=True, **kwargs):
                pass
        else:
            client.messages.create(**kwargs)
        returned = time.time_ns()
        (span,) = telemetry.finished()  # the SDK's span only: we made none
    finally:
        queue.interval = 0.02
        client.close()
    assert span.instrumentation_scope.name == "com.anthropic.sdk.python"
    assert before <= span.start_time <= span.end_time <= returned
    attrs = span.attributes or {}
    assert attrs[sc.GEN_AI_USAGE_COST_AMOUNT] > 0
    assert attrs[sc.BILLING_PRICING_STATUS] == sc.STATUS_PRICED
    assert attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] > 0  # the SDK's own attributes are kept


def test_a_chat_loop_appending_to_its_messages_does_not_change_the_estimate(
    background: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    """A stream without usage is estimated on the recording thread, after the user's code
    has appended the reply to the very list it sent: the request's own messages count."""

    def turn(messages: list[Any]) -> None:
        reply = "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(
                model="gpt-4o-mini", messages=messages, stream=True
            )
            if c.choices
        )
        messages.append({"role": "assistant", "content": reply * 20})

    queue.interval = 0.2
    try:
        turn([{"role": "user", "content": "Hello there"}])
        appended = telemetry.points(sc.METRIC_CLIENT_TOKEN_USAGE)
        kept = [{"role": "user", "content": "Hello there"}]
        turn(list(kept))
        both = telemetry.points(sc.METRIC_CLIENT_TOKEN_USAGE)
    finally:
        queue.interval = 0.02

    def input_sum(points: list[Any]) -> int:
        return int(
            sum(p.sum for p in points if p.attributes[sc.GEN_AI_TOKEN_TYPE] == "input")
        )

    first = input_sum(appended)
    assert first > 0
    assert input_sum(both) == 2 * first  # both calls sent the same single message


def test_no_thread_at_interpreter_shutdown_records_on_the_callers_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't create new thread at interpreter shutdown")

    q = BackgroundQueue()
    monkeypatch.setattr(threading.Thread, "start", refuse)
    ran: list[str] = []
    q.submit(lambda: ran.append(threading.current_thread().name))
    assert ran == [threading.current_thread().name]


def test_flush_from_a_job_does_not_wait_for_itself() -> None:
    q = BackgroundQueue(interval=0.0)
    done: list[int] = []

    def job() -> None:
        done.append(1)
        q.submit(lambda: done.append(2))
        assert q.flush(1.0)  # e.g. a span processor's force_flush, on the recording thread

    started = time.monotonic()
    q.submit(job)
    assert q.flush(5)
    assert done == [1, 2]
    assert time.monotonic() - started < 1.0


def test_flush_waits_for_what_was_queued_before_it_not_after() -> None:
    """Under steady traffic the queue may never be empty: flush() has a cut-off."""
    q = BackgroundQueue(interval=60.0)  # only flush() runs jobs here
    ran: list[str] = []

    def first() -> None:
        ran.append("first")
        q.submit(lambda: ran.append("later"))  # queued while the flush runs

    q.submit(first)
    assert q.flush(5)
    assert ran == ["first"]
    assert q.pending == 1
    assert q.flush(5)
    assert ran == ["first", "later"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_multiprocessing_child_exports_its_calls(server: ProviderServer, tmp_path: Any) -> None:
    """A multiprocessing child leaves through os._exit, past atexit."""
    out = tmp_path / "spans.txt"
    script = _EXPORT_TO_FILE + """
import multiprocessing as mp
from otel_tokens._background import queue
if __name__ == "__main__":
    ctx = mp.get_context("fork")
    queue.interval = 60.0  # the child's recording thread would not get to it
    p = ctx.Process(target=chat, args=("gpt-4o-mini",))
    p.start()
    p.join()
    assert p.exitcode == 0
"""
    path = tmp_path / "app.py"
    path.write_text(script)
    subprocess.run(
        [sys.executable, str(path), str(out), server.openai_base_url], check=True, timeout=60
    )
    assert out.read_text().splitlines() == ["chat gpt-4o-mini"]


def test_a_call_in_an_earlier_registered_exit_handler_is_exported(
    server: ProviderServer, tmp_path: Any
) -> None:
    """Exit handlers run last-registered first: ours (at the first call) runs before the
    app's; a call the app makes after it is recorded on the app's thread."""
    out = tmp_path / "spans.txt"
    script = _EXPORT_TO_FILE + """
import atexit
atexit.register(chat, "gpt-4o")  # before our first call
chat("gpt-4o-mini")
"""
    subprocess.run(
        [sys.executable, "-c", script, str(out), server.openai_base_url], check=True, timeout=60
    )
    assert sorted(out.read_text().splitlines()) == ["chat gpt-4o", "chat gpt-4o-mini"]


def test_the_sdk_span_keeps_what_the_sdk_wrote(
    server: ProviderServer, telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whichever mode records (CI runs this file inline too), attributes and status the SDK
    wrote on its own span stay; ours are added beside them."""
    import anthropic

    from otel_tokens.instrumentation import AnthropicInstrumentor

    monkeypatch.delenv("ANTHROPIC_OPEN_TELEMETRY", raising=False)
    inst = AnthropicInstrumentor()
    inst.instrument(
        tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
    )
    client = anthropic.Anthropic(
        api_key="t",
        base_url=server.anthropic_base_url,
        max_retries=0,
        open_telemetry={"tracer_provider": telemetry.tracer_provider},
    )
    try:
        stream = client.messages.create(
            model="claude-haiku-4-5",
            max_tokens=64,
            messages=MESSAGES,
            stream=True,
            extra_headers={"x-test-scenario": "drop_mid_stream"},
        )
        with pytest.raises(Exception):  # the client's own connection error
            for _ in stream:
                pass
        (span,) = telemetry.finished()
    finally:
        inst.uninstrument()
        client.close()
    attrs = span.attributes or {}
    assert attrs[sc.ERROR_TYPE] == "connection_error"  # the SDK's value, not ours
    assert span.status.status_code == trace.StatusCode.ERROR
    assert attrs[sc.BILLING_USAGE_SOURCE] == "estimated"  # ours, beside it
