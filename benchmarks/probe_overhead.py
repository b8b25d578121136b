#!/usr/bin/env python3
"""What does dlprobe cost?

1. dlprobe's own CPU time per second of sampling at 10 ms (memory + frequencies every 10 ms, thermal and
   battery every 500 ms), around a child that only sleeps: ROUNDS runs of 5 s, median.
2. The change it causes in a 1-thread median: dlbench (ncnn, MODEL, 1 thread, pinned to the last CPU, fixed
   iterations) in alternating fresh processes, plain and under dlprobe at 10 ms (which moves itself to a
   free core when there is one), ROUNDS processes each. Prints both medians (of process medians) and the ratio
   probed/plain with its 95 % CI, the round as the unit (as `compare` pairs labels of one run). Goal: within 1 %.

usage: python benchmarks/probe_overhead.py [ROUNDS] [MODEL] [ITERATIONS]   (defaults 5, mobilenet_v2, 300)
Needs `devicelab build-native --target host` first (same DEVICELAB_DATA). Run it on an otherwise idle machine.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import paired_ratio

from devicelab import native, paths, zoo
from devicelab.engines.dlbench import write_inputs
from devicelab.engines.ncnn import convert_onnx


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    model_name = sys.argv[2] if len(sys.argv) > 2 else "mobilenet_v2"
    iterations = int(sys.argv[3]) if len(sys.argv) > 3 else 300
    dlprobe, dlbench = native.artifact("host", "dlprobe"), native.artifact("host", "dlbench")
    if dlprobe is None or dlbench is None:
        raise SystemExit("run `devicelab build-native --target host` first (same DEVICELAB_DATA)")
    cpu = max(os.sched_getaffinity(0))

    print(f"1. dlprobe CPU time per second of sampling at 10 ms ({rounds} runs of `sleep 5`)", flush=True)
    per_s, per_sample = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(rounds):
            out = Path(tmp) / "idle.json"
            subprocess.run([str(dlprobe), "--cpus", str(cpu), "--interval-ms", "10", "--out", str(out), "--",
                            "sleep", "5"], check=True)
            doc = json.loads(out.read_text())
            per_s.append(doc["probe"]["cpu_s_per_s"])
            per_sample.append(doc["probe"]["cpu_s"] / max(1, doc["probe"]["fast_samples"]))
    print(f"   median {statistics.median(per_s) * 1e3:.2f} ms of CPU per second ({statistics.median(per_s) * 100:.2f} % "
          f"of one core); {statistics.median(per_sample) * 1e6:.1f} µs per sample "
          f"(runs: {', '.join(f'{x * 1e3:.2f}' for x in per_s)} ms/s)")

    mf = zoo.zoo_model(model_name, paths.zoo_dir())
    inputs = zoo.onnx_inputs(mf.path, {})
    param, weights = convert_onnx(mf.path, mf.sha256, [list(i["shape"]) for i in inputs],
                                  paths.data_dir() / "converted" / "ncnn")
    print(f"\n2. 1-thread median of dlbench ({model_name}, CPU {cpu}, {iterations} iterations per process), "
          f"plain vs under dlprobe at 10 ms, {rounds} processes each, interleaved", flush=True)
    plain: list[list[float]] = []
    probed: list[list[float]] = []
    probe_cpus: set[str] = set()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = {"model": str(param), "threads": 1, "cpus": [cpu], "precision": "fp32", "backend": "cpu",
               "inputs": write_inputs(list(inputs), 1, Path(tmp)), "options": {"weights": str(weights)},
               "warmup": {"min_iterations": 3, "min_seconds": 0.5}, "iterations": iterations}
        config = Path(tmp) / "config.json"
        config.write_text(json.dumps(cfg))
        env = dict(os.environ, OMP_NUM_THREADS="1")
        for i in range(rounds):
            for arm in ("plain", "probed") if i % 2 == 0 else ("probed", "plain"):
                cmd = [str(dlbench), str(config)]
                if arm == "probed":
                    out = Path(tmp) / "probe.json"
                    cmd = native.probe_argv(str(dlprobe), cmd, (cpu,), str(out), interval_ms=10)
                p = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
                samples = [json.loads(line)["s"] for line in p.stdout.splitlines() if '"iter"' in line]
                (probed if arm == "probed" else plain).append(samples)
                if arm == "probed":
                    probe_cpus.add(",".join(map(str, json.loads(out.read_text())["probe_cpus"])))
            print(f"   round {i + 1}: plain {statistics.median(plain[-1]) * 1e3:.3f} ms, "
                  f"probed {statistics.median(probed[-1]) * 1e3:.3f} ms", flush=True)
    ratio, ci = paired_ratio(plain, probed)
    ci_text = f"95% CI [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "no CI (one round)"
    print(f"\nmachine: {os.cpu_count()} CPUs; probe ran on CPUs {sorted(probe_cpus)}, the runner on CPU {cpu}")
    print(f"plain median   {statistics.median(map(statistics.median, plain)) * 1e3:.3f} ms "
          f"(median of {rounds} process medians)")
    print(f"probed median  {statistics.median(map(statistics.median, probed)) * 1e3:.3f} ms "
          f"(median of {rounds} process medians)")
    print(f"ratio probed/plain {ratio:.4f}  {ci_text}  (paired by round; goal: within 1 %)")
    ratios = [statistics.median(x) / statistics.median(y) for x, y in zip(probed, plain)]
    print(f"per-process median ratios: {', '.join(f'{x:.3f}' for x in ratios)}")


if __name__ == "__main__":
    main()
