"""Instructions added per call and per chunk, counted by valgrind: figures a busy machine
cannot blur.

`overhead.py` times calls; on a shared machine its figures move from run to run by more than
a microsecond per chunk and tens of microseconds per call. This script runs the same
workloads (overhead.py's canned responses, mock transport and SDK setup) under
``valgrind --tool=callgrind --separate-threads=yes`` and counts the instructions executed,
by the main thread (the application's) and by all threads, with and without the
instrumentation, each in a fresh process:

- per call: ``[(on, 3n calls) - (on, n calls)] - [(off, 3n) - (off, n)]``, over ``2n``:
  process start-up and one-time costs cancel out. "your thread" is the main thread's count;
  "all threads" adds the SDK's export thread;
- per chunk: ``[(on, long) - (on, short)] - [(off, long) - (off, short)]`` of the main
  thread, over the chunks the long streams have more: what a stream costs once cancels out.

Instructions are not time (a cache miss costs far more than an add), but identical runs agree
to well under 1%. Each run takes one to three minutes; two run at once (``--jobs``).

    python bench/instructions.py                      # otel-tokens, openai and anthropic
    python bench/instructions.py --only ours_openai --no-include-usage
    /tmp/peers-venv/bin/python bench/instructions.py --only openai_v2   # a peer
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import overhead as oh  # noqa: E402  (the workloads are overhead.py's own)

# Without address-space randomisation, where setarch can turn it off: where interned names
# land decides which of them collide in CPython's type-attribute cache, and the misses that
# follow moved the main thread's count of identical runs by ~5M instructions (~0.8M with it).
_NO_ASLR = ("setarch", os.uname().machine, "-R") if shutil.which("setarch") else ()
_TOTALS = re.compile(r"^totals:\s+(\d+)", re.M)
# The collector's own entry point, whose inclusive count is the garbage collection's.
_GC = re.compile(r"^\s*([\d,]+)\s.*gcmodule\.c:gc_collect_main\b", re.M)
_SHORT, _LONG = 10, 200  # content chunks of the two streams


def _worker(subject: str, key: str, count: int, on: bool, include_usage: bool) -> None:
    s, telemetry, call = oh.single_workload(
        subject, key, short=_SHORT, long=_LONG, include_usage=include_usage
    )
    with s.active(on, telemetry):
        for _ in range(3):  # the first calls load catalogs, encodings and caches
            call()
        # What start-up left (modules, catalogs) out of the collector's sight: a full
        # collection walking it would land in one run and not another, tens of millions of
        # instructions apart. The objects the calls make are still collected as usual.
        gc.collect()
        gc.freeze()
        for _ in range(count):
            call()


def _count(python: str, *args: str) -> tuple[int, int, int]:
    """Instructions of one worker run: its main thread's, all its threads', and the main
    thread's garbage collections'."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            [
                *_NO_ASLR,
                "valgrind",
                "--tool=callgrind",
                "--separate-threads=yes",  # a file per thread; "-01" is the main thread
                f"--callgrind-out-file={tmp}/out",
                python,
                __file__,
                "--worker",
                *args,
            ],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        threads: dict[str, int] = {}
        for path in Path(tmp).glob("out-*"):
            found = _TOTALS.search(path.read_text(errors="replace"))
            if found:
                threads[path.name] = int(found.group(1))
        if done.returncode != 0 or "out-01" not in threads:
            raise RuntimeError(f"{args}: valgrind run failed:\n{done.stderr[-2000:]}")
        annotated = subprocess.run(
            ["callgrind_annotate", "--inclusive=yes", "--threshold=100", f"{tmp}/out-01"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        gc_found = _GC.search(annotated)
        collected = int(gc_found.group(1).replace(",", "")) if gc_found else 0
    return threads["out-01"], sum(threads.values()), collected


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=tuple(oh.SUBJECTS))
    parser.add_argument("--calls", type=int, default=30, help="n, non-streamed calls")
    parser.add_argument("--streams", type=int, default=20, help="streams of each length")
    parser.add_argument("--no-include-usage", action="store_true", help="as in overhead.py")
    parser.add_argument("--jobs", type=int, default=2, help="valgrind runs at once")
    parser.add_argument(
        "--what", choices=("call", "chunk", "both"), default="both", help="which figures"
    )
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        subject, key, count, on = args.worker
        _worker(subject, key, int(count), on == "on", not args.no_include_usage)
        return

    subjects = args.only or ["ours_openai", "ours_anthropic"]
    n, m = args.calls, args.streams
    runs = sorted(
        (s, key, count, on)
        for s in subjects
        for on in ("on", "off")
        for key, count in (("call", n), ("call", 3 * n), ("stream_short", m), ("stream_long", m))
        if args.what == "both" or (args.what == "call") == (key == "call")
    )
    flag = ["--no-include-usage"] if args.no_include_usage else []
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {
            run: pool.submit(_count, sys.executable, run[0], run[1], str(run[2]), run[3], *flag)
            for run in runs
        }
        counts = {run: f.result() for run, f in futures.items()}
    for run, (main_thread, all_threads, collected) in counts.items():
        print(
            f"  {' '.join(map(str, run)):40s} {main_thread:>16,} {all_threads:>16,} "
            f"{collected:>14,}",
            file=sys.stderr,
        )

    def added(s: str, more: tuple[str, int], fewer: tuple[str, int], part: str) -> int:
        """[(on, more) - (on, fewer)] - [(off, more) - (off, fewer)], ``more`` and ``fewer``
        being (workload, count) runs, of ``part``: "main" (the main thread), "all" (all
        threads), or "main-gc" (the main thread without its garbage collections)."""

        def value(run: tuple[int, int, int]) -> int:
            main_thread, all_threads, collected = run
            return {"main": main_thread, "all": all_threads, "main-gc": main_thread - collected}[
                part
            ]

        return sum(
            sign * sign_on * value(counts[(s, key, count, on)])
            for on, sign_on in (("on", 1), ("off", -1))
            for (key, count), sign in ((more, 1), (fewer, -1))
        )

    usage = "with" if not args.no_include_usage else "without"
    print(f"instructions added (valgrind); openai streams {usage} include_usage")
    print(
        f"{'':22s} {'per call':>36s} {'':>12s} {'per chunk':>22s}\n"
        f"{'subject':22s} {'your thread':>12s} {'(GC excluded)':>14s} {'all threads':>12s} "
        f"{'your thread':>12s} {'(GC excluded)':>14s}"
    )
    for s in subjects:
        figures = ["-"] * 5
        if args.what != "chunk":
            calls = (("call", 3 * n), ("call", n))
            figures[:3] = [
                f"{added(s, *calls, p) / (2 * n):,.0f}" for p in ("main", "main-gc", "all")
            ]
        if args.what != "call":
            streams = (("stream_long", m), ("stream_short", m))
            chunks = m * (_LONG - _SHORT)
            figures[3:] = [f"{added(s, *streams, p) / chunks:,.0f}" for p in ("main", "main-gc")]
        print(
            f"{s:22s} {figures[0]:>12s} {figures[1]:>14s} {figures[2]:>12s} "
            f"{figures[3]:>12s} {figures[4]:>14s}"
        )


if __name__ == "__main__":
    main()
