#!/usr/bin/env python3
"""Per engine, devicelab's median next to an independent measurement of the same configuration.

MobileNet-v2, fp32, 1 thread, pinned like devicelab pins. For each engine, ROUNDS alternations of one
`devicelab run` process and one independent loop (_engine_loop.py: the engine's own Python API, no devicelab
code) on the very model file devicelab converted. Prints both medians (of process medians), each round's ratio, and
the ratio with its 95 % CI with the round as the unit, as `compare` pairs two labels of one run
(analysis.compare.verdict, paired; pooling every process's samples made the CI far narrower than the processes'
spread).

usage: python benchmarks/engines.py [ROUNDS]   (default 3; run it on an otherwise idle machine)
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from pathlib import Path

from _common import devicelab_run, independent, machine, ms, paired_ratio

from devicelab import paths, zoo
from devicelab.engines import get_engine
from devicelab.engines.base import SourceModel

ENGINES = ["onnxruntime", "ncnn", "mnn", "litert", "openvino"]


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    mf = zoo.zoo_model("mobilenet_v2", paths.zoo_dir())
    source = SourceModel(mf.name, mf.path, mf.sha256, tuple(zoo.onnx_inputs(mf.path)), zoo=True)
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "DEVICELAB_DB": str(Path(tmp) / "db.sqlite")}
        for engine in ENGINES:
            suite = Path(tmp) / f"{engine}.yaml"
            suite.write_text(f"name: engines\nmodels: [mobilenet_v2]\nengines: [{engine}]\nthreads: [1]\nseed: 1\n")
            # The file devicelab runs (cached by its first run), handed to the independent loop as is.
            prepared = get_engine(engine).prepare(source, "fp32", paths.data_dir() / "converted" / engine)
            ours: list[list[float]] = []
            theirs: list[list[float]] = []
            for _ in range(rounds):
                (r,) = devicelab_run(suite, env)["results"]
                ours.append(r["samples_s"])
                theirs.append(independent(engine, str(prepared.path), 1, r["cpus"], len(r["samples_s"]),
                                          prepared.options.get("weights")))
            ratio, ci = paired_ratio(theirs, ours)
            per_round = ", ".join(f"{statistics.median(a) / statistics.median(b):.3f}" for a, b in zip(ours, theirs))
            ci_text = f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "[no CI: one round]"
            mine, other = ms([statistics.median(x) for x in ours]), ms([statistics.median(x) for x in theirs])
            print(f"{engine:12s} devicelab {mine:>10s}   independent {other:>10s}   ratio {ratio:.3f} {ci_text}"
                  f"   per round: {per_round}", flush=True)
    print(f"\nmachine: {machine()}; MobileNet-v2 fp32, 1 thread, {rounds} processes per side per engine; "
          "CI paired by round")


if __name__ == "__main__":
    main()
