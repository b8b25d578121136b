"""tool:benchncnn — ncnn's own benchmark binary (Tencent/ncnn benchmark/benchncnn.cpp), driven as it is.

    benchncnn LOOP THREADS POWERSAVE GPU_DEVICE COOLING_DOWN param=FOLDER/model.param shape=[w,h,c]

What the source fixes and devicelab cannot change (each becomes a note):
* benchncnn loads only the .param: weights are zero-filled (DataReaderFromEmpty), inputs filled with 0.01, so the
  run folder holds the .param alone. int8 is not a flag but a model: the ncnn engine's int8 .param (ncnn_int8).
* fp16 packed/storage/arithmetic and int8 inference are switched on unconditionally (`opt.use_fp16_*` = true): fp32
  cannot be asked for, and bf16 storage is never switched on.
* warmup is a fixed 8 forwards (10 on Vulkan) and is not printed; only min/max/avg of the timed loops are printed.
* powersave (0 all, 1 little, 2 big) re-binds every OpenMP thread with sched_setaffinity, overriding taskset: the
  config's CPUs must be one of those sets.
* cooling_down=1 sleeps 10 s before each model: devicelab passes 0 and owns the cooldown.
Everything goes to stderr.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from devicelab.engines.base import PreparedModel, SourceModel
from devicelab.engines.tool_base import (NUMBER, ToolEngine, ToolRun, ToolSettings, build_run, exit_error, first_line,
                                         lines_of, nchw_to_ncnn_shape, seconds, target_path)

PARAM, PARAM_INT8 = "model.param", "model_int8.param"
WARMUP_CPU, WARMUP_GPU = 8, 10  # benchncnn.cpp: g_warmup_loop_count, and 10 when a GPU device is given
POWERSAVE = {"all": 0, "little": 1, "big": 2}

_HEADER = re.compile(r"^(loop_count|num_threads|powersave|gpu_device|cooling_down) = (-?\d+)\s*$")
_RESULT = re.compile(rf"^\s*(?P<name>.*?)\s+min =\s*(?P<min>{NUMBER})\s+max =\s*(?P<max>{NUMBER})"
                     rf"\s+avg =\s*(?P<avg>{NUMBER})\s*$")
_SKIPPED = re.compile(r"^\s*(?P<name>\S.*?)\s+skipped \((?P<why>[^)]*)\)\s*$")
_GPU_INFO = re.compile(r"^\[\d+ .*\]  \S")  # gpu.cpp create_gpu_instance: "[0 Adreno (TM) 740]  queueC=0[3] ..."
# src/benchmark.cpp (CPU, ms) and src/net.cpp (Vulkan timestamps, us), only in -DNCNN_BENCHMARK=ON builds.
_PROFILE = re.compile(rf"^(?P<type>\S+)\s+(?P<name>\S+)\s+(?P<t>{NUMBER})(?P<unit>ms|us)\s+\|")
_UNRECOGNIZED = re.compile(r"^unrecognized arg (?P<arg>.*)$")
_ERRORS = [re.compile(p) for p in (
    r"^input tensor shape empty!",
    r"^input \d+ tensors while model has \d+ inputs",
    r"^unsupported input shape size",
    r"^fopen .* failed",
    r"^network graph not ready",
    r"^parse magic failed",
    r"^param is too old",
    r"^layer \S+ not exists or registered",
    r"^find_blob_index_by_name .* failed",
    r"^powersave -?\d+ not supported",
    r"^(?:vkCreateInstance|vkCreateDevice|vkEnumeratePhysicalDevices) failed",
    r"^no vulkan device",
    r"^load vulkan driver failed",
    r"^Usage: benchncnn",
)]


def profile_ops(lines: list[str], loop_count: int | None) -> tuple[tuple[dict[str, Any], ...], int]:
    """Per-layer averages of the timed forwards. The profile prints every forward, warmups first, so each
    layer's last `loop_count` lines are the timed ones. Returns (ops, forwards seen)."""
    times: dict[str, list[float]] = {}
    types: dict[str, str] = {}
    for line in lines:
        m = _PROFILE.match(line)
        if m:
            times.setdefault(m["name"], []).append(seconds(m["t"], m["unit"]))
            types.setdefault(m["name"], m["type"])
    ops = []
    for name, ts in times.items():
        timed = ts[-loop_count:] if loop_count and len(ts) >= loop_count else ts
        ops.append({"name": name, "type": types[name], "s": sum(timed) / len(timed), "calls": len(timed)})
    return tuple(ops), max((len(ts) for ts in times.values()), default=0)


class BenchncnnTool(ToolEngine):
    name = "tool:benchncnn"
    tool = "benchncnn"
    source = "Tencent/ncnn benchmark/benchncnn.cpp, src/benchmark.cpp, src/net.cpp, src/gpu.cpp @ a4d2ea1 (2026-07)"
    formats = ("onnx",)  # converted to .param with pnnx (the ncnn engine's conversion); benchncnn reads no .bin
    precisions = ("fp16", "int8")
    backends = ("cpu", "vulkan")
    unsupported = {
        "fp32": "benchncnn switches fp16 packed/storage/arithmetic on unconditionally (no flag turns them off), "
                "so fp32 cannot be asked for; fp16 is what it runs where the hardware has it",
        "bf16": "benchncnn never switches bf16 storage on and has no flag for it",
        "gpu": "benchncnn's GPU path is Vulkan: ask for backend vulkan",
        "opencl": "benchncnn has no OpenCL path (its GPU path is Vulkan)",
        "metal": "benchncnn has no Metal path (its GPU path is Vulkan, MoltenVK on Apple)",
        "nnapi": "benchncnn has no NNAPI path",
        "coreml": "benchncnn has no Core ML path",
    }

    def availability(self) -> tuple[bool, str | None]:
        from devicelab.engines.ncnn import pnnx_binary

        if pnnx_binary() is None:
            return False, "the pnnx converter is not installed (pip install --no-deps pnnx)"
        return True, None

    def prepare(self, model: SourceModel, precision: str, cache_dir: Path) -> PreparedModel:
        from devicelab.engines.ncnn import ENGINE as NCNN

        # The ncnn engine's conversions and cache: benchncnn times the same .param as ncnn and dlbench (for int8
        # its calibrated .param, whose weights and scales benchncnn zero-fills).
        prepared = NCNN.prepare(model, "int8" if precision == "int8" else "fp32", cache_dir.parent / "ncnn")
        notes = ["benchncnn loads only the .param: weights are zero-filled and inputs filled with 0.01 by the tool"]
        return PreparedModel(prepared.path, (*notes, *(prepared.notes if precision == "int8" else ())),
                             {"param_name": PARAM_INT8 if precision == "int8" else PARAM})

    def model_layout(self, prepared: PreparedModel) -> dict[str, Path]:
        return {str(prepared.options.get("param_name", PARAM)): prepared.path}

    def powersave(self, s: ToolSettings) -> int:
        if s.affinity in POWERSAVE:
            return POWERSAVE[s.affinity]
        return 2 if s.big_cores else 0

    def argv(self, binary: str, folder: str, s: ToolSettings) -> list[str]:
        gpu_device = 0 if s.backend == "vulkan" else -1
        shapes = ",".join("[" + ",".join(map(str, nchw_to_ncnn_shape(shape))) + "]" for shape in s.input_shapes)
        param = target_path(folder, PARAM_INT8 if s.precision == "int8" else PARAM)
        return [binary, str(s.iterations), str(s.threads), str(self.powersave(s)), str(gpu_device), "0",
                f"param={param}", f"shape={shapes}", *s.extra_args]

    def unsupported_reason(self, s: ToolSettings) -> str | None:
        why = super().unsupported_reason(s)
        if why:
            return why
        if s.affinity is not None and s.affinity not in POWERSAVE:
            return (f"benchncnn pins its own threads with powersave (all, little or big cores) and re-binds them; "
                    f"affinity '{s.affinity}' cannot be asked for")
        if not s.input_shapes:
            return "benchncnn needs the model's input shapes (shape=[w,h,c]); none are known"
        if any(len(shape) >= 4 and shape[0] != 1 for shape in s.input_shapes):
            return "benchncnn feeds one image per input (ncnn Mats have no batch): batch > 1 cannot be asked for"
        if any(len(nchw_to_ncnn_shape(shape)) > 4 or not shape for shape in s.input_shapes):
            return "benchncnn takes inputs of 1 to 4 dimensions (w, h, d, c)"
        return None

    def parse(self, stdout: str, stderr: str, exit_code: int, files: Mapping[str, str] | None = None) -> ToolRun:
        lines = lines_of(stderr, stdout)  # benchncnn prints everything on stderr; stdout only if merged
        raw: dict[str, Any] = {}
        notes: list[str] = []
        results: list[re.Match[str]] = []
        gpu_info: list[str] = []
        error: str | None = None
        for line in lines:
            if m := _HEADER.match(line):
                raw[m[1]] = int(m[2])
            elif m := _RESULT.match(line):
                results.append(m)
            elif m := _SKIPPED.match(line):
                error = error or line.strip()
            elif _GPU_INFO.match(line):
                gpu_info.append(line.strip())
            elif m := _UNRECOGNIZED.match(line):
                notes.append(f"benchncnn ignored an argument: {line.strip()}")
        if gpu_info:
            raw["gpu_info"] = gpu_info
        error = error or first_line(lines, _ERRORS)
        loop_count = raw.get("loop_count")
        ops, forwards = profile_ops(lines, loop_count if isinstance(loop_count, int) else None)
        if ops:
            raw["profile_forwards"] = forwards
            notes.append("per-layer profile of a -DNCNN_BENCHMARK=ON build (its printing slows every forward)")
        fields: dict[str, Any] = {"raw": raw, "ops": ops}
        if len(results) > 1:
            raw["results"] = {m["name"].strip(): [m["min"], m["max"], m["avg"]] for m in results}
            error = error or (f"benchncnn printed {len(results)} results: a build without param=/shape= "
                              f"(before 2023-08) benchmarks its built-in models instead of this one")
        elif results:
            m = results[0]
            raw.update(model=m["name"].strip(), min=m["min"], max=m["max"], avg=m["avg"])
            fields.update(min_s=seconds(m["min"], "ms"), max_s=seconds(m["max"], "ms"),
                          avg_s=seconds(m["avg"], "ms"), count=loop_count)
            notes.append("benchncnn prints only min/max/avg of its timed loops (ms, 2 decimals): no per-iteration "
                         "times")
        elif error is None:
            error = exit_error("benchncnn", exit_code, lines, "result line")
        if error is None and exit_code != 0:
            error = f"benchncnn exited with {exit_code}"
        return build_run(**fields, notes=tuple(notes), error=error)

    def forced(self, s: ToolSettings) -> tuple[str, ...]:
        fixed = WARMUP_GPU if s.backend == "vulkan" else WARMUP_CPU
        notes = [f"warmups: benchncnn always runs {fixed} warmup forwards (fixed in benchncnn.cpp, not printed)"
                 + (f"; devicelab's {s.warmups} cannot be asked for" if s.warmups != fixed else ""),
                 f"affinity: benchncnn re-binds its threads itself (powersave={self.powersave(s)}), over taskset"]
        if s.precision == "fp16":
            notes.append("fp16: benchncnn's fp16 packed/storage/arithmetic are always on; ncnn uses them where the "
                         "hardware has them")
        return tuple(notes)

    def reconcile(self, run: ToolRun, s: ToolSettings) -> ToolRun:
        run = super().reconcile(run, s)
        if run.warmups is None and run.error is None:
            # Fixed by the source, not printed (forced() says so in a note).
            run = replace(run, warmups=WARMUP_GPU if s.backend == "vulkan" else WARMUP_CPU)
        raw = run.raw
        # (loop_count against the iterations is the base class's count check.)
        asked = {"num_threads": s.threads, "powersave": self.powersave(s),
                 "gpu_device": 0 if s.backend == "vulkan" else -1, "cooling_down": 0}
        for key, want in asked.items():
            if key in raw and raw[key] != want:
                run = run.with_notes(f"benchncnn printed {key} = {raw[key]}; {want} was asked for")
        if s.backend == "vulkan" and run.error is None and not raw.get("gpu_info"):
            run = run.with_notes(error="backend vulkan asked, but benchncnn printed no Vulkan device: a build "
                                       "without Vulkan (NCNN_VULKAN=OFF) ignores the GPU device and runs on the CPU")
        return run


ENGINE = BenchncnnTool()
