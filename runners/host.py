"""Host runner: one config, one fresh process. `python -m devicelab.runners.host CONFIG.json`

Order matters for honest numbers: pin to the chosen CPUs first (so every thread the engine and numpy
create inherits the mask), then import the engine (timed as import_s), read RSS, load, run once (first inference), warm up,
and only then time iterations on command. Protocol lines go to the original stdout; anything the engine
prints is redirected to stderr so it cannot corrupt the protocol.

Runner protocol v2 (docs/runner-protocol.md): when the config says `warmup.by: controller`, the runner does not
warm itself up; the controller sends `warmup` commands and decides when timing is steady. Each `iter` line carries
`t`, the iteration's start on this process's monotonic clock.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
import time
from typing import Any, TextIO

PROTOCOL = 2


def _status_bytes(field: str) -> int | None:
    """VmRSS / VmHWM of this process in bytes (Linux /proc; None elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _peak_rss_bytes() -> tuple[int | None, str]:
    hwm = _status_bytes("VmHWM")
    if hwm is not None:
        return hwm, "VmHWM"
    import resource

    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is kB on Linux but bytes on macOS/iOS.
    return (maxrss if sys.platform == "darwin" else maxrss * 1024), "ru_maxrss"


def _thread_cpus() -> list[int] | None:
    """Every CPU any of this process's threads may run on (the engine's pools included); None off Linux. A pool
    pinned from a CPU list decided before this process pinned itself would show here."""
    try:
        tids = os.listdir("/proc/self/task")
        return sorted(set().union(*(os.sched_getaffinity(int(t)) for t in tids)))
    except (OSError, AttributeError, ValueError):
        return None


def _emit(out: TextIO, event: dict[str, Any]) -> None:
    out.write(json.dumps(event, separators=(",", ":")) + "\n")
    out.flush()


def _write_outputs(session: Any, config: dict[str, Any], make_inputs: Any) -> str | None:
    """Run the accuracy inputs (untimed) and save their outputs for the controller to compare with the fp32
    reference: the files in `accuracy_files` when the controller staged them (a data set's images), else inputs 1..N
    of the seeded stream. Returns the digest of all outputs."""
    import numpy as np

    from devicelab.engines.base import read_feed_files

    n, path = int(config.get("accuracy_inputs") or 0), config.get("outputs_file")
    if not n or not path:
        return None
    files = config.get("accuracy_files")
    per_output: list[list[Any]] = []
    for i in range(1, n + 1):
        feeds = read_feed_files(files[i - 1]) if files else make_inputs(config["inputs"], int(config["seed"]), i)
        outs = session.outputs(session.run(session.prepare(feeds)))
        for k, o in enumerate(outs):
            if k == len(per_output):
                per_output.append([])
            per_output[k].append(np.asarray(o, dtype=np.float32))
    arrays = [np.stack(o) for o in per_output]
    h = hashlib.sha256()
    for a in arrays:
        h.update(str(a.shape).encode() + a.tobytes())
    with open(path, "wb") as f:
        np.savez(f, *arrays)
    return h.hexdigest()


def _profile(session: Any, feeds: Any, iterations: int, config: dict[str, Any], out: TextIO) -> None:
    """Answer `profile`: one `op` line per engine op (seconds per iteration, mean over the profiled iterations), then
    `profiled` — with `unsupported` (the reason) when the engine has no op profiler, or `error` when profiling
    failed. Either way the timed iterations stand: profiling is a pass of its own."""
    profile = getattr(session, "profile", None)
    if profile is None:
        _emit(out, {"event": "profiled", "unsupported": f"{config['engine']}'s session has no op profiler in "
                                                          "devicelab's host runner"})
        return
    from devicelab.engines.base import UnsupportedError

    try:
        report = profile(feeds, iterations, config)
    except UnsupportedError as e:
        _emit(out, {"event": "profiled", "unsupported": str(e)})
        return
    except Exception as e:  # noqa: BLE001 - a profiler's failure is reported on the row, never fails the timing
        _emit(out, {"event": "profiled", "error": f"{type(e).__name__}: {e}"})
        return
    out.write("".join(json.dumps({"event": "op", **op}, separators=(",", ":")) + "\n" for op in report["ops"]))
    _emit(out, {"event": "profiled", **{k: v for k, v in report.items() if k != "ops"}})


def run(config: dict[str, Any], out: TextIO, commands: TextIO, start: dict[str, Any] | None = None) -> int:
    """One config. `start`: how this process began when it is not a fresh exec (a zygote's child: what the zygote
    imported before the fork and how long that took, added to import_s)."""
    start = start or {"exec_path": "exec", "preimport_s": 0.0, "preloaded": []}
    cpus = config.get("cpus")
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, [int(c) for c in cpus])

    from devicelab.engines import get_engine, make_inputs

    engine = get_engine(config["engine"])
    # The engine's import is timed apart (import_s): it is the same for every model, and far heavier for some engines
    # (OpenVINO) than others, so load_s stays comparable across engines. RSS before load comes after it. In a
    # zygote's child the modules it pre-imported cost nothing here: the zygote's time for them is added.
    t0 = time.perf_counter()
    for name in ("numpy", *engine.imports()):
        importlib.import_module(name)
    import_s = time.perf_counter() - t0 + float(start["preimport_s"])
    if config.get("llm") is not None:  # an LLM config: runner protocol v3, the engine's LLM session (runners/llm.py)
        from devicelab.runners import llm

        return llm.run(engine, config, out, commands, import_s, start, _status_bytes, _peak_rss_bytes, _thread_cpus)
    rss_before = _status_bytes("VmRSS")
    t0 = time.perf_counter()
    session = engine.open_session(config)
    load_s = time.perf_counter() - t0

    feeds = session.prepare(make_inputs(config["inputs"], int(config.get("seed", 0))))
    t0 = time.perf_counter()
    session.run(feeds)
    first_s = time.perf_counter() - t0

    warm = config.get("warmup") or {}
    warmups, warm_total = 0, 0.0
    if warm.get("by") != "controller":  # a v1-style config: warm up here until both minimums hold
        min_iter, min_s = int(warm.get("min_iterations", 3)), float(warm.get("min_seconds", 0.5))
        while warmups < min_iter or warm_total < min_s:
            t0 = time.perf_counter()
            session.run(feeds)
            warm_total += time.perf_counter() - t0
            warmups += 1

    device = getattr(session, "device", lambda: None)()  # the GPU a GPU backend runs on, where the engine says
    _emit(out, {"event": "ready", "protocol": PROTOCOL, "import_s": import_s, "load_s": load_s, "first_s": first_s,
                **({"gpu_device": device} if device else {}),
                "warmups": warmups, "warmup_s": warm_total, "rss_before_load_bytes": rss_before,
                "exec_path": start["exec_path"], "preloaded": start["preloaded"],
                "pid": os.getpid(), "cpus": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                # what this process has of the thread count devicelab set (a zygote's child takes it after the fork)
                "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                "profile": True})  # this runner answers the `profile` command (docs/runner-protocol.md)

    fixed = config.get("iterations")  # for callers that cannot write to stdin
    lines = iter(commands) if fixed is None else iter([json.dumps({"cmd": "run", "iterations": fixed}),
                                                       json.dumps({"cmd": "stop"})])
    perf, run_once = time.perf_counter, session.run
    peak_before_profile: tuple[int | None, str] | None = None
    for line in lines:
        if not line.strip():
            continue
        cmd = json.loads(line)
        if cmd.get("cmd") in ("run", "warmup"):  # warmup iterations are timed and reported the same way
            n = int(cmd["iterations"])
            starts, samples = [0.0] * n, [0.0] * n
            for i in range(n):
                t0 = perf()
                run_once(feeds)
                starts[i], samples[i] = t0, perf() - t0
            # Printed after the batch, not between iterations: writing is not part of inference.
            out.write("".join(f'{{"event":"iter","s":{s!r},"t":{t!r}}}\n' for s, t in zip(samples, starts))
                      + '{"event":"batch"}\n')
            out.flush()
        elif cmd.get("cmd") == "profile":
            # The profiling pass, after timing: it may open a second session of the model (ONNX Runtime, OpenVINO,
            # MNN), so the peak memory is read before it and that is the one `done` reports.
            if peak_before_profile is None:
                peak_before_profile = _peak_rss_bytes()
            _profile(session, feeds, int(cmd["iterations"]), config, out)
        elif cmd.get("cmd") == "stop":
            # Peak first: the accuracy pass below is not part of the measured workload.
            peak, method = peak_before_profile or _peak_rss_bytes()
            digest = _write_outputs(session, config, make_inputs)
            _emit(out, {"event": "done", "peak_rss_bytes": peak, "peak_rss_method": method,
                        # says the peak is the timed run's, read before the profiling pass's second session
                        **({"peak_rss_before_profile": True} if peak_before_profile else {}),
                        "thread_cpus": _thread_cpus(),
                        "outputs_sha256": digest, "outputs_file": config.get("outputs_file") if digest else None})
            return 0
        else:
            _emit(out, {"event": "error", "message": f"unknown command {cmd!r}"})
            return 2
    _emit(out, {"event": "error", "message": "stdin closed before 'stop'"})
    return 3


def main(argv: list[str] | None = None, start: dict[str, Any] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # engine chatter on fd 1 now lands on stderr
    sys.stdout = sys.stderr
    if len(argv) != 1:
        _emit(out, {"event": "error", "message": "usage: python -m devicelab.runners.host CONFIG.json"})
        return 2
    try:
        with open(argv[0]) as f:
            config = json.load(f)
        return run(config, out, sys.stdin, start)
    except Exception as e:  # noqa: BLE001 - every failure must reach the controller as an event
        from devicelab.engines.base import UnsupportedError

        if isinstance(e, UnsupportedError):  # the engine cannot do this here: an `unsupported` row, not a failure
            _emit(out, {"event": "error", "message": str(e), "unsupported": True})
            return 4
        _emit(out, {"event": "error", "message": f"{type(e).__name__}: {e}"})
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
