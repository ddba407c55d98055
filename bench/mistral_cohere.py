"""Per-call overhead of MistralInstrumentor and CohereInstrumentor (non-streamed chat, and a
streamed chat per call), against in-process mock transports so the network hides nothing.

The same client objects run instrumented and uninstrumented, alternating in rounds; the
figure is the difference of the medians of the calling thread's CPU time per call. Telemetry
goes to the real SDK (a BatchSpanProcessor feeding an exporter that drops spans, and an
InMemoryMetricReader).

    python bench/mistral_cohere.py [--calls 300] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import cohere
import httpx
import httpx2
from mistralai.client import Mistral
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from otel_tokens.instrumentation import CohereInstrumentor, MistralInstrumentor
from otel_tokens.pricing import Catalog

MESSAGES = [{"role": "user", "content": "Say hello in six words."}]
USAGE = {"prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500}
MISTRAL_JSON = json.dumps(
    {
        "id": "x",
        "object": "chat.completion",
        "created": 1,
        "model": "mistral-large-2512",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
        ],
        "usage": USAGE,
    }
).encode()


def _mistral_sse(chunks: int) -> bytes:
    def chunk(delta: dict[str, Any], **extra: Any) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": extra.pop("finish_reason", None)}
        data = {"id": "x", "model": "mistral-large-2512", "choices": [choice]}
        data.update(extra)
        return b"data: " + json.dumps(data).encode() + b"\n\n"

    body = b"".join(chunk({"content": "word "}) for _ in range(chunks))
    return body + chunk({"content": ""}, finish_reason="stop", usage=USAGE) + b"data: [DONE]\n\n"


BILLED = {"billed_units": {"input_tokens": 100, "output_tokens": 50}}
COHERE_JSON = json.dumps(
    {
        "id": "x",
        "finish_reason": "COMPLETE",
        "message": {"role": "assistant", "content": [{"type": "text", "text": "hi"}]},
        "usage": BILLED,
    }
).encode()


def _cohere_sse(chunks: int) -> bytes:
    def event(kind: str, **data: Any) -> bytes:
        return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()

    delta = {"message": {"content": {"text": "word "}}}
    body = event("message-start", id="x", delta={"message": {"role": "assistant"}})
    body += b"".join(event("content-delta", index=0, delta=delta) for _ in range(chunks))
    return body + event("message-end", delta={"finish_reason": "COMPLETE", "usage": BILLED})


class _Drop(SpanExporter):
    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _per_call_us(fn: Callable[[], Any], calls: int) -> float:
    start = time.thread_time()
    for _ in range(calls):
        fn()
    return (time.thread_time() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    sse20, csse20 = _mistral_sse(20), _cohere_sse(20)

    sse, plain_json = {"content-type": "text/event-stream"}, {"content-type": "application/json"}

    def mistral_handler(request: Any) -> Any:
        if json.loads(request.content).get("stream"):
            return httpx2.Response(200, content=sse20, headers=sse)
        return httpx2.Response(200, content=MISTRAL_JSON, headers=plain_json)

    def cohere_handler(request: Any) -> Any:
        if json.loads(request.content).get("stream"):
            return httpx.Response(200, content=csse20, headers=sse)
        return httpx.Response(200, content=COHERE_JSON, headers=plain_json)

    mistral = Mistral(
        api_key="x",
        server_url="http://mock",
        client=httpx2.Client(transport=httpx2.MockTransport(mistral_handler)),
    )
    co = cohere.ClientV2(
        api_key="x",
        base_url="http://mock",
        httpx_client=httpx.Client(transport=httpx.MockTransport(cohere_handler)),
    )
    model = "mistral-large-2512"
    cases: dict[str, tuple[Any, Callable[[], Any]]] = {
        "mistral chat.complete": (
            MistralInstrumentor,
            lambda: mistral.chat.complete(model=model, messages=MESSAGES),
        ),
        "mistral chat.stream (20 chunks)": (
            MistralInstrumentor,
            lambda: list(mistral.chat.stream(model=model, messages=MESSAGES)),
        ),
        "cohere chat": (CohereInstrumentor, lambda: co.chat(model="command-r", messages=MESSAGES)),
        "cohere chat_stream (20 events)": (
            CohereInstrumentor,
            lambda: list(co.chat_stream(model="command-r", messages=MESSAGES)),
        ),
    }
    tp = TracerProvider()
    tp.add_span_processor(BatchSpanProcessor(_Drop()))
    mp = MeterProvider(metric_readers=[InMemoryMetricReader()])
    catalog = Catalog()
    for name, (instrumentor, call) in cases.items():
        for _ in range(20):
            call()  # warm up (imports, caches, the catalog)
        plain, metered = [], []
        for i in range(args.rounds):
            for on in (i % 2 == 0, i % 2 == 1):
                inst = instrumentor()
                if on:
                    inst.instrument(tracer_provider=tp, meter_provider=mp, catalog=catalog)
                    call()
                (metered if on else plain).append(_per_call_us(call, args.calls))
                if on:
                    inst.uninstrument()
        base = statistics.median(plain)
        added = statistics.median(metered) - base
        print(f"{name:34s} uninstrumented {base:8.1f} µs/call   added {added:7.1f} µs/call")


if __name__ == "__main__":
    main()
