"""Start-up time and peak memory of ``opentelemetry-instrument``, bare and with each
instrumentation, for ``python -c pass`` and for an app that imports ``openai``.

Each command runs ``--runs`` times in a fresh process (after one untimed run, so that every
``.pyc`` exists), the commands interleaved run by run so that drift hits them all alike.
Figures: the median wall time from spawn to exit, the median CPU time (user + system; on a
busy machine it moves less than wall time), and the median peak RSS of the process
(``ru_maxrss`` from ``wait4``: opentelemetry-instrument execs the app in the same process, so
both stages are in it). Exporters are off (``OTEL_{TRACES,METRICS,LOGS}_EXPORTER=none``), and
every other ``OTEL_*`` variable of the caller's environment is dropped.

An instrumentation is switched on by leaving its entry points out of
``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` and listing every other instrumentor entry point
installed in that virtualenv ("bare": all of them, so none is imported). Entry points are
disabled by name, and the peers for openai all use the name ``openai``: where two
installed distributions share a name, neither can be measured alone there. Measure it in a
virtualenv of its own (give ``--python`` once per virtualenv). See bench/README.md.

    python bench/startup.py --quick                            # < 2 minutes
    python bench/startup.py --python /path/venv/bin/python --python /path/peer-venv/bin/python
    python bench/startup.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from _report import write_json

TARGET_S = 0.15  # start-up with ours at most this much over bare opentelemetry-instrument
APPS = {"pass": "pass", "import openai": "import openai"}
LABELS = {  # distribution -> how the tables name it
    "otel-tokens": "otel-tokens",
    "opentelemetry-instrumentation-openai-v2": "openai-v2 (OpenTelemetry)",
    "openinference-instrumentation-openai": "OpenInference openai",
    "opentelemetry-instrumentation-openai": "OpenLLMetry openai",
    "opentelemetry-instrumentation-anthropic": "OpenLLMetry anthropic",
}
_LIST_ENTRY_POINTS = """
import json
from importlib.metadata import entry_points
print(json.dumps([(e.name, e.dist.name if e.dist else "?")
                  for e in entry_points(group="opentelemetry_instrumentor")]))
"""


@dataclass(frozen=True)
class Command:
    venv: str
    who: str  # "python" (no opentelemetry-instrument), "bare", or a LABELS value
    app: str
    argv: tuple[str, ...]
    disabled: str | None  # OTEL_PYTHON_DISABLED_INSTRUMENTATIONS; None: not instrumented


@dataclass(frozen=True)
class Row:
    venv: str
    who: str
    app: str
    wall_s: float  # median
    wall_range_s: tuple[float, float]
    cpu_s: float  # median user + system CPU of the process: what load on the machine moves less
    max_rss_mib: float  # median
    added_s: float | None  # over bare opentelemetry-instrument, same venv and app
    added_cpu_s: float | None
    added_rss_mib: float | None


def _venv(python: str) -> str:
    return str(Path(python).parent.parent)


def commands(python: str, plain: bool) -> tuple[list[Command], list[str]]:
    """What to run with ``python``'s virtualenv, and what cannot be measured there (why).

    ``plain``: also the apps without opentelemetry-instrument, for reference."""
    proc = subprocess.run(
        [python, "-c", _LIST_ENTRY_POINTS], capture_output=True, text=True, check=True
    )
    found = [(str(name), str(dist)) for name, dist in json.loads(proc.stdout)]
    names = sorted({name for name, _ in found})
    venv = _venv(python)
    instrument = str(Path(python).parent / "opentelemetry-instrument")
    out, notes = [], []
    for app, code in APPS.items():
        if plain:
            out.append(Command(venv, "python", app, (python, "-c", code), None))
        out.append(Command(venv, "bare", app, (instrument, python, "-c", code), ",".join(names)))
    for dist, label in LABELS.items():
        mine = {name for name, d in found if d == dist}
        if not mine:
            continue
        shared = sorted({d for name, d in found if name in mine and d != dist})
        if shared:
            notes.append(
                f"{venv}: {label} not measured: its entry point name {sorted(mine)} is also "
                f"{', '.join(shared)}'s; measure it in a virtualenv of its own"
            )
            continue
        disabled = ",".join(n for n in names if n not in mine)
        for app, code in APPS.items():
            out.append(Command(venv, label, app, (instrument, python, "-c", code), disabled))
    return out, notes


def _env(disabled: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    if disabled is not None:
        env |= {
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": disabled,
        }
    return env


Sample = tuple[float, float, int]  # wall s, CPU s, peak RSS KiB


def run_once(c: Command) -> Sample:
    """Wall seconds from spawn to exit, the process's CPU seconds and its peak RSS in KiB."""
    env = _env(c.disabled)
    started = time.perf_counter()
    proc = subprocess.Popen(c.argv, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(c.argv)} exited with {proc.returncode}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def measure(cmds: list[Command], runs: int) -> dict[Command, list[Sample]]:
    for c in cmds:  # untimed: .pyc files written, the page cache warm
        run_once(c)
    out: dict[Command, list[Sample]] = {c: [] for c in cmds}
    for _ in range(runs):
        for c in cmds:
            out[c].append(run_once(c))
    return out


def rows_of(samples: dict[Command, list[Sample]]) -> list[Row]:
    med = statistics.median
    figures = {
        (c.venv, c.who, c.app): (
            med(w for w, _, _ in s),
            (min(w for w, _, _ in s), max(w for w, _, _ in s)),
            med(cpu for _, cpu, _ in s),
            med(r for _, _, r in s) / 1024,
        )
        for c, s in samples.items()
    }
    rows = []
    for (venv, who, app), (wall, span, cpu, rss) in figures.items():
        bare = figures.get((venv, "bare", app))
        if who in ("python", "bare") or bare is None:
            rows.append(Row(venv, who, app, wall, span, cpu, rss, None, None, None))
        else:
            added = (wall - bare[0], cpu - bare[2], rss - bare[3])
            rows.append(Row(venv, who, app, wall, span, cpu, rss, *added))
    return rows


def format_table(rows: list[Row]) -> str:
    lines = [
        "| virtualenv | instrumentation | app | wall s: median [min..max] | added over bare "
        "| CPU s | CPU added | max RSS MiB | RSS added |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        who = {"python": "none: plain python", "bare": "bare opentelemetry-instrument"}
        added = "" if r.added_s is None else f"**{r.added_s:+.3f}**"
        cpu = "" if r.added_cpu_s is None else f"{r.added_cpu_s:+.3f}"
        rss = "" if r.added_rss_mib is None else f"{r.added_rss_mib:+.1f}"
        lo, hi = r.wall_range_s
        lines.append(
            f"| {r.venv} | {who.get(r.who, r.who)} | `{r.app}` | {r.wall_s:.3f} "
            f"[{lo:.3f}..{hi:.3f}] | {added} | {r.cpu_s:.3f} | {cpu} | {r.max_rss_mib:.1f} "
            f"| {rss} |"
        )
    return "\n".join(lines)


def verdicts(rows: list[Row]) -> list[str]:
    out = []
    for r in rows:
        if r.who == "otel-tokens" and r.added_s is not None:
            ok = "OK  " if r.added_s <= TARGET_S else "MISS"
            out.append(
                f"{ok} otel-tokens, `{r.app}`: {r.added_s:+.3f} s wall ({r.added_cpu_s:+.3f} s "
                f"CPU) over bare opentelemetry-instrument ({r.venv}); target <= {TARGET_S} s"
            )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--python",
        action="append",
        help="interpreter of a virtualenv to measure; repeat for several (default: this one)",
    )
    parser.add_argument("--runs", type=int, help="timed runs of each command (10; --quick 3)")
    parser.add_argument("--quick", action="store_true", help="3 runs each (< 2 minutes)")
    parser.add_argument("--json", metavar="PATH", help="also write JSON to PATH ('-': stdout)")
    args = parser.parse_args(argv)
    runs = args.runs or (3 if args.quick else 10)
    log = print if args.json != "-" else lambda s: print(s, file=sys.stderr)
    load = [round(x, 2) for x in os.getloadavg()]
    started = time.perf_counter()
    cmds, notes = [], []
    for i, python in enumerate(args.python or [sys.executable]):
        c, n = commands(python, plain=i == 0)
        cmds += c
        notes += n
    rows = rows_of(measure(cmds, runs))
    report: dict[str, Any] = {
        "runs": runs,
        "load_average": {"start": load, "end": [round(x, 2) for x in os.getloadavg()]},
        "elapsed_s": round(time.perf_counter() - started, 1),
        "rows": [asdict(r) for r in rows],
        "verdicts": verdicts(rows),
        "not_measured": notes,
        "commands": [asdict(c) for c in cmds],
    }
    log(format_table(rows))
    log("")
    for line in report["verdicts"] + notes:
        log(line)
    log(
        f"{runs} runs each; load average {load[0]} at start, "
        f"{report['load_average']['end'][0]} at end; {report['elapsed_s']:.0f} s"
    )
    write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
