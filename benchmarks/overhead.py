#!/usr/bin/env python3
"""Does devicelab's harness change what it measures?

ONNX Runtime, MobileNet-v2, 1 thread, on the host: devicelab's samples (`devicelab run`, default protocol)
against an independent tight loop (_tight_loop.py) in a fresh process with the same model, threads and
pinning. The two alternate, ROUNDS processes each, so drift and heat hit both sides alike. Prints both
medians and the median ratio devicelab / independent with its 95 % bootstrap CI. Goal: within 1 %.

usage: python benchmarks/overhead.py [ROUNDS]   (default 5; run it on an otherwise idle machine)
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from devicelab import paths, zoo
from devicelab.analysis.stats import ratio_ci

HERE = Path(__file__).resolve().parent


def devicelab_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "devicelab"
    return [str(exe)] if exe.exists() else [shutil.which("devicelab") or "devicelab"]


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    model = zoo.zoo_model("mobilenet_v2", paths.zoo_dir())
    with tempfile.TemporaryDirectory() as tmp:
        suite = Path(tmp) / "overhead.yaml"
        suite.write_text("name: overhead\nmodels: [mobilenet_v2]\nengines: [onnxruntime]\nthreads: [1]\n"
                         "affinity: big\nseed: 1\n")
        env = {**os.environ, "DEVICELAB_DB": str(Path(tmp) / "db.sqlite")}
        ours: list[list[float]] = []
        theirs: list[list[float]] = []
        for i in range(rounds):
            p = subprocess.run([*devicelab_cmd(), "run", "--suite", str(suite), "--json"], env=env,
                               capture_output=True, text=True, check=True)
            (r,) = json.loads(p.stdout)["results"]
            ours.append(r["samples_s"])
            cpus = ",".join(map(str, r["cpus"]))
            p = subprocess.run([sys.executable, str(HERE / "_tight_loop.py"), str(model.path), "1", cpus,
                                str(len(r["samples_s"])), "1"], capture_output=True, text=True, check=True)
            theirs.append(json.loads(p.stdout))
            print(f"round {i + 1}: devicelab {statistics.median(ours[-1]) * 1e3:.3f} ms "
                  f"({len(ours[-1])} samples, stop: {r['protocol']['stop_reason']}), "
                  f"independent {statistics.median(theirs[-1]) * 1e3:.3f} ms  [cpus {cpus}]", flush=True)
    a = [s for run in ours for s in run]
    b = [s for run in theirs for s in run]
    point, lo, hi = ratio_ci(b, a)
    per_process = [statistics.median(x) / statistics.median(y) for x, y in zip(ours, theirs)]
    print(f"\nmachine: {os.cpu_count()} CPUs, {Path('/proc/cpuinfo').read_text().split('model name')[1].split(':')[1].splitlines()[0].strip()}")
    print(f"devicelab median   {statistics.median(a) * 1e3:.3f} ms  ({len(a)} samples, {rounds} processes)")
    print(f"independent median {statistics.median(b) * 1e3:.3f} ms  ({len(b)} samples, {rounds} processes)")
    print(f"ratio devicelab/independent {point:.4f}  95% CI [{lo:.4f}, {hi:.4f}]  (goal: within 1 %)")
    print(f"per-process median ratios: {', '.join(f'{x:.3f}' for x in per_process)}")


if __name__ == "__main__":
    main()
