#!/usr/bin/env python3
"""Does forking the runner from a zygote change any figure? Zygote vs fresh exec, side by side.

One devicelab suite lists every engine twice: label `exec` (`options: {process: exec}`, a fresh interpreter per
config) and label `zygote` (the default). MobileNet-v2, fp32, 1 thread; ROUNDS repeats, each round running the two
labels of an engine in lockstep (alive together, timed in alternating slices), so the machine's drift falls on both.
Per engine it prints the ratio zygote/exec of the medians with its 95 % CI, paired by round (analysis.compare,
as `devicelab compare` pairs labels), the peak-memory ratio paired the same way (one figure per process) with its
CI, and the RSS-before-load ratio (median over rounds), plus the paths the runners took (what the zygote saves is in benchmarks/efficiency.py).

usage: python benchmarks/zygote.py [ROUNDS] [--engines ncnn,mnn] [--affinity big|0|...] [--save RESULTS.json]
       (default 5 rounds, every engine; run it on an otherwise idle machine)

Both labels run at devicelab's fixed mmap threshold (docs/architecture.md, "The allocator"); under glibc's dynamic
rule ONNX Runtime's peak RSS depends on the heap's history on either path (benchmarks/heap_history.py shows how).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

from _common import devicelab_run, machine, paired_ratio

ENGINES = ["onnxruntime", "ncnn", "mnn", "litert", "openvino"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rounds", nargs="?", type=int, default=5, help="lockstep rounds (default 5)")
    parser.add_argument("--engines", default=",".join(ENGINES), help=f"comma-separated, of {', '.join(ENGINES)}")
    parser.add_argument("--affinity", default="big",
                        help="the CPUs to pin to, as a suite's `affinity` (default big: the highest-numbered CPU)")
    parser.add_argument("--save", type=Path, help="write the run's Results (JSON) here")
    args = parser.parse_args()
    chosen = list(dict.fromkeys(args.engines.split(",")))  # each once, in the order given
    if unknown := sorted(set(chosen) - set(ENGINES)):
        parser.error(f"--engines: unknown {', '.join(unknown)}; allowed: {', '.join(ENGINES)}")
    rounds, affinity, save = args.rounds, args.affinity, args.save
    engines = "".join(f"  - {{name: {e}, label: exec, options: {{process: exec}}}}\n  - {{name: {e}, label: zygote}}\n"
                      for e in chosen)
    with tempfile.TemporaryDirectory() as tmp:
        suite = Path(tmp) / "zygote.yaml"
        suite.write_text(f"name: zygote-vs-exec\nmodels: [mobilenet_v2]\nengines:\n{engines}threads: [1]\n"
                         f"affinity: ['{affinity}']\n"
                         f"repeats: {rounds}\nseed: 1\n")
        env = {**os.environ, "DEVICELAB_DB": str(Path(tmp) / "db.sqlite")}
        results = devicelab_run(suite, env)["results"]
    if save:
        save.write_text(json.dumps(results))
    print(f"{'engine':12s} {'median exec':>12s} {'zygote':>10s} {'ratio [95% CI]':>24s} {'peak mem [95% CI]':>24s} "
          f"{'rss@load':>9s}  paths")
    worst = 0.0
    for engine in chosen:
        rows = [r for r in results if r["engine"] == engine and r["status"] == "ok"]
        by = {label: sorted((r for r in rows if r["label"] == label), key=lambda r: r["repeat"])
              for label in ("exec", "zygote")}
        paired = [(a, b) for a in by["exec"] for b in by["zygote"] if a["repeat"] == b["repeat"]]
        if not paired:
            print(f"{engine:12s} no ok pairs: " + "; ".join(f"{r['label']}: {r['reason']}" for r in results
                                                          if r["engine"] == engine and r["status"] != "ok"))
            continue
        ratio, ci = paired_ratio([a["samples_s"] for a, _ in paired], [b["samples_s"] for _, b in paired])
        ci_text = f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "[one round]"
        if ci:
            worst = max(worst, abs(ci[0] - 1), abs(ci[1] - 1))
        # Peak memory: one figure per process, so the round's ratio is the unit too (its CI as for timing).
        mem, mem_ci = paired_ratio([[a["peak_rss_bytes"]] for a, _ in paired], [[b["peak_rss_bytes"]] for _, b in paired])
        mem_text = f"{mem:.4f} [{mem_ci[0]:.3f}, {mem_ci[1]:.3f}]" if mem_ci else f"{mem:.4f}"
        rss = statistics.median(b["rss_before_load_bytes"] / a["rss_before_load_bytes"] for a, b in paired)
        med = {k: statistics.median(statistics.median(r["samples_s"]) for r in v) * 1e3 for k, v in by.items()}
        paths = "/".join(sorted({r["ext"].get("exec_path", "?") for r in rows}))
        print(f"{engine:12s} {med['exec']:9.3f} ms {med['zygote']:7.3f} ms {ratio:8.4f} {ci_text:>15s} "
              f"{mem_text:>24s} {rss:9.4f}  {paths}", flush=True)
    print(f"\nmachine: {machine()}; MobileNet-v2 fp32, 1 thread, affinity {affinity}, {rounds} rounds, engines "
          f"{', '.join(chosen)}; the two labels of an engine in lockstep each round; ratios are zygote / exec")
    print(f"largest distance of a CI bound from 1: {worst:.4f} (goal: every CI inside [0.99, 1.01])")


if __name__ == "__main__":
    main()
