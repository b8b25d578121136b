#!/usr/bin/env python3
"""How long does the CLI take to start?

Wall time of fresh `devicelab` processes (the installed console script, as a user starts it), N of each, the
commands interleaved round by round so that a change in the machine's load falls on all of them alike:
`devicelab --help`, `devicelab runs` on an empty database and on one holding RUNS runs of 40 results each
(written through the store, as the tests write synthetic histories); `--all` adds every subcommand's --help.
Prints the median, min and max of each, and the median CPU time (user + system: what the process itself cost,
less moved by other work on the machine than wall time), then the heaviest imports of each command: self time summed per
top-level package, from PYTHONPROFILEIMPORTTIME (what `python -X importtime` prints), the median of 5 processes.
Goal (README: "Commands"): `--help` and `runs` start in 0.3 s or less.

usage: python benchmarks/startup.py [N] [--all]   (default 20)
Run it on an otherwise idle machine: on 2 vCPUs one busy neighbour moves every figure by tens of milliseconds.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import devicelab_cmd, machine

from devicelab.result import OK, Config, Result
from devicelab.store import FINISHED, RunRecord, SqliteStore

RUNS = 5
# As tests/test_cli_startup.py: the data stack, the templates, the engines, the phone library, and typer's pydantic.
HEAVY = ("numpy", "pandas", "scipy", "jinja2", "onnx", "onnxruntime", "adbutils", "pyarrow", "sklearn", "openvino",
         "ncnn", "MNN", "ai_edge_litert", "pydantic")
IMPORT_PROCESSES = 5


def write_history(path: Path, runs: int) -> None:
    """`runs` finished runs of 40 ok results (5 engines x 2 thread counts x 4 processes), 50 samples each."""
    store = SqliteStore(path)
    for i in range(runs):
        run_id = f"20261206-0{i}0000-beef"
        store.create_run(RunRecord(run_id, f"2026-12-06T0{i}:00:00Z", {"name": "synthetic"}, i, {}, "0.1.0"))
        for n, engine in enumerate(("onnxruntime", "ncnn", "mnn", "litert", "openvino")):
            for threads in (1, 2):
                for rep in range(4):
                    cfg = Config("host", engine, "", "1.0", "mobilenet_v2", "ab" * 32, 1000, "fp32", "cpu", threads,
                                 (0,) if threads == 1 else (0, 1), "big", rep)
                    samples = tuple(0.01 * (1 + n / 10) / threads * (1 + k / 1000) for k in range(50))
                    store.add_result(Result.for_config(run_id, cfg, OK, samples_s=samples,
                                                       median_s=statistics.median(samples)))
        store.set_run_status(run_id, FINISHED)


def import_profile(argv: list[str], env: dict[str, str]) -> dict[str, float]:
    """Seconds of import time per top-level package (self times summed), one process."""
    p = subprocess.run(argv, env={**env, "PYTHONPROFILEIMPORTTIME": "1"}, capture_output=True, text=True)
    per_package: dict[str, float] = {}
    for line in p.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _cumulative, name = line[len("import time:"):].split("|")
        top = name.strip().split(".")[0]
        per_package[top] = per_package.get(top, 0.0) + int(self_us) / 1e6
    return per_package


def main() -> None:
    n = int(next((a for a in sys.argv[1:] if not a.startswith("-")), "20"))
    every_help = "--all" in sys.argv[1:]
    cmd = devicelab_cmd()
    with tempfile.TemporaryDirectory() as tmp:
        empty, history = Path(tmp) / "empty.sqlite", Path(tmp) / "history.sqlite"
        SqliteStore(empty)
        write_history(history, RUNS)
        # HOME and the data folder point into tmp: nothing of the user's is read, nothing is written there.
        base = {**os.environ, "HOME": tmp, "DEVICELAB_DATA": tmp, "COLUMNS": "80"}
        cases: list[tuple[str, list[str], dict[str, str]]] = [
            ("devicelab --help", ["--help"], base),
            ("devicelab runs (empty database)", ["runs"], {**base, "DEVICELAB_DB": str(empty)}),
            (f"devicelab runs ({RUNS} runs x 40 results)", ["runs"], {**base, "DEVICELAB_DB": str(history)}),
        ]
        if every_help:
            from devicelab.cli import app
            from typer.main import get_command

            names = sorted(get_command(app).commands)  # type: ignore[attr-defined]
            cases += [(f"devicelab {name} --help", [name, "--help"], base) for name in names]
        for _, args, env in cases:  # one untimed process each: .pyc files written, the page cache warm
            subprocess.run([*cmd, *args], env=env, capture_output=True, check=True)
        times: dict[str, list[float]] = {label: [] for label, _, _ in cases}
        cpu: dict[str, list[float]] = {label: [] for label, _, _ in cases}
        for _ in range(n):
            for label, args, env in cases:
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                start = time.perf_counter()
                subprocess.run([*cmd, *args], env=env, capture_output=True, check=True)
                times[label].append(time.perf_counter() - start)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu[label].append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        load = os.getloadavg()
        print(f"machine: {machine()}; Python {sys.version.split()[0]}; load average {load[0]:.2f} {load[1]:.2f} "
              f"(1, 5 min) after the runs")
        print(f"start-up, wall time of a fresh process, {n} processes each (goal: --help and runs <= 0.3 s):")
        width = max(len(label) for label in times)
        for label, ts in times.items():
            print(f"  {label:<{width}}  median {statistics.median(ts) * 1e3:4.0f} ms   "
                  f"min {min(ts) * 1e3:4.0f}   max {max(ts) * 1e3:4.0f}   CPU {statistics.median(cpu[label]) * 1e3:4.0f} ms")
        print(f"heaviest imports (self time per top-level package, median of {IMPORT_PROCESSES} processes):")
        for label, args, env in cases[:3]:
            profiles = [import_profile([*cmd, *args], env) for _ in range(IMPORT_PROCESSES)]
            packages = {p for profile in profiles for p in profile}
            median = {p: statistics.median(profile.get(p, 0.0) for profile in profiles) for p in packages}
            top = sorted(median.items(), key=lambda kv: -kv[1])[:8]
            heavy = sorted(p for p in packages if p in HEAVY)
            print(f"  {label}: {sum(median.values()) * 1e3:.0f} ms in {len(packages)} top-level packages; "
                  + ", ".join(f"{p} {s * 1e3:.0f}" for p, s in top) + " ms")
            print(f"    heavy modules imported: {', '.join(heavy) if heavy else 'none'}")


if __name__ == "__main__":
    main()
