#!/usr/bin/env python3
"""How much of `devicelab run --quick` is spent timing inference?

efficiency = seconds of timed inference (the sum of every stored sample) / wall seconds of the command.
Goal: >= 0.7. Also prints where the rest goes: warmups, the runners' start/load, cooldown, controller; the last line
is the median efficiency alone. The zoo is built first (`devicelab models`) and one unmeasured run converts every
model and keeps every variant's accuracy record, so one-time work is not counted.

usage: python benchmarks/efficiency.py [REPEATS]   (default 2)
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from _common import devicelab_cmd, machine


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    subprocess.run([*devicelab_cmd(), "models"], check=True, capture_output=True)
    # One warm-up run converts and quantizes every model, so the measured runs time only measurement.
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([*devicelab_cmd(), "run", "--quick", "--json"], capture_output=True,
                       env={**os.environ, "DEVICELAB_DB": str(Path(tmp) / "db.sqlite")})
    ratios = []
    for i in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "DEVICELAB_DB": str(Path(tmp) / "db.sqlite")}
            t0 = time.perf_counter()
            p = subprocess.run([*devicelab_cmd(), "run", "--quick", "--json", "--report", str(Path(tmp) / "r.html")],
                               env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t0
        results = json.loads(p.stdout)["results"]
        timed = sum(sum(r["samples_s"]) for r in results)
        warm = sum((r["protocol"].get("warmup") or {}).get("seconds") or 0 for r in results if r["protocol"])
        cool = sum(r["protocol"].get("cooldown", {}).get("waited_s", 0) for r in results if r["protocol"])
        spans = sum((datetime.fromisoformat(r["finished_at"]) - datetime.fromisoformat(r["started_at"])).total_seconds()
                    for r in results)
        other_in_runner = spans - timed - warm
        ratios.append(timed / wall)
        print(f"run {i + 1}: {len(results)} configs, wall {wall:.2f} s, timed inference {timed:.2f} s -> "
              f"efficiency {timed / wall:.3f}")
        print(f"  warmup {warm:.2f} s, runner start+load+first+exit {other_in_runner:.2f} s, cooldown {cool:.2f} s, "
              f"controller start/plan/report {wall - spans - cool:.2f} s")
    print(f"\nmachine: {machine()}")
    print(f"median efficiency over {repeats} runs (goal >= 0.7), on the next line:")
    print(f"{statistics.median(ratios):.3f}")  # the last line is the figure alone, for scripts


if __name__ == "__main__":
    main()
