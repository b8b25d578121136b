#!/usr/bin/env python3
"""Does devicelab's harness change what it measures?

ONNX Runtime, MobileNet-v2, 1 thread, on the host: devicelab's samples (`devicelab run`, default protocol)
against an independent tight loop (_engine_loop.py) in a fresh process with the same model, threads and
pinning. The two alternate, ROUNDS processes each, so drift and heat hit both sides alike. Prints both
medians, each round's ratio of process medians, and the ratio devicelab / independent with its 95 % CI with the
round as the unit, as `compare` pairs two labels of one run (analysis.compare.verdict, paired): the median of the
per-round ratios, its CI from rounds resampled whole and never narrower than a paired t interval of the per-round
log ratios. (Pooling the samples of all processes made the CI as narrow as one process's sampling error, far
narrower than the 5 % the processes spread.) Goal: within 1 %.

usage: python benchmarks/overhead.py [ROUNDS]   (default 5; run it on an otherwise idle machine)
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from pathlib import Path

from _common import devicelab_run, independent, machine, ms, paired_ratio


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
    ratio, ci = paired_ratio(theirs, ours)
    per_process = [statistics.median(x) / statistics.median(y) for x, y in zip(ours, theirs)]
    print(f"\nmachine: {machine()}")
    print(f"devicelab median   {ms([statistics.median(x) for x in ours])}  (median of {rounds} process medians, "
          f"{sum(map(len, ours))} samples)")
    print(f"independent median {ms([statistics.median(x) for x in theirs])}  (median of {rounds} process medians, "
          f"{sum(map(len, theirs))} samples)")
    ci_text = f"95% CI [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "no CI (one round)"
    print(f"ratio devicelab/independent {ratio:.4f}  {ci_text}  (paired by round, {rounds} rounds; goal: within 1 %)")
    print(f"per-process median ratios: {', '.join(f'{x:.3f}' for x in per_process)}")


if __name__ == "__main__":
    main()
