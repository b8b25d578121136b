"""tool:onnxruntime_perf_test — ONNX Runtime's own benchmark binary (microsoft/onnxruntime
onnxruntime/test/perftest), driven as it is.

    onnxruntime_perf_test -m times -r N -x THREADS -e EP -I -s [-i "EP options"] FOLDER/model.onnx FOLDER/result.txt

The default test mode is a 600 s duration: `-m times -r N` forces exactly N timed runs (newer builds also switch
to times mode when -r is given). PerformanceRunner::Run always runs exactly one warmup first (its "First inference
time cost", printed in whole milliseconds); there is no flag for more. `-I` generates the inputs (there is no
test_data_set folder). The positional result file receives one line per timed run, "model,seconds,peak,cpu,run",
which is the one source of per-iteration times among these tools; `-s` keeps the percentile lines on stdout too.
Means print in ms, percentiles and the result file in s, memory in bytes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from devicelab.engines.base import PreparedModel, SourceModel
from devicelab.engines.tool_base import (NUMBER, ToolEngine, ToolRun, ToolSettings, build_run, exit_error, lines_of,
                                         number, seconds, target_path)

MODEL, RESULT_FILE = "model.onnx", "perf_test_result.txt"
WARMUPS = 1  # performance_runner.cc: RunOneIteration<true>() once before the timed runs

_EP = {"cpu": "cpu", "nnapi": "nnapi"}
_LINE = {
    "Session creation time cost": ("load_s", "s"),
    "First inference time cost": ("first_s", "ms"),
    "Total inference time cost": (None, "s"),
    "Average inference time cost": ("avg_s", "ms"),
    "Average inference time cost total": ("avg_s", "ms"),
    "Total inference run time": (None, "s"),
    # 2019 builds: "Total time cost:X", "Total iterations:N", "Average time cost:X ms".
    "Average time cost": ("avg_s", "ms"),
    "Total time cost": (None, "s"),
}
_COUNT = ("Total inference requests", "Total iterations")
_VALUE = re.compile(rf"^(?P<key>[A-Za-z][A-Za-z ]*?):\s*(?P<value>{NUMBER})\s*(?P<unit>s|ms|%|bytes)?\s*$")
_LATENCY = re.compile(rf"^(?P<which>Min|Max|P\d+) Latency(?::| is) *(?P<value>{NUMBER}) ?(?:s|sec)\s*$")
_ITERATION = re.compile(rf"^iteration:(?P<n>\d+),time_cost:(?P<s>{NUMBER})\s*$")
_RESULT_ROW = re.compile(rf"^(?P<model>.*),(?P<s>{NUMBER}),(?P<peak>\d+),(?P<cpu>-?\d+),(?P<run>\d+)\s*$")
# ORT's default logger: "2026-05-01 12:00:00.123456789 [W:onnxruntime:Default, file.cc:42 Func] message"
_ORT_LOG = re.compile(r"\[(?P<sev>[VIWEF]):onnxruntime:[^\]]*\]\s*(?P<msg>.*)$")
_ERRORS = [re.compile(p) for p in (
    r"^Run failed:",
    r"^there is no test (?:input )?data for",
    r"^input path is not a valid model",
    r"^failed to initialize",
    r"^Error creating environment",
    r"^ERROR: ",  # absl flags: "ERROR: Unknown command line flag 'foo'"
    r"is not supported in this build",
    r"This backend is not included in perf test runner",
    r"\[ONNXRuntimeError\]",
    r"^Load model from .* failed",
    r"^See 'onnxruntime_perf_test --help'",
)]


class OnnxRuntimePerfTestTool(ToolEngine):
    name = "tool:onnxruntime_perf_test"
    tool = "onnxruntime_perf_test"
    source = ("microsoft/onnxruntime onnxruntime/test/perftest/{main.cc, command_args_parser.cc @ 011738c, "
              "performance_runner.{h,cc} @ 77e6dc9/f8b74ff, ort_test_session.cc, posix/utils.cc}")
    formats = ("onnx",)
    precisions = ("fp32", "fp16", "int8")
    backends = ("cpu", "nnapi")
    output_files = {RESULT_FILE: "one line per timed run: model,seconds,peak working set,cpu %,run index (the tool "
                                 "appends: the file must not exist before the run)"}
    per_iteration_times = True  # its result file: one line per timed run
    unsupported = {
        "bf16": "onnxruntime_perf_test has no bf16 mode (ORT's CPU and NNAPI EPs have no bf16 switch)",
        "gpu": "this adapter maps ORT's cpu and nnapi execution providers only",
        "opencl": "this adapter maps ORT's cpu and nnapi execution providers only",
        "vulkan": "ONNX Runtime has no Vulkan execution provider",
        "metal": "this adapter maps ORT's cpu and nnapi execution providers only",
        "coreml": "ORT's Core ML EP needs an Apple host; this adapter maps cpu and nnapi only",
    }

    def prepare(self, model: SourceModel, precision: str, cache_dir: Path) -> PreparedModel:
        from devicelab.engines.onnxruntime import ENGINE as ORT

        # The onnxruntime engine's conversions and cache: the ONNX file as is, its fp16 graph, its QDQ int8.
        return ORT.prepare(model, precision, cache_dir.parent / "onnxruntime")

    def model_layout(self, prepared: PreparedModel) -> dict[str, Path]:
        return {MODEL: prepared.path}

    def argv(self, binary: str, folder: str, s: ToolSettings) -> list[str]:
        args = [binary, "-m", "times", "-r", str(s.iterations), "-x", str(s.threads), "-e", _EP[s.backend], "-I",
                "-s"]
        if s.backend == "nnapi" and s.precision == "fp16":
            args += ["-i", "NNAPI_FLAG_USE_FP16"]
        return [*args, *s.extra_args, target_path(folder, MODEL), target_path(folder, RESULT_FILE)]

    def parse(self, stdout: str, stderr: str, exit_code: int, files: Mapping[str, str] | None = None) -> ToolRun:
        lines = lines_of(stdout, stderr)
        raw: dict[str, Any] = {}
        notes: list[str] = []
        fields: dict[str, Any] = {"raw": raw}
        percentiles: dict[str, float] = {}
        iterations: list[float] = []
        log_errors: list[str] = []
        for line in lines:
            text = line.strip()
            if m := _ORT_LOG.search(text):
                if m["sev"] in ("E", "F"):
                    log_errors.append(m["msg"])
                elif m["sev"] == "W":
                    raw.setdefault("warnings", []).append(m["msg"])
                    if "not assigned to the preferred execution providers" in m["msg"]:
                        notes.append("ORT: some nodes run on the CPU EP, not the one asked for")
                continue
            if m := _LATENCY.match(text):
                value = seconds(m["value"], "s")
                key = m["which"].lower()
                raw[f"{m['which']} Latency"] = m["value"]
                if key == "min":
                    fields["min_s"] = value
                elif key == "max":
                    fields["max_s"] = value
                elif key == "p50":
                    fields["median_s"] = value
                elif key == "p90":
                    fields["p90_s"] = value
                else:
                    percentiles[key] = value
            elif m := _ITERATION.match(text):
                iterations.append(seconds(m["s"], "s"))
            elif m := _VALUE.match(text):
                key, value, unit = m["key"].strip(), m["value"], m["unit"]
                compact = ":" in text and ": " not in text  # DumpToFile's "Avg CPU usage:11" / "Runs:5" lines
                raw[key + (" (compact)" if compact else "")] = value
                if key in _LINE:
                    target, want_unit = _LINE[key]
                    if target:
                        fields[target] = seconds(value, unit or want_unit)
                elif key in _COUNT or (key == "Runs" and "count" not in fields):
                    fields["count"] = int(number(value))
                elif key == "Peak working set size":
                    fields["peak_memory_bytes"] = int(number(value))
                    fields["memory_method"] = "ORT Peak working set size (getrusage ru_maxrss × 1024 on Linux/Android)"
            elif text.startswith("Setting intra_op_num_threads to "):
                raw["intra_op_num_threads"] = text.rsplit(" ", 1)[-1]
        if percentiles:
            fields["percentiles_s"] = percentiles
        if "First inference time cost" in raw:
            notes.append("first inference: printed in whole milliseconds (truncated)")
        samples: list[float] = []
        content = (files or {}).get(RESULT_FILE)
        if content:
            rows = [m for m in (_RESULT_ROW.match(r.strip()) for r in content.splitlines()) if m]
            samples = [seconds(m["s"], "s") for m in rows]
            if rows:
                raw["result_file_rows"] = len(rows)
                notes.append(f"per-iteration times from the result file ({RESULT_FILE}; seconds, 6 significant "
                             f"digits)")
        elif iterations:
            samples = iterations
            notes.append("per-iteration times from -v's iteration lines (seconds, 6 significant digits)")
        elif fields.get("count") is not None:
            notes.append("onnxruntime_perf_test printed summaries only (no result file read back): min/max/"
                         "percentiles, no per-iteration times")
        tool_errors: list[str] = []
        for line in lines:
            text = line.strip()
            if not _ORT_LOG.search(text) and any(p.search(text) for p in _ERRORS):
                tool_errors.append(text)
        # "See 'onnxruntime_perf_test --help'." only closes a bad command line: the line before it is the cause.
        causes = [e for e in tool_errors if not e.startswith("See 'onnxruntime_perf_test")] or tool_errors
        finished = exit_code == 0 and (fields.get("count") is not None or samples) and not tool_errors
        error: str | None = None
        if not finished and (causes or log_errors):
            error = (causes + log_errors)[0]
        elif not finished and exit_code != 0:
            error = exit_error("onnxruntime_perf_test", exit_code, lines)
        elif not finished:
            error = "onnxruntime_perf_test printed no results"
        else:
            notes.extend(f"ORT logged an error: {e}" for e in log_errors)
        return build_run(samples, **fields, notes=tuple(notes), error=error)

    def forced(self, s: ToolSettings) -> tuple[str, ...]:
        notes = ["inputs: generated by the tool (-I)"]
        if s.warmups != WARMUPS:
            notes.append(f"warmups: onnxruntime_perf_test always runs exactly {WARMUPS} warmup (fixed in "
                         f"performance_runner.cc); devicelab's {s.warmups} cannot be asked for")
        if s.backend == "nnapi":
            notes.append("nnapi: ORT's NNAPI EP takes the nodes it supports; the rest runs on the CPU EP")
        return tuple(notes)

    def reconcile(self, run: ToolRun, s: ToolSettings) -> ToolRun:
        run = super().reconcile(run, s)
        if run.error is None and run.warmups is None and "First inference time cost" in run.raw:
            run = replace(run, warmups=WARMUPS)  # fixed by the source; forced() says so when it differs
        if run.error is None and run.samples_s and run.count is not None and len(run.samples_s) != run.count:
            run = run.with_notes(f"the result file holds {len(run.samples_s)} runs; the tool reports {run.count} "
                                 f"(was it left over from an earlier run? the tool appends)")
        threads = run.raw.get("intra_op_num_threads")
        if threads is not None and threads != str(s.threads):
            run = run.with_notes(f"onnxruntime_perf_test set intra_op_num_threads to {threads}; {s.threads} was asked")
        return run


ENGINE = OnnxRuntimePerfTestTool()
