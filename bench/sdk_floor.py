"""Instructions of the OpenTelemetry SDK work one metered openai call asks for, alone.

The calls a metered call makes into the SDK, with the attribute values of overhead.py's
canned chat completion, and nothing else: no client, no otel-tokens. Each mode runs in a
fresh process under ``valgrind --tool=callgrind`` (instructions.py's way of counting), n and
3n times; per iteration: ``[(mode, 3n) - (mode, n)] - [(off, 3n) - (off, n)]`` over 2n.

- ``span``: our span (5 request attributes at start, made current and not current again,
  23 response, usage and billing attributes at the end, ended; batch span processor);
- ``span_bare``: a span with no attributes, started and ended;
- ``points``: our three histogram points (duration, input and output tokens);
- ``one_point``: the duration point alone;
- ``ours``: ``span`` and ``points``;
- ``openai_v2``: what opentelemetry-instrumentation-openai-v2 asks of the SDK for the same
  call (its span with 10 attributes, its three points with 6 and 7 attributes).

    python bench/sdk_floor.py              # all modes, n = 100 (a few minutes)
    python bench/sdk_floor.py --n 50 ours openai_v2

See docs/performance.md for what the figures say about the per-call target.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import overhead as oh  # the SDK set-up is overhead.py's own

_NO_ASLR = ("setarch", os.uname().machine, "-R") if shutil.which("setarch") else ()
_TOTALS = re.compile(r"^totals:\s+(\d+)", re.M)

MODEL = "o4-mini-2025-04-16"
# Our span and points, as a metered call of overhead.py's chat completion records them.
START = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": MODEL,
    "server.address": "api.openai.com",
    "gen_ai.request.max_tokens": 512,
}
END = {
    "gen_ai.response.model": MODEL,
    "gen_ai.response.id": "chatcmpl-bench0001",
    "gen_ai.response.finish_reasons": ["stop"],
    "gen_ai.usage.input_tokens": 1240,
    "gen_ai.usage.output_tokens": 428,
    "gen_ai.usage.cache_read.input_tokens": 1024,
    "gen_ai.usage.cache_write.input_tokens": 0,
    "gen_ai.usage.reasoning.output_tokens": 128,
    "gen_ai.billing.usage_source": "provider",
    "gen_ai.usage.cache_creation.input_tokens": 0,
    "gen_ai.billing.usage.input": 216,
    "gen_ai.billing.usage.cache_read": 1024,
    "gen_ai.billing.usage.output": 300,
    "gen_ai.billing.usage.reasoning": 128,
    "gen_ai.billing.pricing_status": "priced",
    "gen_ai.billing.processing": "standard",
    "gen_ai.billing.context_tier": "base",
    "gen_ai.billing.catalog_version": "genai-prices@0.2.5",
    "gen_ai.billing.price_id": "genai-prices:openai/o4-mini",
    "gen_ai.usage.cost.amount": 0.0024024,
    "gen_ai.usage.cost.currency": "USD",
    "gen_ai.usage.cost.source": "local",
    "gen_ai.billing.cost.decimal": "0.0024024",
}
POINT = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": MODEL,
    "server.address": "api.openai.com",
    "gen_ai.response.model": MODEL,
}
# openai-v2's, for the same call.
V2_START = {
    "gen_ai.operation.name": "chat",
    "gen_ai.request.model": MODEL,
    "gen_ai.provider.name": "openai",
}
V2_END = {
    "gen_ai.response.finish_reasons": ("stop",),
    "gen_ai.response.model": MODEL,
    "gen_ai.response.id": "chatcmpl-bench0001",
    "gen_ai.usage.input_tokens": 1240,
    "gen_ai.usage.output_tokens": 428,
    "openai.response.service_tier": "default",
    "openai.response.system_fingerprint": "fp_bench",
}
V2_POINT = {
    **V2_START,
    "gen_ai.response.model": MODEL,
    "openai.response.service_tier": "default",
    "openai.response.system_fingerprint": "fp_bench",
}
MODES = ("span", "span_bare", "points", "one_point", "ours", "openai_v2")


def _modes() -> dict[str, Callable[[], None]]:
    from opentelemetry import context, trace
    from opentelemetry.metrics import get_meter
    from opentelemetry.trace import SpanKind

    telemetry = oh.Telemetry.make("batch")
    tracer = trace.get_tracer("otel_tokens", "0", telemetry.tracer_provider)
    meter = get_meter("otel_tokens", "0", telemetry.meter_provider)
    duration = meter.create_histogram("gen_ai.client.operation.duration", unit="s")
    tokens = meter.create_histogram("gen_ai.client.token.usage", unit="{token}")
    parent = context.get_current()

    def span(start: dict[str, object], end: dict[str, object]) -> None:
        s = tracer.start_span(
            f"chat {MODEL}",
            context=parent,
            kind=SpanKind.CLIENT,
            attributes=start,  # type: ignore[arg-type]
            start_time=time.time_ns(),
        )
        token = context.attach(trace.set_span_in_context(s, parent))
        context.detach(token)
        s.set_attributes(end)  # type: ignore[arg-type]
        s.end(end_time=time.time_ns())

    def span_bare() -> None:
        s = tracer.start_span(f"chat {MODEL}", context=parent, kind=SpanKind.CLIENT)
        s.end()

    def points(attrs: dict[str, object]) -> None:
        duration.record(1.5, attrs, parent)  # type: ignore[arg-type]
        tokens.record(1240, {**attrs, "gen_ai.token.type": "input"}, parent)  # type: ignore[dict-item]
        tokens.record(428, {**attrs, "gen_ai.token.type": "output"}, parent)  # type: ignore[dict-item]

    def ours() -> None:
        span(START, END)
        points(POINT)

    def openai_v2() -> None:
        span(V2_START, V2_END)
        points(V2_POINT)

    return {
        "off": lambda: None,
        "span": lambda: span(START, END),
        "span_bare": span_bare,
        "points": lambda: points(POINT),
        "one_point": lambda: duration.record(1.5, POINT, parent),  # type: ignore[arg-type]
        "ours": ours,
        "openai_v2": openai_v2,
    }


def _worker(mode: str, n: int) -> None:
    fn = _modes()[mode]
    for _ in range(20):
        fn()
    gc.collect()
    gc.freeze()
    for _ in range(n):
        fn()


def _count(mode: str, n: int) -> tuple[int, int]:
    """(main thread, all threads) instructions of one worker run."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                *_NO_ASLR,
                "valgrind",
                "--tool=callgrind",
                "--separate-threads=yes",
                f"--callgrind-out-file={tmp}/out",
                sys.executable,
                __file__,
                "--worker",
                mode,
                str(n),
            ],
            capture_output=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
        threads = {}
        for path in Path(tmp).glob("out-*"):
            found = _TOTALS.search(path.read_text(errors="replace"))
            if found:
                threads[path.name] = int(found.group(1))
    return threads["out-01"], sum(threads.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("modes", nargs="*", help=f"of {', '.join(MODES)} (default: all)")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker[0], int(args.worker[1]))
        return
    modes, n = args.modes or list(MODES), args.n
    unknown = set(modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes: {', '.join(sorted(unknown))}")
    runs = [(m, k) for m in ("off", *modes) for k in (n, 3 * n)]
    with ThreadPoolExecutor(args.jobs) as pool:
        counts = dict(zip(runs, pool.map(lambda r: _count(*r), runs), strict=True))

    def per(mode: str, part: int) -> float:
        on = counts[(mode, 3 * n)][part] - counts[(mode, n)][part]
        off = counts[("off", 3 * n)][part] - counts[("off", n)][part]
        return (on - off) / (2 * n)

    print(f"SDK instructions per call (valgrind, n = {n})")
    print(f"{'mode':12s} {'your thread':>12s} {'all threads':>12s}")
    for m in modes:
        print(f"{m:12s} {per(m, 0):>12,.0f} {per(m, 1):>12,.0f}")


if __name__ == "__main__":
    main()
