#!/usr/bin/env python3
"""What devicelab's fixed mmap threshold changes: glibc's dynamic threshold against the fixed one, side by side.

One devicelab suite lists every engine twice: label `dynamic` (`options: {mmap_threshold: dynamic}`, glibc's own
rule: the threshold rises to the size of each mmap'd block freed) and label `fixed` (devicelab's default: 128 KiB,
kept). ROUNDS repeats, each round running the two labels of an engine in lockstep (alive together, timed in
alternating slices) on one model at 1 thread. Per engine it prints the timing ratio fixed/dynamic of the medians with
its 95 % CI paired by round (as `devicelab compare` pairs labels), the peak-memory ratio paired the same way, and how
much each label's peak moves from one process to the next (the range over rounds, and the number of distinct values
at 0.1 MiB): the reproducibility the fixed threshold is for (docs/architecture.md, "The allocator").

With `--faults` it runs no suite: per engine and rule, one process of the plainest loop (_engine_loop.py, no
devicelab code) loads the model, runs 30 iterations, then counts over 100 more the minor page faults per iteration
(a block above the threshold allocated and freed inside an iteration would be mmap'd and faulted in each time), and
prints what glibc holds then (mallinfo2: bytes free inside the heap, its top included — resident at most —, and
bytes in mmap'd blocks) and the peak RSS.

usage: python benchmarks/allocator.py [ROUNDS] [--model mobilenet_v2] [--engines ncnn,mnn] [--process zygote|exec]
       [--save RESULTS.json] [--faults]   (default 10 rounds, MobileNet-v2, every engine, forked runners; run it on
       an otherwise idle machine)
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import devicelab_run, machine, paired_ratio

ENGINES = ["onnxruntime", "ncnn", "mnn", "litert", "openvino"]
LABELS = ("dynamic", "fixed")
FIXED = "glibc.malloc.mmap_threshold=131072"  # devicelab's default (devicelab.config.MMAP_THRESHOLD_DEFAULT)


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]


def faults_child(engine: str, model: str, weights: str) -> None:
    """In its own process, pinned to the last CPU: what one engine's loop costs the allocator (printed as JSON)."""
    os.sched_setaffinity(0, [max(os.sched_getaffinity(0))])
    from _engine_loop import make_step

    step = make_step(engine, model, 1, weights or None)
    for _ in range(30):
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(100):
        step()
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 100
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = _Mallinfo2
    info = libc.mallinfo2()
    with open("/proc/self/status") as f:
        peak_kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    print(json.dumps({"faults": faults, "free_held": info.fordblks, "mmapped": info.hblkhd, "peak": peak_kb * 1024}))


def faults(model_name: str, chosen: list[str]) -> None:
    from devicelab import paths, zoo
    from devicelab.engines import get_engine
    from devicelab.engines.base import SourceModel

    mf = zoo.zoo_model(model_name, paths.zoo_dir())
    source = SourceModel(mf.name, mf.path, mf.sha256, tuple(zoo.onnx_inputs(mf.path)), zoo=True)
    print(f"{'engine':12s} {'rule':8s} {'faults/iteration':>17s} {'free but held, MB':>18s} {'mmapped, MB':>12s} "
          f"{'peak, MiB':>10s}")
    for engine in chosen:
        prepared = get_engine(engine).prepare(source, "fp32", paths.data_dir() / "converted" / engine)
        for rule in LABELS:
            env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
            env.update({"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "CI": "true"})
            if rule == "fixed":
                env["GLIBC_TUNABLES"] = FIXED
            p = subprocess.run([sys.executable, __file__, "--faults-child", engine, str(prepared.path),
                                prepared.options.get("weights") or ""], env=env, capture_output=True, text=True,
                               cwd=Path(__file__).parent)
            if p.returncode != 0:
                raise SystemExit(f"{engine} ({rule}): {p.stderr[-2000:]}")
            got = json.loads(p.stdout.strip().splitlines()[-1])
            print(f"{engine:12s} {rule:8s} {got['faults']:17.2f} {got['free_held'] / 1e6:18.1f} "
                  f"{got['mmapped'] / 1e6:12.1f} {got['peak'] / 2**20:10.1f}", flush=True)
    print(f"\nmachine: {machine()}; {model_name} fp32, 1 thread; one process per line")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rounds", nargs="?", type=int, default=10, help="lockstep rounds (default 10)")
    parser.add_argument("--model", default="mobilenet_v2", help="a zoo model (default mobilenet_v2)")
    parser.add_argument("--engines", default=",".join(ENGINES), help=f"comma-separated, of {', '.join(ENGINES)}")
    parser.add_argument("--process", choices=("zygote", "exec"), default="zygote",
                        help="how the runners start (default zygote, devicelab's default)")
    parser.add_argument("--save", type=Path, help="write the run's Results (JSON) here")
    parser.add_argument("--faults", action="store_true", help="no suite: page faults and glibc's holdings per engine")
    args = parser.parse_args()
    chosen = list(dict.fromkeys(args.engines.split(",")))
    if unknown := sorted(set(chosen) - set(ENGINES)):
        parser.error(f"--engines: unknown {', '.join(unknown)}; allowed: {', '.join(ENGINES)}")
    if args.faults:
        faults(args.model, chosen)
        return
    entries = "".join(
        f"  - {{name: {e}, label: dynamic, options: {{mmap_threshold: dynamic, process: {args.process}}}}}\n"
        f"  - {{name: {e}, label: fixed, options: {{process: {args.process}}}}}\n" for e in chosen)
    with tempfile.TemporaryDirectory() as tmp:
        suite = Path(tmp) / "allocator.yaml"
        suite.write_text(f"name: allocator\nmodels: [{args.model}]\nengines:\n{entries}threads: [1]\n"
                         f"repeats: {args.rounds}\nseed: 1\n")
        env = {**os.environ, "DEVICELAB_DB": str(Path(tmp) / "db.sqlite")}
        env.pop("GLIBC_TUNABLES", None)  # the labels decide
        results = devicelab_run(suite, env)["results"]
    if args.save:
        args.save.write_text(json.dumps(results))
    print(f"{'engine':12s} {'dynamic':>9s} {'fixed':>9s} {'time fixed/dyn [95% CI]':>26s} "
          f"{'peak fixed/dyn [95% CI]':>26s} {'peak MiB dynamic: range, distinct':>34s} {'fixed: range, distinct':>24s}")
    for engine in chosen:
        rows = [r for r in results if r["engine"] == engine and r["status"] == "ok"]
        by = {label: {r["repeat"]: r for r in rows if r["label"] == label} for label in LABELS}
        rounds = sorted(set(by["dynamic"]) & set(by["fixed"]))
        if not rounds:
            print(f"{engine:12s} no ok pairs: " + "; ".join(f"{r['label']}: {r['reason']}" for r in results
                                                          if r["engine"] == engine and r["status"] != "ok"))
            continue
        dyn, fix = [by["dynamic"][k] for k in rounds], [by["fixed"][k] for k in rounds]
        ratio, ci = paired_ratio([r["samples_s"] for r in dyn], [r["samples_s"] for r in fix])
        mem, mem_ci = paired_ratio([[r["peak_rss_bytes"]] for r in dyn], [[r["peak_rss_bytes"]] for r in fix])

        def ci_text(value: float, bounds: tuple[float, float] | None) -> str:
            return f"{value:.4f} [{bounds[0]:.3f}, {bounds[1]:.3f}]" if bounds else f"{value:.4f} [one round]"

        def spread(side: list[dict]) -> str:
            peaks = [r["peak_rss_bytes"] / 2**20 for r in side]
            return f"{min(peaks):.1f}-{max(peaks):.1f}, {len({round(p, 1) for p in peaks})}"

        med = {label: statistics.median(statistics.median(r["samples_s"]) for r in side) * 1e3
               for label, side in (("dynamic", dyn), ("fixed", fix))}
        print(f"{engine:12s} {med['dynamic']:6.3f} ms {med['fixed']:6.3f} ms {ci_text(ratio, ci):>26s} "
              f"{ci_text(mem, mem_ci):>26s} {spread(dyn):>34s} {spread(fix):>24s}", flush=True)
    print(f"\nmachine: {machine()}; {args.model} fp32, 1 thread, {args.rounds} rounds, runners {args.process}; the two "
          "labels of an engine in lockstep each round; ratios are fixed / dynamic")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--faults-child":
        faults_child(*sys.argv[2:])
    else:
        main()
