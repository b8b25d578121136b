"""tool:mnn-benchmark — MNN's own benchmark binary (alibaba/MNN benchmark/benchmark.cpp, `benchmark.out`).

    benchmark.out FOLDER/models LOOP WARMUP FORWARDTYPE NUMBERTHREAD PRECISION

benchmark.out benchmarks *every* non-dot file of the folder it is given, so the model goes alone into
FOLDER/models/. What the source fixes (notes): only max/min/avg of the loop are printed (ms, 3 decimals);
BackendConfig::Power_High is hard-coded, and MNN's CPU runtime then binds its threads to the biggest cluster(s)
holding `numberThread` cores with sched_setaffinity, over taskset; on GPU forward types "numberThread" is MNN's
GPU mode mask, not a thread count. Builds before 2020-03 took no warmup argument (argv[3] was the forward type);
builds before 2021-04 print "%8.3fms" with no space.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from devicelab.engines.base import IOS_ONLY, PreparedModel, SourceModel
from devicelab.engines.tool_base import (NUMBER, ToolEngine, ToolRun, ToolSettings, build_run, exit_error, lines_of,
                                         seconds, target_path)

MODELS_DIR, MODEL = "models", "model.mnn"

# MNNForwardType.h; MNN_FORWARD_NN is NNAPI on Android and Core ML on Apple.
FORWARD = {"cpu": 0, "metal": 1, "opencl": 3, "nnapi": 5, "coreml": 5, "vulkan": 7}
FORWARD_NAME = {0: "CPU", 1: "Metal", 3: "OpenCL", 7: "Vulkan"}  # benchmark.cpp forwardType(); others "N/A"
# BackendConfig::PrecisionMode: 0 Normal, 1 High, 2 Low, 3 Low_BF16. fp32 is High: Normal lets OpenCL store fp16.
PRECISION = {"fp32": 1, "fp16": 2, "bf16": 3, "int8": 1}
GPU_MODE = 4  # MNN_GPU_TUNING_WIDE, what benchmark.out's default numberThread=4 means on GPU forward types
GPU_FORWARDS = (1, 3, 7)  # Metal, OpenCL, Vulkan: numberThread is a GPU mode mask there


def number_thread(s: ToolSettings) -> int:
    return GPU_MODE if FORWARD.get(s.backend, 0) in GPU_FORWARDS else s.threads

_HEADER = re.compile(r"^Forward type: (?:\*\*)?(?P<type>[^*\s]+)(?:\*\*)?\s*(?P<rest>.*)$")
_KV = re.compile(r"(\w+)=([^\s*]+)")
_BENCHMARKING = re.compile(r"^-+> Benchmarking\.\.\. loop = (?P<loop>\S+?)(?:, warmup = (?P<warmup>-?\d+))?\s*$")
_RESULT = re.compile(rf"^\[ - \] (?P<name>.*?)\s+max =\s*(?P<max>{NUMBER})\s?ms\s+min =\s*(?P<min>{NUMBER})\s?ms"
                     rf"\s+avg =\s*(?P<avg>{NUMBER})\s?ms\s*$")
_FALLBACK = re.compile(r"Can't Find type=(?P<asked>\d+) backend, use (?P<used>\d+) instead")
_INFO = re.compile(r"^\[-INFO-\]: (?P<msg>.*)$")
_ERRORS = [re.compile(p) for p in (
    r"^open .* failed",
    r"^Usage: ",
    r"Create interpreter failed",
    r"^Invalid Model",
    r"^Model has no oplist",
    r"Can't create Runtime",
    r"Runtime not valid for create session",
    r"Compute Shape Error",
    r"^Error for ",
    r"Don't support type",
)]


class MnnBenchmarkTool(ToolEngine):
    name = "tool:mnn-benchmark"
    tool = "benchmark.out"
    source = ("alibaba/MNN benchmark/benchmark.cpp (history from 0.1.0 to 3.6.1-87), source/core/Schedule.cpp, "
              "source/backend/cpu/CPUBackend.cpp, include/MNN/MNNForwardType.h @ 4d40bdb (2026-08)")
    formats = ("onnx",)  # converted to .mnn with MNN's converter (the mnn engine's conversion)
    precisions = ("fp32", "fp16", "bf16", "int8")
    backends = ("cpu", "opencl", "vulkan", "metal", "nnapi", "coreml")
    unsupported = {
        "gpu": "benchmark.out names its GPU APIs: ask for opencl, vulkan or metal",
    }
    # MNN_FORWARD_NN is Core ML only on Apple systems (NNAPI on Android): a "coreml" row elsewhere would be mislabelled.
    only_on = {"coreml": (("ios",), IOS_ONLY)}

    def availability(self) -> tuple[bool, str | None]:
        from devicelab.engines import mnn

        return mnn.ENGINE.availability()  # devicelab converts to .mnn with MNN's converter

    def prepare(self, model: SourceModel, precision: str, cache_dir: Path) -> PreparedModel:
        from devicelab.engines import mnn

        # The mnn engine's conversions and cache: the fp32 .mnn (the tool's precision is a flag) or its int8 one.
        return mnn.ENGINE.prepare(model, "int8" if precision == "int8" else "fp32", cache_dir.parent / "mnn")

    def model_layout(self, prepared: PreparedModel) -> dict[str, Path]:
        return {f"{MODELS_DIR}/{MODEL}": prepared.path}

    def argv(self, binary: str, folder: str, s: ToolSettings) -> list[str]:
        return [binary, target_path(folder, MODELS_DIR), str(s.iterations), str(s.warmups), str(FORWARD[s.backend]),
                str(number_thread(s)), str(PRECISION[s.precision]), *s.extra_args]

    def unsupported_reason(self, s: ToolSettings) -> str | None:
        why = super().unsupported_reason(s)
        if why:
            return why
        if s.precision == "bf16" and s.backend != "cpu":
            return "MNN's Low_BF16 precision is a CPU mode only"
        if s.precision == "int8" and s.backend != "cpu":
            return (f"devicelab's int8 .mnn (MNN's quantizer) is a CPU model: MNN's {s.backend} backend computes "
                    f"quantized models in float or not at all")
        if s.backend == "cpu" and s.affinity == "little":
            return ("benchmark.out hard-codes BackendConfig::Power_High: MNN binds its threads to the biggest "
                    "cluster(s), so little cores cannot be asked for")
        return None

    def parse(self, stdout: str, stderr: str, exit_code: int, files: Mapping[str, str] | None = None) -> ToolRun:
        lines = lines_of(stdout, stderr)
        raw: dict[str, Any] = {}
        notes: list[str] = []
        results: list[re.Match[str]] = []
        for line in lines:
            if m := _HEADER.match(line):
                raw["forward_type"] = m["type"]
                raw.update(_KV.findall(m["rest"]))
                raw["header_style"] = "old (**)" if "**" in line else "new"
            elif m := _BENCHMARKING.match(line):
                raw["loop"] = m["loop"]
                if m["warmup"] is None:
                    raw["arg_order"] = "pre-2020-03"
                    notes.append("this benchmark.out predates its warmup argument (before 2020-03): it runs a fixed "
                                 "3 warmups and reads argv[3] as the forward type")
                else:
                    raw["warmup"] = int(m["warmup"])
            elif m := _RESULT.match(line):
                results.append(m)
                if " ms" not in line:
                    raw["result_style"] = "pre-2021-04 (%8.3fms)"
            elif m := _FALLBACK.search(line):
                raw["fallback"] = {"asked": int(m["asked"]), "used": int(m["used"])}
                notes.append(f"MNN found no backend for forward type {m['asked']} and ran type {m['used']} instead")
            elif m := _INFO.match(line):
                notes.append(f"benchmark.out: {m['msg']}")
        error_lines = [line.strip() for line in lines if any(p.search(line) for p in _ERRORS)]
        error: str | None = None
        fields: dict[str, Any] = {"raw": raw}
        plain = [m for m in results if not m["name"].startswith("quant-")]
        quant = [m for m in results if m["name"].startswith("quant-")]
        if quant:
            raw["quant"] = {m["name"]: {"max": m["max"], "min": m["min"], "avg": m["avg"]} for m in quant}
            notes.append("benchmark.out's quant- pass (testQuantizedModel=1) benchmarks a synthetic int8 rewrite of "
                         "the model; its figures are kept in raw only")
        if len({m["name"] for m in plain}) > 1:
            error = (f"benchmark.out benchmarked {len(plain)} models: it runs every file of the folder, and the run "
                     f"folder's models/ must hold one")
        elif plain:
            # MNN goes on after some of these (e.g. "Don't support type …" falls back to the CPU for that op).
            notes.extend(f"benchmark.out: {e}" for e in error_lines)
            if len(plain) > 1:  # 2023-06 builds printed the quantized pass under the same name
                raw["second_pass"] = {"max": plain[1]["max"], "min": plain[1]["min"], "avg": plain[1]["avg"]}
                notes.append("benchmark.out printed the model twice (a 2023-06 build's quantized pass has no quant- "
                             "prefix); the first line is kept")
            m = plain[0]
            raw.update(model=m["name"], max=m["max"], min=m["min"], avg=m["avg"])
            fields.update(max_s=seconds(m["max"], "ms"), min_s=seconds(m["min"], "ms"), avg_s=seconds(m["avg"], "ms"))
            if str(raw.get("loop", "")).lstrip("-").isascii() and str(raw.get("loop", "")).lstrip("-").isdigit():
                fields["count"] = int(raw["loop"])
            if "warmup" in raw:
                fields["warmups"] = raw["warmup"]
            notes.append("benchmark.out prints only max/min/avg of its loop (ms, 3 decimals): no per-iteration times")
        elif error_lines:
            error = error_lines[0]
        else:
            error = exit_error("benchmark.out", exit_code, lines, "result line")
        if error is None and exit_code != 0:
            error = f"benchmark.out exited with {exit_code}"
        return build_run(**fields, notes=tuple(notes), error=error)

    def forced(self, s: ToolSettings) -> tuple[str, ...]:
        notes = ["inputs: benchmark.out fills the input with random values (Revert::fillRandValue)"]
        if s.backend == "cpu":
            notes.append("affinity: benchmark.out hard-codes Power_High; MNN binds its threads to the biggest "
                         "cluster(s) holding that many cores, over taskset")
        elif FORWARD.get(s.backend) in GPU_FORWARDS:
            notes.append(f"threads: on {s.backend}, benchmark.out's numberThread is MNN's GPU mode; devicelab passes "
                         f"{GPU_MODE} (MNN_GPU_TUNING_WIDE, the tool's default), not {s.threads}")
        if s.precision == "fp16":
            notes.append("fp16: precision=2 (Low) is fp16 where this MNN build has it (MNN_ARM82 on CPU), else fp32")
        return tuple(notes)

    def reconcile(self, run: ToolRun, s: ToolSettings) -> ToolRun:
        run = super().reconcile(run, s)
        raw = run.raw
        if run.error is None and raw.get("arg_order") == "pre-2020-03":
            run = run.with_notes(error=f"this benchmark.out (before 2020-03) read the warmup count {s.warmups} as "
                                       f"its forward type: the run is not the config asked for")
        want = FORWARD.get(s.backend, 0)
        printed = raw.get("forward_type")
        if run.error is None and printed is not None and printed != FORWARD_NAME.get(want, "N/A"):
            run = run.with_notes(error=f"benchmark.out printed forward type {printed}; {s.backend} was asked for")
        if run.error is None and want != 0 and raw.get("fallback"):
            run = run.with_notes(error=f"backend {s.backend} asked, but MNN found no such backend in this build and "
                                       f"ran on forward type {raw['fallback']['used']}")
        for key, value in (("thread", number_thread(s)), ("precision", PRECISION.get(s.precision))):
            if key in raw and str(raw[key]) != str(value):
                run = run.with_notes(f"benchmark.out printed {key}={raw[key]}; {value} was asked for")
        if run.error is None and run.warmups is not None and run.warmups != s.warmups:
            run = run.with_notes(f"benchmark.out ran {run.warmups} warmups; {s.warmups} were asked for")
        return run


ENGINE = MnnBenchmarkTool()
