"""Calls back to back, with nothing left untimed: wall time, CPU of all threads and the calling
thread's CPU added per call and per stream chunk, and memory over 10,000 calls.

`overhead.py` times each call alone and leaves work outside its clocks (the calling thread's
clock misses other threads; its "all threads" figure flushes between batches). Here each
subject, in a fresh process (``--python``: of another virtualenv), makes ``--calls`` calls
back to back through overhead.py's in-process transport, in rounds that alternate
instrumented and uninstrumented batches on the same clients. A batch is timed as a whole,
three clocks at once, from its first call to the end of a ``force_flush()`` of the tracer and
meter providers (so work queued on other threads by the batch is inside):

- wall: ``perf_counter``, what a loop of calls takes;
- all threads: ``process_time``, the CPU the process spends (any thread's work costs every
  thread under the GIL);
- your thread: ``thread_time``, the calling thread's CPU alone.

Added per call: (instrumented total - uninstrumented total) / calls. Per chunk: the same for
streams of two lengths, and the slope between them. Memory: VmRSS after ``gc.collect()``
after 1,000 and after 10,000 calls (uninstrumented, then instrumented). See bench/README.md.

    python bench/loop.py --quick                 # < 2 minutes
    python bench/loop.py                         # 2,000 calls per mode and subject
    python bench/loop.py --python /path/venv/bin/python --json out.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import overhead as oh  # the transports, canned bodies, workloads and subjects are its own
from _report import write_json

TARGET_CALL_RATIO = 0.5  # per non-streamed call: at most half the best peer's added CPU
TARGET_CHUNK_US = 1.0  # per stream chunk
FLAT_MEMORY_KIB = 1024  # "flat": grows by at most this much more than uninstrumented
INLINE = "OTEL_TOKENS_RECORDING"  # the old core's recording mode (ignored by the new one)


@dataclass(frozen=True)
class Entry:
    """A subject of this bench: an overhead.py subject, and the environment of its process."""

    subject: oh.Subject
    label: str
    env: tuple[tuple[str, str], ...] = ()


_OPENINFERENCE_DIST = "openinference-instrumentation-openai"
_OPENINFERENCE = oh.Subject(
    "openinference_openai",
    "OpenInference openai",
    "openai",
    "openinference.instrumentation.openai",
    "OpenAIInstrumentor",
    peer=True,
)
ENTRIES = {
    "ours_openai": Entry(oh.SUBJECTS["ours_openai"], "otel-tokens"),
    "ours_openai_inline": Entry(
        oh.SUBJECTS["ours_openai"], f"otel-tokens ({INLINE}=inline)", ((INLINE, "inline"),)
    ),
    "ours_anthropic": Entry(oh.SUBJECTS["ours_anthropic"], "otel-tokens"),
    "openai_v2": Entry(oh.SUBJECTS["openai_v2"], "openai-v2 (OpenTelemetry)"),
    "openllmetry_openai": Entry(oh.SUBJECTS["openllmetry_openai"], "OpenLLMetry openai"),
    "openllmetry_anthropic": Entry(oh.SUBJECTS["openllmetry_anthropic"], "OpenLLMetry anthropic"),
    "openinference_openai": Entry(_OPENINFERENCE, "OpenInference openai"),
    "ours_gemini": Entry(oh.SUBJECTS["ours_gemini"], "otel-tokens"),
    "ours_bedrock": Entry(oh.SUBJECTS["ours_bedrock"], "otel-tokens"),
    "otel_botocore": Entry(oh.SUBJECTS["otel_botocore"], "botocore (OpenTelemetry)"),
    "otel_google_genai": Entry(oh.SUBJECTS["otel_google_genai"], "google-genai (OpenTelemetry)"),
    "openinference_google_genai": Entry(
        oh.SUBJECTS["openinference_google_genai"], "google-genai (OpenInference)"
    ),
    "openllmetry_google_genai": Entry(
        oh.SUBJECTS["openllmetry_google_genai"], "google-genai (OpenLLMetry)"
    ),
}
CLOCKS = ("wall", "all_threads", "your_thread")


@dataclass(frozen=True)
class Plan:
    rounds: int
    calls: int  # non-streamed calls per mode, over all rounds
    short_streams: int  # per mode; anthropic's long streams are 3x (overhead.py's choice)
    long_streams: int
    short: int  # content chunks
    long: int
    warmup: int
    memory: tuple[int, int]  # RSS read after this many calls

    @classmethod
    def of(cls, args: argparse.Namespace) -> Plan:
        q = args.quick
        return cls(
            rounds=args.rounds or (3 if q else 10),
            calls=args.calls or (120 if q else 2_000),
            short_streams=24 if q else 300,
            long_streams=3 if q else 60,
            short=args.short,
            long=args.long,
            warmup=2 if q else 20,
            # --quick: a smoke test of the memory path, not the 10,000-call figure
            memory=(50, 200) if q else (1_000, 10_000),
        )

    def overhead_plan(self) -> oh.Plan:
        """overhead.py's plan whose per-round counts make one batch of this one's."""
        return oh.Plan(
            rounds=self.rounds,
            warmup=self.warmup,
            short=self.short,
            long=self.long,
            calls=max(1, self.calls // self.rounds),
            short_calls=max(1, self.short_streams // self.rounds),
            long_calls=max(1, self.long_streams // self.rounds),
            clock="wall",
            span_processor="batch",
        )


# --- the worker: one subject in this process ----------------------------------------------
def _rss_kib() -> int:
    gc.collect()
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def _timed(w: oh.Workload, telemetry: oh.Telemetry) -> tuple[int, int, int]:
    """ns on each clock for ``w.per_round`` calls and the providers' flush after them."""
    wall, cpu, mine = time.perf_counter_ns(), time.process_time_ns(), time.thread_time_ns()
    for _ in range(w.per_round):
        w.call()
    telemetry.tracer_provider.force_flush()
    telemetry.meter_provider.force_flush()
    return (
        time.perf_counter_ns() - wall,
        time.process_time_ns() - cpu,
        time.thread_time_ns() - mine,
    )


def _memory(
    subject: oh.Subject, telemetry: oh.Telemetry, w: oh.Workload, at: tuple[int, int]
) -> dict[str, list[int]]:
    """VmRSS (KiB) after ``at[0]`` and ``at[1]`` calls, uninstrumented then instrumented."""
    out = {}
    for on in (False, True):
        with subject.active(on, telemetry):
            rss, done = [], 0
            for n in at:
                for _ in range(n - done):
                    w.call()
                done = n
                telemetry.tracer_provider.force_flush()
                telemetry.meter_provider.force_flush()
                rss.append(_rss_kib())
        out["on" if on else "off"] = rss
    return out


def run_worker(name: str, plan: Plan) -> dict[str, Any]:
    entry = ENTRIES[name]
    subject = entry.subject
    started = time.perf_counter()
    result: dict[str, Any] = {"subject": name, "label": entry.label, "skipped": None}
    reason = subject.load()
    if (
        reason is None
        and entry.env
        and not hasattr(sys.modules.get("otel_tokens.instrumentation"), "ENV_RECORDING")
    ):
        reason = f"this otel-tokens has no {INLINE}"
    if reason is not None:
        result["skipped"] = reason
        return result
    telemetry = oh.Telemetry.make("batch")
    op = plan.overhead_plan()
    work = oh.workloads_of(subject, op, telemetry.tracer_provider)
    for w in work:  # the client's own first-call costs
        w.call()
    result["checks"] = oh.check(subject, telemetry, work)
    oh.warm_up(subject, telemetry, work, plan.warmup)
    batches: dict[str, dict[str, list[list[int]]]] = {w.key: {"on": [], "off": []} for w in work}
    try:
        for r in range(plan.rounds):
            for w in work:
                for on in (True, False) if r % 2 == 0 else (False, True):
                    with subject.active(on, telemetry):
                        w.call()  # the first call after a switch is not timed
                        telemetry.tracer_provider.force_flush()
                        batches[w.key]["on" if on else "off"].append(list(_timed(w, telemetry)))
    finally:
        gc.unfreeze()
    result["batches"] = batches
    result["per_batch"] = {w.key: w.per_round for w in work}
    result["chunks"] = {w.key: w.chunks for w in work}
    result["memory"] = {
        w.key: _memory(subject, telemetry, w, plan.memory) for w in work if not w.chunks
    }
    result["leftover_wrappers"] = subject.leftovers
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    return result


# --- figures ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    what: str
    who: str
    subject: str
    kind: str  # call | chunk
    uninstrumented_us: dict[str, float]  # by clock: per call or per chunk, not instrumented
    added_us: dict[str, float]  # by clock: totals over the run, instrumented - not, per unit
    rounds_all_threads_us: tuple[float, float, float]  # q1, median, q3 of the rounds' added
    valid: bool = True
    ratio_to_best_peer: dict[str, float] | None = None  # ours only, by clock
    best_peer: dict[str, str] | None = None


def _per_call(res: dict[str, Any], key: str, on: str, clock: int) -> float:
    """µs per call on ``clock`` over all of a workload's batches in one mode."""
    batches: list[list[int]] = res["batches"][key][on]
    calls: int = len(batches) * res["per_batch"][key]
    return sum(b[clock] for b in batches) / calls / 1000


def _rounds(res: dict[str, Any], key: str, clock: int) -> list[float]:
    n = res["per_batch"][key]
    on, off = res["batches"][key]["on"], res["batches"][key]["off"]
    return [(a[clock] - b[clock]) / n / 1000 for a, b in zip(on, off, strict=True)]


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return (values[0],) * 3 if values else (float("nan"),) * 3
    q = statistics.quantiles(values, n=4)
    return q[0], statistics.median(values), q[2]


def rows_of(res: dict[str, Any]) -> list[Row]:
    subject = ENTRIES[res["subject"]].subject
    bad = {k for k, c in res["checks"]["workloads"].items() if not c["records_usage"]}
    api = oh.API[subject.provider]
    tags = ["_sdk_on", "_sdk_off"] if subject.provider == "anthropic" else [""]
    out = []
    for tag in tags:
        label = {"": "", "_sdk_on": " (SDK span on)", "_sdk_off": " (SDK span off)"}[tag]
        call, short, long = (f"{k}{tag}" for k in ("call", "stream_short", "stream_long"))
        dn = res["chunks"][long] - res["chunks"][short]

        def added(key: str, clock: int) -> float:
            return _per_call(res, key, "on", clock) - _per_call(res, key, "off", clock)

        out.append(
            Row(
                f"{subject.provider} {api} non-stream, per call{label}",
                res["label"],
                res["subject"],
                "call",
                {c: _per_call(res, call, "off", i) for i, c in enumerate(CLOCKS)},
                {c: added(call, i) for i, c in enumerate(CLOCKS)},
                _quartiles(_rounds(res, call, 1)),
                valid=call not in bad,
            )
        )
        slopes = [
            (a - b) / dn for a, b in zip(_rounds(res, long, 1), _rounds(res, short, 1), strict=True)
        ]
        out.append(
            Row(
                f"{subject.provider} {api} stream, per chunk{label}",
                res["label"],
                res["subject"],
                "chunk",
                {
                    c: (_per_call(res, long, "off", i) - _per_call(res, short, "off", i)) / dn
                    for i, c in enumerate(CLOCKS)
                },
                {c: (added(long, i) - added(short, i)) / dn for i, c in enumerate(CLOCKS)},
                _quartiles(slopes),
                valid=not {short, long} & bad,
            )
        )
    return out


def with_ratios(rows: list[Row]) -> list[Row]:
    """Ours against the best (lowest added) valid peer of the same row, clock by clock."""
    out = []
    for r in rows:
        peers = [p for p in rows if p.what == r.what and ENTRIES[p.subject].subject.peer]
        if ENTRIES[r.subject].subject.peer or not peers:
            out.append(r)
            continue
        ratio, best = {}, {}
        for c in CLOCKS:
            p = min((p for p in peers if p.valid), key=lambda p: p.added_us[c], default=None)
            if p is not None and p.added_us[c] > 0:
                ratio[c], best[c] = r.added_us[c] / p.added_us[c], p.who
        out.append(replace(r, ratio_to_best_peer=ratio, best_peer=best))
    return out


def memory_rows(results: list[dict[str, Any]], plan: Plan) -> list[dict[str, Any]]:
    calls = plan.memory[1] - plan.memory[0]
    out = []
    for res in results:
        for key, m in (res.get("memory") or {}).items():
            on, off = m["on"], m["off"]
            out.append(
                {
                    "subject": res["subject"],
                    "who": res["label"],
                    "workload": key,
                    "rss_kib_instrumented": on,
                    "rss_kib_uninstrumented": off,
                    "growth_kib_instrumented": on[1] - on[0],
                    "growth_kib_uninstrumented": off[1] - off[0],
                    # A leak's size per call; RSS moves by pages and arenas, so only the order
                    # of magnitude means anything (in the first runs every subject, peers too,
                    # showed 0 to ~120).
                    "added_bytes_per_call": (on[1] - on[0] - (off[1] - off[0])) * 1024 / calls,
                    "flat": on[1] - on[0] - (off[1] - off[0]) <= FLAT_MEMORY_KIB,
                }
            )
    return out


def verdicts(rows: list[Row], memory: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in rows:
        if ENTRIES[r.subject].subject.peer:
            continue
        cpu = r.added_us["all_threads"]
        if not r.valid:
            out.append(f"INVALID {r.who}, {r.what}: recorded no usage (see checks)")
        elif r.kind == "call":
            ratio = (r.ratio_to_best_peer or {}).get("all_threads")
            if ratio is None:
                out.append(f"-    {r.who}, {r.what}: {cpu:+.1f} µs all threads; no peer")
                continue
            ok = "OK  " if ratio <= TARGET_CALL_RATIO else "MISS"
            out.append(
                f"{ok} {r.who}, {r.what}: {cpu:+.1f} µs all threads = {ratio:.2f} x best peer "
                f"({(r.best_peer or {})['all_threads']}); target <= {TARGET_CALL_RATIO}"
            )
        else:
            ok = "OK  " if cpu <= TARGET_CHUNK_US else "MISS"
            out.append(
                f"{ok} {r.who}, {r.what}: {cpu:+.2f} µs all threads "
                f"({r.added_us['wall']:+.2f} wall); target <= {TARGET_CHUNK_US}"
            )
    for m in memory:
        if ENTRIES[m["subject"]].subject.peer:
            continue
        extra = m["growth_kib_instrumented"] - m["growth_kib_uninstrumented"]
        out.append(
            f"{'OK  ' if m['flat'] else 'MISS'} {m['who']}, memory, {m['workload']}: "
            f"{extra / 1024:+.2f} MiB more growth than uninstrumented; "
            f"target <= {FLAT_MEMORY_KIB / 1024:g} MiB"
        )
    return out


def format_tables(rows: list[Row], memory: list[dict[str, Any]], plan: Plan) -> str:
    def us(x: float, kind: str) -> str:
        return f"{x:+.2f}" if kind == "chunk" else f"{x:+.1f}"

    def ratio(r: Row, c: str) -> str:
        if not r.ratio_to_best_peer or c not in r.ratio_to_best_peer:
            return ""
        return f"{r.ratio_to_best_peer[c]:.2f}"

    lines = [
        "| what | instrumentation | uninstr µs: wall / CPU all threads "
        "| **CPU all threads added** | wall added "
        "| your thread CPU added | all threads by round [q1..q3] | ours / best peer: CPU "
        "all threads | wall | your thread |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        q1, q2, q3 = r.rounds_all_threads_us
        a = r.added_us
        lines.append(
            f"| {r.what} | {r.who}{'' if r.valid else ' INVALID'} | "
            f"{r.uninstrumented_us['wall']:.{2 if r.kind == 'chunk' else 0}f} / "
            f"{r.uninstrumented_us['all_threads']:.{2 if r.kind == 'chunk' else 0}f} | "
            f"**{us(a['all_threads'], r.kind)}** | {us(a['wall'], r.kind)} | "
            f"{us(a['your_thread'], r.kind)} | {us(q2, r.kind)} "
            f"[{us(q1, r.kind)}..{us(q3, r.kind)}] | {ratio(r, 'all_threads')} | "
            f"{ratio(r, 'wall')} | {ratio(r, 'your_thread')} |"
        )
    n0, n1 = plan.memory
    lines += [
        "",
        f"| memory (VmRSS) | instrumentation | after {n0:,} calls | after {n1:,} | growth "
        "| growth uninstrumented | added per call |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for m in memory:
        on, off = m["rss_kib_instrumented"], m["growth_kib_uninstrumented"]
        lines.append(
            f"| {m['workload']} | {m['who']} | {on[0] / 1024:.1f} MiB | {on[1] / 1024:.1f} MiB "
            f"| {m['growth_kib_instrumented'] / 1024:+.2f} MiB | {off / 1024:+.2f} MiB "
            f"| {m['added_bytes_per_call']:+.0f} B |"
        )
    return "\n".join(lines)


# --- running ------------------------------------------------------------------------------
def run_isolated(python: str, name: str, plan: Plan) -> dict[str, Any]:
    """The worker in a fresh interpreter of ``python``, with the entry's environment."""
    env = {**os.environ, **dict(ENTRIES[name].env)}
    proc = subprocess.run(
        [python, __file__, "--worker", name, "--plan", json.dumps(asdict(plan))],
        stdout=subprocess.PIPE,
        env=env,
        check=False,
        text=True,
    )
    if proc.returncode != 0:
        return {"subject": name, "label": ENTRIES[name].label, "skipped": "worker failed"}
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def _versions(python: str) -> dict[str, str]:
    """The measured interpreter's versions of the packages (overhead.py's list)."""
    code = (
        "import contextlib, json, sys\n"
        "from importlib.metadata import PackageNotFoundError, version\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "import overhead\n"
        "v = overhead._versions()\n"
        "with contextlib.suppress(PackageNotFoundError):\n"
        f"    v[{_OPENINFERENCE_DIST!r}] = version({_OPENINFERENCE_DIST!r})\n"
        "print(json.dumps(v))\n"
    )
    proc = subprocess.run(
        [python, "-c", code, str(Path(__file__).resolve().parent)],
        capture_output=True,
        text=True,
        check=False,
    )
    versions: dict[str, str] = json.loads(proc.stdout) if proc.returncode == 0 else {}
    return versions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls (< 2 minutes)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter to measure")
    parser.add_argument("--calls", type=int, help="non-streamed calls per mode (2,000)")
    parser.add_argument("--rounds", type=int, help="rounds of on/off batches (10)")
    parser.add_argument("--short", type=int, default=10, help="content chunks, short stream")
    parser.add_argument("--long", type=int, default=200, help="content chunks, long stream")
    parser.add_argument("--only", nargs="+", choices=tuple(ENTRIES), help="subjects to run")
    parser.add_argument("--json", metavar="PATH", help="also write JSON to PATH ('-': stdout)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--plan", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        warnings.simplefilter("ignore", DeprecationWarning)
        raw = json.loads(args.plan)
        plan = Plan(**{**raw, "memory": tuple(raw["memory"])})
        print(json.dumps(run_worker(args.worker, plan)))
        return 0

    plan = Plan.of(args)
    log = print if args.json != "-" else oh._log
    load = [round(x, 2) for x in os.getloadavg()]
    started = time.perf_counter()
    results = []
    # --quick leaves out the old core's inline recording: a variant, not a subject.
    default = [n for n in ENTRIES if not (args.quick and ENTRIES[n].env)]
    for name in args.only or default:
        res = run_isolated(args.python, name, plan)
        status = f"skipped: {res['skipped']}" if res["skipped"] else f"{res['elapsed_s']} s"
        oh._log(f"{name}: {status}")
        results.append(res)
    measured = [r for r in results if not r["skipped"]]
    rows = with_ratios([row for res in measured for row in rows_of(res)])
    memory = memory_rows(measured, plan)
    report = {
        "python": args.python,
        "versions": _versions(args.python),
        "plan": asdict(plan),
        "load_average": {"start": load, "end": [round(x, 2) for x in os.getloadavg()]},
        "elapsed_s": round(time.perf_counter() - started, 1),
        "rows": [asdict(r) for r in rows],
        "memory": memory,
        "verdicts": verdicts(rows, memory),
        "skipped": {r["subject"]: r["skipped"] for r in results if r["skipped"]},
        "leftover_wrappers": {r["subject"]: r["leftover_wrappers"] for r in measured},
        "checks": {r["subject"]: r["checks"] for r in measured},
        # Every batch's ns on each clock (wall, all threads, your thread), to figure again.
        "raw": {
            r["subject"]: {k: r[k] for k in ("batches", "per_batch", "chunks", "elapsed_s")}
            for r in measured
        },
    }
    log(format_tables(rows, memory, plan))
    log("")
    for v in report["verdicts"]:
        log(v)
    for name, reason in report["skipped"].items():
        log(f"not measured: {name}: {reason}")
    for name, leftovers in report["leftover_wrappers"].items():
        if leftovers:  # overhead.py's Guard put the originals back after each round
            log(f"note: {name}: uninstrument() leaves {', '.join(leftovers)} wrapped")
    log(
        f"{args.python}: {plan.calls:,} calls, {plan.short_streams} {plan.short}-chunk and "
        f"{plan.long_streams} {plan.long}-chunk streams per mode in {plan.rounds} rounds; "
        f"load average {load[0]} at start, {report['load_average']['end'][0]} at end; "
        f"{report['elapsed_s']:.0f} s"
    )
    write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
