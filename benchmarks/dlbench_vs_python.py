#!/usr/bin/env python3
"""dlbench (ncnn through devicelab's C++ runner) against the pip ncnn engine (Python runner).

Same ncnn version (dlbench is built from the installed pip ncnn's sdist), same pnnx-converted model, same
seeded inputs, threads and pinning, the default measurement protocol; `devicelab run` one engine at a time,
alternating, ROUNDS processes each, so drift and heat hit both alike. Prints per-process medians, both
medians (of process medians) and the ratio dlbench/pip with its 95 % CI, the round as the unit (as `compare` pairs
labels of one run), and whether the outputs' digests are equal.

usage: python benchmarks/dlbench_vs_python.py [ROUNDS] [MODEL] [THREADS]   (defaults 5, mobilenet_v2, 1)
Needs `devicelab build-native --target host` first (same DEVICELAB_DATA). Run it on an otherwise idle machine.
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

from _common import paired_ratio

from devicelab import native


def devicelab_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "devicelab"
    return [str(exe)] if exe.exists() else [shutil.which("devicelab") or "devicelab"]


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    model = sys.argv[2] if len(sys.argv) > 2 else "mobilenet_v2"
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    if native.artifact("host", "dlbench") is None:
        raise SystemExit("run `devicelab build-native --target host` first (same DEVICELAB_DATA)")
    samples: dict[str, list[list[float]]] = {"ncnn": [], "dlbench": []}
    digests: dict[str, set[str]] = {"ncnn": set(), "dlbench": set()}
    versions: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "DEVICELAB_DB": str(Path(tmp) / "db.sqlite")}
        for i in range(rounds):
            line = []
            for engine in ("ncnn", "dlbench") if i % 2 == 0 else ("dlbench", "ncnn"):
                suite = Path(tmp) / f"{engine}.yaml"
                suite.write_text(f"name: dlbench-vs-python\nmodels: [{model}]\nengines: [{engine}]\n"
                                 f"threads: [{threads}]\naffinity: big\nseed: 1\n")
                p = subprocess.run([*devicelab_cmd(), "run", "--suite", str(suite), "--json"], env=env,
                                   capture_output=True, text=True)
                if p.returncode != 0:
                    raise SystemExit(f"devicelab run ({engine}) failed: {p.stderr[-2000:]}")
                (r,) = json.loads(p.stdout)["results"]
                samples[engine].append(r["samples_s"])
                digests[engine].add(r["protocol"].get("outputs_sha256") or "")
                versions[engine] = r["engine_version"]
                line.append(f"{engine} {statistics.median(r['samples_s']) * 1e3:.3f} ms ({len(r['samples_s'])}, "
                            f"cpus {r['cpus']})")
            print(f"round {i + 1}: " + ", ".join(line), flush=True)
    ratio, ci = paired_ratio(samples["ncnn"], samples["dlbench"])
    ci_text = f"95% CI [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "no CI (one round)"
    print(f"\nmachine: {os.cpu_count()} CPUs; model {model}, {threads} thread(s)")
    for engine, name in (("ncnn", "pip ncnn"), ("dlbench", "dlbench ")):
        print(f"{name} {versions[engine]:<40} median {statistics.median(map(statistics.median, samples[engine])) * 1e3:.3f}"
              f" ms  (median of {rounds} process medians)")
    print(f"ratio dlbench/pip {ratio:.4f}  {ci_text}  (paired by round)")
    ratios = [statistics.median(x) / statistics.median(y) for x, y in zip(samples["dlbench"], samples["ncnn"])]
    print(f"per-pair median ratios: {', '.join(f'{x:.3f}' for x in ratios)}")
    same = digests["ncnn"] == digests["dlbench"] and len(digests["ncnn"]) == 1
    print(f"outputs_sha256 equal across engines: {same}")


if __name__ == "__main__":
    main()
