#!/usr/bin/env python3
"""Why ONNX Runtime's peak RSS differed between a fresh runner and a zygote's child, and what the fork itself costs.

Under glibc's dynamic mmap threshold ONNX Runtime's peak RSS takes one of a few values a few % apart from one process
to the next; devicelab fixes the threshold for the processes it measures (docs/architecture.md, "The allocator"),
and this script shows why. Its processes set the rule themselves, whatever devicelab's default. This script
separates the three things that could move it, each in its own process, MobileNet-v2 fp32, 1 thread, 20 runs:

* the process-start path: `fresh` (numpy and onnxruntime imported, then load, as a bare script), `fresh-dl`
  (devicelab's runner modules imported first, then numpy and onnxruntime: the exec'd runner's order), `zygote-nofork`
  (the zygote's: the same order, then its list of resident file pages, no fork) and `zygote-fork` (the same, then
  fork; the child maps the zygote's resident file pages again and loads, as devicelab's zygote child does);
* address-space layout randomization: on, or off for the process (personality ADDR_NO_RANDOMIZE, as
  `setarch -R` sets it; inherited by the fork);
* glibc's dynamic mmap threshold: glibc's default (it rises each time a block that was mmap'd is freed, so where a
  later large allocation goes depends on the heap's history), or fixed (GLIBC_TUNABLES
  glibc.malloc.mmap_threshold=131072: every block above 128 KiB is mmap'd and returned on free).

It prints, per condition and path, RSS before load and the peak (VmHWM) in MB over REPEATS processes (the distinct
values, then the median). Reading: with ASLR off and the default allocator a path is deterministic, so
`zygote-fork` against `zygote-nofork` is the fork's own effect; `fresh-dl` against `zygote-fork` is what a
config's series sees when it moves from exec to the zygote; the fixed-threshold rows show how much of the spread is
the allocator's history.

usage: python benchmarks/heap_history.py [REPEATS]   (default 4)
"""

from __future__ import annotations

import ctypes
import json
import os
import statistics
import subprocess
import sys
from typing import Any

PATHS = ("fresh", "fresh-dl", "zygote-nofork", "zygote-fork")
ADDR_NO_RANDOMIZE = 0x0040000


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def child(path: str, model: str) -> None:
    """One process: start as `path` says, load MobileNet-v2 in ONNX Runtime, run it 20 times, print the figures."""
    if path != "fresh":
        # the exec'd runner imports these before the engine, and so does the zygote (runners/zygote.py, serve)
        import devicelab.engines  # noqa: F401
        import devicelab.runners.host  # noqa: F401
    import numpy as np
    import onnxruntime as ort

    resident = None
    if path.startswith("zygote"):
        from devicelab.runners import zygote

        resident = zygote.resident_file_pages()

    def load_and_run() -> dict[str, Any]:
        if resident is not None and path == "zygote-fork":
            from devicelab.runners import zygote

            zygote.map_again(resident)
        before = _status_kb("VmRSS")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
        name = session.get_inputs()[0].name
        for _ in range(20):
            session.run(None, {name: x})
        return {"before_kb": before, "peak_kb": _status_kb("VmHWM")}

    if path == "zygote-fork":
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            os.write(w, json.dumps(load_and_run()).encode())
            os._exit(0)
        os.close(w)
        data = b""
        while chunk := os.read(r, 65536):
            data += chunk
        os.waitpid(pid, 0)
        print(data.decode())
    else:
        print(json.dumps(load_and_run()))


def _no_aslr() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.personality(ADDR_NO_RANDOMIZE)


def measure(path: str, model: str, aslr: bool, fixed_threshold: bool) -> dict[str, int]:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env.update({"CI": "true", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"})
    if fixed_threshold:
        env["GLIBC_TUNABLES"] = "glibc.malloc.mmap_threshold=131072"
    # personality() applies to the next exec: set in the child between fork and exec, so the script sees no ASLR.
    p = subprocess.run([sys.executable, __file__, "--child", path, model], env=env, capture_output=True, text=True,
                       preexec_fn=None if aslr else _no_aslr, cwd="/")
    if p.returncode != 0:
        raise SystemExit(f"{path}: {p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    # Found (or built) here, not in the measured processes: the zoo's imports would be part of their heap's history.
    from devicelab import paths
    from devicelab.zoo import zoo_model

    model = str(zoo_model("mobilenet_v2", paths.zoo_dir()).path)
    print(f"{'condition':34s} {'path':14s} {'RSS before load, MB':>22s} {'peak MB (distinct values)':>36s} "
          f"{'median':>8s}")
    medians: dict[tuple[str, str], float] = {}
    for label, aslr, fixed in (("ASLR on, glibc default", True, False), ("ASLR off, glibc default", False, False),
                               ("ASLR on, fixed mmap threshold", True, True)):
        # Paths interleaved per repeat, so a drift of the machine falls on every path alike.
        figures: dict[str, list[dict[str, int]]] = {p: [] for p in PATHS}
        for _ in range(repeats):
            for path in PATHS:
                figures[path].append(measure(path, model, aslr, fixed))
        for path in PATHS:
            peaks = [f["peak_kb"] / 1024 for f in figures[path]]
            before = statistics.median(f["before_kb"] / 1024 for f in figures[path])
            distinct = " ".join(f"{v:.1f}" for v in sorted(set(round(p, 1) for p in peaks)))
            medians[(label, path)] = statistics.median(peaks)
            print(f"{label:34s} {path:14s} {before:22.1f} {distinct:>36s} {medians[(label, path)]:8.1f}", flush=True)
    print()
    for label in ("ASLR off, glibc default", "ASLR on, fixed mmap threshold"):
        fork = medians[(label, "zygote-fork")] / medians[(label, "zygote-nofork")]
        path = medians[(label, "zygote-fork")] / medians[(label, "fresh-dl")]
        print(f"{label}: peak zygote-fork / zygote-nofork = {fork:.4f} (the fork's own effect); "
              f"zygote-fork / fresh-dl = {path:.4f} (exec runner -> zygote child)")


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
    else:
        main()
