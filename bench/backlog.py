"""Calls made back to back, with no pause: does the recording thread keep up?

`overhead.py` times calls in batches and lets the recording thread catch up between them, as
an application whose calls wait on the network does. This script makes ``--calls`` calls in
a row against the in-process transport, with nothing flushed, in rounds that alternate
with and without otel-tokens, and reports the calling thread's CPU per call (medians over
the rounds), the most calls waiting to be recorded, and the share of recording jobs the
calling thread ran itself. In such a loop the recording thread gets the GIL only rarely
(see ``otel_tokens._background``), so the caller records the oldest waiting call once it is
250 ms old: the backlog stays bounded, and the calling thread pays about the "all threads"
cost of `overhead.py`.

    python bench/backlog.py                     # otel-tokens, openai and anthropic
    python bench/backlog.py --calls 3000 --only ours_openai
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import overhead as oh  # the workloads are overhead.py's own


def run(subject: str, calls: int, rounds: int) -> dict[str, float]:
    import otel_tokens
    from otel_tokens._background import queue

    s, telemetry, call = oh.single_workload(subject, "call")
    times: dict[bool, list[float]] = {False: [], True: []}
    most, by_caller = 0, 0
    for round_ in range(rounds):  # on and off alternate, so that drift hits both
        for on in (False, True) if round_ % 2 == 0 else (True, False):
            with s.active(on, telemetry):
                for _ in range(20):
                    call()
                otel_tokens.flush()
                gc.collect()
                before = queue.run_by_callers
                started = time.thread_time_ns()
                for _ in range(calls):
                    call()
                    most = max(most, queue.pending)
                times[on].append((time.thread_time_ns() - started) / calls / 1000)
                by_caller += queue.run_by_callers - before
                otel_tokens.flush()
    return {
        "off_us": statistics.median(times[False]),
        "on_us": statistics.median(times[True]),
        "most_waiting": most,
        "run_by_caller": by_caller / (calls * rounds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=("ours_openai", "ours_anthropic"))
    parser.add_argument("--calls", type=int, default=1000, help="calls in a row, per round")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument(
        "--max-delay", type=float, help="seconds before callers help (the queue's default: 0.25)"
    )
    args = parser.parse_args()
    oh._offline_tiktoken()
    if args.max_delay is not None:
        from otel_tokens._background import queue

        queue.max_delay = args.max_delay
    print(
        f"{'subject':16s} {'uninstr µs':>11s} {'instr µs':>9s} {'added':>8s} "
        f"{'most waiting':>13s} {'run by caller':>14s}"
    )
    for subject in args.only or ["ours_openai", "ours_anthropic"]:
        r = run(subject, args.calls, args.rounds)
        print(
            f"{subject:16s} {r['off_us']:>11.1f} {r['on_us']:>9.1f} "
            f"{r['on_us'] - r['off_us']:>+8.1f} {r['most_waiting']:>13.0f} "
            f"{r['run_by_caller']:>14.0%}"
        )


if __name__ == "__main__":
    main()
