"""tool:benchmark_model — TFLite/LiteRT's own benchmark binary (tflite/tools/benchmark), driven as it is.

    benchmark_model --graph=FOLDER/model.tflite --num_threads=T --num_runs=N --min_secs=0 --max_secs=3600
                    --warmup_runs=W --warmup_min_secs=0 --run_delay=-1 [delegate flags]

Exact counts: BenchmarkModel::Run loops while (run < num_runs || now < min_finish) && now <= max_finish, so
min_secs=0 and warmup_min_secs=0 make the counts exact unless max_secs cuts the run short (then the printed count
says so). Lines go to stdout with an "INFO: "/"WARN: " prefix (none before ~2020), errors to stderr ("ERROR: ").
Stats come from tsl::Stat(WithPercentiles)::OutputToStream in microseconds; the tool prints only summaries.
fp16 is asked of the delegate on the fp32 model: XNNPACK's force-fp16 flag on CPU (XNNPACK ignores --allow_fp16),
the GPU delegate's precision loss, NNAPI's fp16 relaxation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from devicelab.engines.base import PreparedModel, SourceModel
from devicelab.engines.tool_base import (NUMBER, ToolEngine, ToolRun, ToolSettings, build_run, exit_error, lines_of,
                                         number, seconds, target_path)

MODEL = "model.tflite"
MAX_SECS = 3600  # a ceiling only: the counts are forced by num_runs with min_secs=0

# tflite/tools/logging.h (INFO/WARN on stdout, ERROR/FATAL on stderr) and the runtime's minimal logging (stderr).
_PREFIX = re.compile(r"^(?:(?P<sev>INFO|WARN|WARNING|ERROR|FATAL|VERBOSE): )?(?P<msg>.*)$")
_STATS = re.compile(r"^count=\d+")
_RUNNING = re.compile(r"^Running benchmark for at least (?P<n>\d+) iterations and at least (?P<min>\S+) seconds")
_TIMINGS = re.compile(r"^(?P<kind>Average inference|Inference) timings in us: (?P<rest>.*)$")
_TIMING_ITEM = re.compile(rf"(?P<key>[A-Za-z][A-Za-z ()]*?):\s*(?P<value>{NUMBER})")
_INIT = re.compile(rf"^Initialized session in (?P<ms>{NUMBER})\s*ms\.?")
_SIZE = re.compile(rf"^The input model file size \(MB\): (?P<mb>{NUMBER})")
_DELTA = re.compile(rf"^Memory footprint delta from the start of the tool \(MB\): init=(?P<init>{NUMBER}) "
                    rf"overall=(?P<overall>{NUMBER})")
_PEAK = re.compile(rf"^Overall peak memory footprint \(MB\) via periodic monitoring: (?P<mb>{NUMBER})")
_PARAM = re.compile(r"^(?P<desc>[^:\[\]]+): \[(?P<value>.*)\]$")
_APPLIED = re.compile(r"^(?:Explicitly applied|Applied) (?P<d>\S+) delegate, and the model graph will be "
                      r"(?P<how>completely|partially) executed(?: by| w/) the delegate"
                      r"(?: w/ (?P<k>\d+) delegate kernels)?")
_NOT_APPLIED = re.compile(r"^Though (?P<d>\S+) delegate is explicitly applied, the model graph will not be executed")
_APPLY_FAILED = re.compile(r"^Failed to apply (?P<d>\S+) delegate")
_PLATFORM = re.compile(r"^(?P<what>GPU|NNAPI|Hexagon|Core ?ML) acceleration is unsupported on this platform")
_UNCONSUMED = re.compile(r"^Unconsumed cmdline flags: (?P<flags>.*)$")
_SECTION = re.compile(r"^=+ (?P<title>.+?) =+$")
_BLOCK_INIT = "Profiling Info for Benchmark Initialization:"
_BLOCK_RUN = "Operator-wise Profiling Info for Regular Benchmark Runs:"

# Op-profile column names (tab mode "[avg ms]" and csv mode "avg_ms") to ours.
_COLUMNS = {"node type": "type", "name": "name", "first": "first_ms", "avg ms": "avg_ms", "avg_ms": "avg_ms",
            "start": "start_ms", "%": "percent", "cdf%": "cdf_percent", "mem kb": "mem_kb",
            "times called": "times_called", "count": "count", "avg %": "percent", "cdf %": "cdf_percent"}


def _stats(msg: str) -> dict[str, Any]:
    """count=N first=F curr=C min=m max=M avg=A std=S [p5=… median=… p95=…], or count=N curr=C(all same), or
    count=0 (tsl::Stat::OutputToStream; "(all same)" follows curr= with no space)."""
    values = dict(re.findall(rf"(\w+)=({NUMBER})", msg))
    out: dict[str, Any] = {"count": int(values.pop("count")), "all_same": "(all same)" in msg}
    out.update(values)
    return out


def _profile_table(header: str, rows: list[str]) -> list[dict[str, str]]:
    sep = "\t" if "\t" in header else ","
    names = [c.strip().strip("[]").lower() for c in header.split(sep)]
    table = []
    for row in rows:
        cells = [c.strip() for c in row.split(sep)]  # tab mode starts header and rows with a tab: "" first
        if sep == "," and len(cells) > len(names):  # names may hold commas only in csv mode's last column
            cells = cells[:len(names) - 1] + [",".join(cells[len(names) - 1:])]
        table.append({_COLUMNS.get(n, n): c for n, c in zip(names, cells) if n})
    return table


class BenchmarkModelTool(ToolEngine):
    name = "tool:benchmark_model"
    tool = "benchmark_model"
    source = ("google-ai-edge/LiteRT tflite/tools/benchmark/benchmark_model.cc, benchmark_tflite_model.cc, "
              "tflite/tools/delegates/*_delegate_provider.cc, tflite/profiling/profile_summary_formatter.cc @ "
              "f674577 (2026-08); tsl stats_calculator.{h,cc} (tensorflow/tensorflow third_party/xla)")
    formats = ("tflite",)  # written by devicelab for zoo models (the litert engine's conversion)
    precisions = ("fp32", "fp16", "int8")
    backends = ("cpu", "gpu", "opencl", "nnapi")
    unsupported = {
        "bf16": "benchmark_model has no bf16 mode (no delegate flag asks for bf16)",
        "vulkan": "TFLite's GPU delegate runs OpenCL or OpenGL, not Vulkan",
        "metal": "benchmark_model's Metal (GPU) delegate is for iOS, which this adapter does not drive",
        "coreml": "benchmark_model's Core ML delegate is for iOS, which this adapter does not drive",
    }

    def availability(self) -> tuple[bool, str | None]:
        from devicelab.engines.litert import ENGINE as LITERT

        return LITERT.availability()  # devicelab writes the zoo's .tflite with ai-edge-litert's schema

    def prepare(self, model: SourceModel, precision: str, cache_dir: Path) -> PreparedModel:
        from devicelab.engines.litert import ENGINE as LITERT

        # fp16 is asked of the delegate at run time, on the fp32 model; int8 is the litert engine's full-integer model.
        prepared = LITERT.prepare(model, "int8" if precision == "int8" else "fp32", cache_dir.parent / "litert")
        notes = prepared.notes
        if precision == "fp16":
            notes += ("fp16: the fp32 model, with fp16 asked of the delegate (XNNPACK force-fp16, GPU precision "
                      "loss, NNAPI fp16 relaxation)",)
        return replace(prepared, notes=notes)

    profile_flags = ("--enable_op_profiling=true", "--op_profiling_output_mode=stdout")

    def model_layout(self, prepared: PreparedModel) -> dict[str, Path]:
        return {MODEL: prepared.path}

    def profile(self, run: ToolRun, iterations: int, median_s: float | None) -> dict[str, Any]:
        return op_profile(run.ops, iterations, median_s, run.median_s or run.avg_s)

    def delegate_flags(self, s: ToolSettings) -> list[str]:
        fp16 = "true" if s.precision == "fp16" else "false"
        if s.backend == "cpu":
            # Explicit XNNPACK: the same delegate the runtime applies by default, but it prints whether it applied,
            # and only the explicit one takes xnnpack_force_fp16.
            return ["--use_xnnpack=true"] + (["--xnnpack_force_fp16=true"] if s.precision == "fp16" else [])
        if s.backend in ("gpu", "opencl"):
            return ["--use_gpu=true", f"--gpu_precision_loss_allowed={fp16}"] + (
                ["--gpu_backend=cl"] if s.backend == "opencl" else [])
        if s.backend == "nnapi":
            return ["--use_nnapi=true", f"--nnapi_allow_fp16={fp16}"]
        return []

    def argv(self, binary: str, folder: str, s: ToolSettings) -> list[str]:
        return [binary, f"--graph={target_path(folder, MODEL)}", f"--num_threads={s.threads}",
                f"--num_runs={s.iterations}", "--min_secs=0", f"--max_secs={MAX_SECS}",
                f"--warmup_runs={s.warmups}", "--warmup_min_secs=0", "--run_delay=-1",
                *self.delegate_flags(s), *s.extra_args]

    def unsupported_reason(self, s: ToolSettings) -> str | None:
        why = super().unsupported_reason(s)
        if why:
            return why
        if s.precision == "int8" and s.backend in ("gpu", "opencl"):
            return "TFLite's GPU delegate dequantizes int8 models and computes in float: no int8 arithmetic"
        return None

    def parse(self, stdout: str, stderr: str, exit_code: int, files: Mapping[str, str] | None = None) -> ToolRun:
        raw: dict[str, Any] = {"params": {}, "delegates": {}}
        notes: list[str] = []
        errors: list[str] = []
        stats: list[dict[str, Any]] = []
        timings: dict[str, str] = {}
        ops: list[dict[str, Any]] = []
        profile: dict[str, list[dict[str, str]]] = {}
        block: str | None = None  # None, "init" or "run": which profiling block continuation lines belong to
        section: str | None = None
        header: str | None = None
        rows: list[str] = []
        delegate_internal = False

        def close_section() -> None:
            nonlocal header, rows
            if block == "run" and section and header is not None:
                table = _profile_table(header, rows)
                profile.setdefault(("delegate internal: " if delegate_internal else "") + section, []).extend(table)
                if section == "Run Order":
                    for row in table:
                        if "avg_ms" in row and row.get("name") is not None:
                            op: dict[str, Any] = {"name": row["name"], "type": row.get("type", ""),
                                                  "s": seconds(row["avg_ms"], "ms")}
                            if "times_called" in row:
                                op["calls_per_run"] = int(number(row["times_called"]))
                            if delegate_internal:
                                op["delegate_internal"] = True
                            if row["name"].startswith("Delegate/"):
                                # A delegate's own per-operator row (XNNPACK): its time is inside the fused
                                # delegate node's row as well.
                                op["inside_delegate"] = True
                            ops.append(op)
            header, rows = None, []

        err_lines = lines_of(stderr)
        for line in lines_of(stdout) + err_lines:
            m = _PREFIX.match(line)
            assert m is not None
            sev, msg = m["sev"], m["msg"].strip()
            if block is not None and not sev:
                # Continuation lines of a profiling block (it is one log message: only its first line has a prefix).
                if m2 := _SECTION.match(msg):
                    close_section()
                    section = m2["title"]
                    continue
                if msg.startswith("Delegate internal:"):
                    close_section()
                    delegate_internal, section = True, None
                    continue
                if section is not None and header is None and ("[" in line or "," in line) and msg:
                    header = line
                    continue
                if header is not None:
                    if msg:
                        rows.append(line)
                    else:
                        close_section()
                        section = None
                    continue
                if _STATS.match(msg) is None and _TIMINGS.match(msg) is None:
                    continue  # e.g. "Timings (microseconds): …", "Number of nodes executed: …"
            if msg in (_BLOCK_INIT, _BLOCK_RUN):
                close_section()
                block, section, delegate_internal = ("init" if msg == _BLOCK_INIT else "run"), None, False
                continue
            if sev:
                close_section()
                block = None
            if sev in ("ERROR", "FATAL"):
                errors.append(msg)
                continue
            if _STATS.match(msg):
                stats.append(_stats(msg))
            elif mm := _RUNNING.match(msg):
                raw.setdefault("asked", []).append({"runs": int(mm["n"]), "min_secs": mm["min"]})
            elif mm := _TIMINGS.match(msg):
                raw["timings_line"] = mm["kind"]
                timings.update({i["key"].strip(): i["value"] for i in _TIMING_ITEM.finditer(mm["rest"])})
            elif mm := _INIT.match(msg):
                raw["initialized_ms"] = mm["ms"]
            elif mm := _SIZE.match(msg):
                raw["model_size_mb"] = mm["mb"]
            elif mm := _DELTA.match(msg):
                raw["footprint_delta_mb"] = {"init": mm["init"], "overall": mm["overall"]}
            elif mm := _PEAK.match(msg):
                raw["peak_footprint_mb"] = mm["mb"]
            elif mm := _APPLIED.match(msg):
                how = "full" if mm["how"] == "completely" else "partial"
                raw["delegates"][mm["d"]] = how if how == "full" else f"partial: {mm['k'] or '?'} kernels"
                if how == "partial":
                    notes.append(f"{mm['d']} delegate partially applied ({mm['k'] or '?'} delegate kernels): "
                                 "the rest of the graph runs on TFLite's CPU kernels")
            elif mm := _NOT_APPLIED.match(msg):
                raw["delegates"][mm["d"]] = "none"
                notes.append(f"{mm['d']} delegate applied but takes no node of the graph: all of it runs on the CPU")
            elif mm := _PLATFORM.match(msg):
                raw.setdefault("unsupported_platform", []).append(mm["what"])
                notes.append(msg)
            elif mm := _UNCONSUMED.match(msg):
                notes.append(f"benchmark_model ignored flags it does not know: {mm['flags']}")
            elif mm := _PARAM.match(msg):
                raw["params"][mm["desc"].strip()] = mm["value"]
            elif mm := _APPLY_FAILED.match(msg):
                errors.append(msg)
        close_section()
        if profile:
            raw["profile"] = profile

        fields: dict[str, Any] = {"raw": raw, "ops": tuple(ops)}
        # The warmup Run() always prints its stats line first (count=0 without warmups), then the timed one.
        warm = stats[0] if stats else None
        regular = stats[1] if len(stats) > 1 else None
        raw["stats_us"] = stats

        def stat_seconds(st: dict[str, Any], key: str) -> float | None:
            value = st.get(key)
            if value is None and (st.get("all_same") or st["count"] == 1) and key in ("first", "min", "max", "avg"):
                value = st.get("curr")  # one value (or all the same): it is also the first, min, max and avg
            if value is None and key == "std" and (st.get("all_same") or st["count"] == 1):
                value = "0"
            return seconds(value, "us") if value is not None else None

        if warm is not None:
            fields["warmups"] = warm["count"]
            if warm["count"] > 0:
                fields["warmup_avg_s"] = stat_seconds(warm, "avg")
                fields["first_s"] = stat_seconds(warm, "first")
        if regular is not None:
            fields["count"] = regular["count"]
            if regular["count"] > 0:
                for key in ("min", "max", "avg", "std"):
                    fields[f"{key}_s"] = stat_seconds(regular, key)
                if "median" in regular:
                    fields["median_s"] = seconds(regular["median"], "us")
                    fields["percentiles_s"] = {k: seconds(regular[k], "us") for k in ("p5", "p95") if k in regular}
                if fields.get("first_s") is None:
                    fields["first_s"] = stat_seconds(regular, "first")  # no warmup: the first timed run was first
        # The timings line (µs): "Inference timings in us: Init: …, First inference: …, Warmup (avg): …,
        # Inference (avg): …"; older "Average inference timings in us: Warmup: …, Init: …, Inference: …" (or
        # "no stats: …"). Init is an exact integer; the others fill what the stats lines did not.
        if "Init" in timings:
            fields["load_s"] = seconds(timings["Init"], "us")
        elif "initialized_ms" in raw:
            fields["load_s"] = seconds(raw["initialized_ms"], "ms")
        if fields.get("avg_s") is None:
            for key in ("Inference (avg)", "Inference", "no stats"):
                if key in timings:
                    fields["avg_s"] = seconds(timings[key], "us")
                    break
        if fields.get("warmup_avg_s") is None and fields.get("warmups", 1):
            for key in ("Warmup (avg)", "Warmup"):
                if key in timings:
                    fields["warmup_avg_s"] = seconds(timings[key], "us")
                    break
        if fields.get("first_s") is None and "First inference" in timings and fields.get("warmups", 1):
            fields["first_s"] = seconds(timings["First inference"], "us")
        raw["timings_us"] = timings
        if "peak_footprint_mb" in raw:
            interval = raw["params"].get("Memory footprint check interval (ms)", "50")
            fields["peak_memory_bytes"] = int(Decimal(raw["peak_footprint_mb"]) * (1 << 20))
            fields["memory_method"] = (f"TFLite periodic monitoring ({interval} ms): peak of ru_maxrss (MiB printed "
                                       f"to 6 significant digits)")
        if fields.get("count") is not None:
            notes.append("benchmark_model prints only summaries (count/min/max/avg/std, µs): no per-iteration times")

        # The first error line is the cause; "Benchmarking failed." only closes the run. A run that finished (exit
        # 0, timed stats printed) may still have logged errors, e.g. a delegate declining some nodes: notes then.
        # (adb shell before Android 7 always exits 0: "Benchmarking failed." and missing stats still tell.)
        causes = [e for e in errors if e != "Benchmarking failed."]
        failed = exit_code != 0 or regular is None or len(causes) < len(errors)
        error: str | None = None
        if failed and errors:
            error = (causes or errors)[0]
        elif failed and exit_code != 0:
            error = exit_error("benchmark_model", exit_code, err_lines)
        elif failed:
            error = "benchmark_model printed no stats for the timed runs"
        else:
            notes.extend(f"benchmark_model logged: {e}" for e in causes)
        return build_run(**fields, notes=tuple(notes), error=error)

    def forced(self, s: ToolSettings) -> tuple[str, ...]:
        notes = []
        if s.precision == "fp16" and s.backend == "cpu":
            notes.append("fp16 on CPU: XNNPACK's force-fp16 (fp16 arithmetic where the CPU has it; XNNPACK fails to "
                         "apply where it has no fp16 kernels)")
        return tuple(notes)

    def reconcile(self, run: ToolRun, s: ToolSettings) -> ToolRun:
        run = super().reconcile(run, s)
        if run.error is None and run.warmups is not None and run.warmups != s.warmups:
            run = run.with_notes(f"benchmark_model ran {run.warmups} warmups; {s.warmups} were asked for")
        expected = {"gpu": "GPU", "opencl": "GPU", "nnapi": "NNAPI"}.get(s.backend, "XNNPACK")
        applied = run.raw.get("delegates", {}).get(expected)
        if run.error is None and s.backend != "cpu" and applied in (None, "none"):
            why = "; ".join(n for n in run.notes if "unsupported on this platform" in n) or (
                "the tool printed no delegate line")
            run = run.with_notes(error=f"backend {s.backend} asked, but the {expected} delegate was not applied "
                                       f"({why}): the model ran on the CPU")
        elif run.error is None and s.backend == "cpu" and applied is None:
            run = run.with_notes("the XNNPACK delegate was not reported applied (an old build without --use_xnnpack "
                                 "runs TFLite's own CPU kernels)")
        return run


ENGINE = BenchmarkModelTool()


def op_profile(ops: Sequence[Mapping[str, Any]], iterations: int, median_s: float | None,
               wall_s: float | None = None) -> dict[str, Any]:
    """ext.profile from benchmark_model's "Run Order" table (its `ops`). With XNNPACK the delegate's row holds the
    whole delegated graph, and XNNPACK's own rows (`Delegate/Convolution (NHWC, F32) IGEMM:0`) split it: those are
    the ops then, the delegate row dropped so no time counts twice. An XNNPACK row is typed by the operator before
    its parenthesis (`Convolution`, `Fully Connected`, `Mean`), DWConv marking a depthwise one. `wall_s`: the
    profiling run's own time per run (its median, else its average), for the profiling overhead."""
    from devicelab import opprof

    inside = [op for op in ops if op.get("inside_delegate")]
    delegated = bool(inside)
    rows = inside if delegated else [op for op in ops if not op.get("delegate_internal")]
    out = []
    for op in rows:
        kind = str(op.get("type", ""))
        base = kind.split(" (")[0]
        out.append({"name": str(op.get("name", "")), "type": kind, "s": float(op["s"]),
                    "hint": {"original_type": base, "depthwise": "DWConv" in kind},
                    **({"extra": {"calls_per_run": op["calls_per_run"]}} if "calls_per_run" in op else {})})
    notes = ["benchmark_model --enable_op_profiling=true in a second run of the tool after the timed one: 'avg ms' "
             "of its Run Order table"]
    if delegated:
        notes.append("XNNPACK ran the graph: its own per-operator rows are the ops (the delegate node's row, which "
                     "holds them all, is left out); XNNPACK's rows name no model node")
    return opprof.build(out, engine="litert", engine_source="benchmark_model --enable_op_profiling",
                        iterations=iterations, median_s=median_s, node_link="none", notes=notes, wall_s=wall_s)
