#!/usr/bin/env python3
"""Does devicelab's harness change what it measures?

ONNX Runtime, MobileNet-v2, 1 thread, on the host: devicelab's samples (`devicelab run`, default protocol)
against an independent tight loop (_engine_loop.py) in a fresh process with the same model, threads and
pinning. The two alternate, ROUNDS processes each, so drift and heat hit both sides alike. Prints both
medians and the median ratio devicelab / independent with its 95 % bootstrap CI. Goal: within 1 %.

usage: python benchmarks/overhead.py [ROUNDS]   (default 5; run it on an otherwise idle machine)
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from pathlib import Path

from _common import devicelab_run, independent, machine, ms

from devicelab.analysis.stats import ratio_ci  # noqa: E402


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    with tempfile.TemporaryDirectory() as tmp:
        suite = Path(tmp) / "overhead.yaml"
        suite.write_text("name: overhead\nmodels: [mobilenet_v2]\nengines: [onnxruntime]\nthreads: [1]\n"
                         "affinity: big\nseed: 1\n")
        env = {**os.environ, "DEVICELAB_DB": str(Path(tmp) / "db.sqlite")}
        ours: list[list[float]] = []
        theirs: list[list[float]] = []
        for i in range(rounds):
            (r,) = devicelab_run(suite, env)["results"]
            ours.append(r["samples_s"])
            from devicelab import paths, zoo

            model = zoo.zoo_model("mobilenet_v2", paths.zoo_dir())
            theirs.append(independent("onnxruntime", str(model.path), 1, r["cpus"], len(r["samples_s"])))
            print(f"round {i + 1}: devicelab {ms(ours[-1])} ({len(ours[-1])} samples, stop: "
                  f"{r['protocol']['stop_reason']}), independent {ms(theirs[-1])}  [cpus {r['cpus']}]", flush=True)
    a = [s for run in ours for s in run]
    b = [s for run in theirs for s in run]
    point, lo, hi = ratio_ci(b, a)
    per_process = [statistics.median(x) / statistics.median(y) for x, y in zip(ours, theirs)]
    print(f"\nmachine: {machine()}")
    print(f"devicelab median   {ms(a)}  ({len(a)} samples, {rounds} processes)")
    print(f"independent median {ms(b)}  ({len(b)} samples, {rounds} processes)")
    print(f"ratio devicelab/independent {point:.4f}  95% CI [{lo:.4f}, {hi:.4f}]  (goal: within 1 %)")
    print(f"per-process median ratios: {', '.join(f'{x:.3f}' for x in per_process)}")


if __name__ == "__main__":
    main()
