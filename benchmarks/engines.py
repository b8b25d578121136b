#!/usr/bin/env python3
"""Per engine, devicelab's median next to an independent measurement of the same configuration.

MobileNet-v2, fp32, 1 thread, pinned like devicelab pins. For each engine, ROUNDS alternations of one
`devicelab run` process and one independent loop (_engine_loop.py: the engine's own Python API, no devicelab
code) on the very model file devicelab converted. Prints both medians and the ratio with its 95 % CI.

usage: python benchmarks/engines.py [ROUNDS]   (default 3; run it on an otherwise idle machine)
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from _common import devicelab_run, independent, machine, ms

from devicelab import paths, zoo
from devicelab.analysis.stats import ratio_ci
from devicelab.engines import get_engine
from devicelab.engines.base import SourceModel

ENGINES = ["onnxruntime", "ncnn", "mnn", "litert", "openvino"]


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    mf = zoo.zoo_model("mobilenet_v2", paths.zoo_dir())
    source = SourceModel(mf.name, mf.path, mf.sha256, tuple(zoo.onnx_inputs(mf.path)), zoo=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "DEVICELAB_DB": str(Path(tmp) / "db.sqlite")}
        for engine in ENGINES:
            suite = Path(tmp) / f"{engine}.yaml"
            suite.write_text(f"name: engines\nmodels: [mobilenet_v2]\nengines: [{engine}]\nthreads: [1]\nseed: 1\n")
            # The file devicelab runs (cached by its first run), handed to the independent loop as is.
            prepared = get_engine(engine).prepare(source, "fp32", paths.data_dir() / "converted" / engine)
            ours, theirs = [], []
            for _ in range(rounds):
                (r,) = devicelab_run(suite, env)["results"]
                ours.extend(r["samples_s"])
                theirs.extend(independent(engine, str(prepared.path), 1, r["cpus"], len(r["samples_s"]),
                                          prepared.options.get("weights")))
            point, lo, hi = ratio_ci(theirs, ours)
            rows.append((engine, ms(ours), ms(theirs), point, lo, hi))
            print(f"{engine:12s} devicelab {ms(ours):>10s}   independent {ms(theirs):>10s}   "
                  f"ratio {point:.3f} [{lo:.3f}, {hi:.3f}]", flush=True)
    print(f"\nmachine: {machine()}; MobileNet-v2 fp32, 1 thread, {rounds} processes per side per engine")


if __name__ == "__main__":
    main()
