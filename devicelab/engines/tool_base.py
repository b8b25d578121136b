"""The `tool:*` engines: an engine's own benchmark binary (benchncnn, benchmark_model, MNN benchmark.out,
onnxruntime_perf_test), driven as it is, one process per config, its output parsed.

This module is the pure half: how a config becomes the tool's command line (`argv`), which files its run folder
must hold (`model_layout`), what cannot be asked of it (`unsupported_reason`), how its output reads (`parse`) and
what the output says against what was asked (`reconcile`). Pushing, running and making a Result is the device's
job. Every output format was read from the tool's own source; tests/golden/tools/ holds one file per variant.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, ClassVar

from devicelab.engines.base import Engine, PreparedModel, Session, binary_option_problems, binary_version

# A suite's `options:` for a tool engine, as for the `protocol` engine: the user's binary (built for the target), the
# shared libraries it needs (pushed beside it), and extra argv items appended verbatim (ToolSettings.extra_args).
OPTION_KEYS = ("binary", "libraries", "args")

# A number as C's printf %f/%g or C++ iostreams print it, including what they print for odd values.
NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf)(?:\(\w*\))?"

_UNIT_EXPONENT = {"s": 0, "ms": -3, "us": -6, "µs": -6, "ns": -9}


def seconds(text: str, unit: str) -> float:
    """A figure printed in `unit`, in seconds, converted in decimal: "11.74" ms is exactly float("0.01174"),
    not 11.74 / 1000 with its binary rounding."""
    try:
        value = Decimal(text.strip().split("(")[0])
    except InvalidOperation as e:
        raise ValueError(f"not a number: {text!r}") from e
    if not value.is_finite():
        return float(value)
    return float(value.scaleb(_UNIT_EXPONENT[unit]))


def number(text: str) -> float:
    return float(Decimal(text.strip().split("(")[0]))


def target_path(folder: str, name: str) -> str:
    """A file of the run folder as the target sees it (POSIX paths: host Linux/macOS and Android)."""
    return posixpath.join(folder, name) if folder else name


def lines_of(*texts: str) -> list[str]:
    out: list[str] = []
    for text in texts:
        out.extend(line.rstrip("\r") for line in (text or "").splitlines())
    return out


def first_line(lines: Iterable[str], patterns: Iterable[re.Pattern[str]]) -> str | None:
    pats = list(patterns)
    for line in lines:
        if any(p.search(line) for p in pats):
            return line.strip()
    return None


def last_words(lines: Iterable[str], limit: int = 200) -> str | None:
    """The last non-empty line, for a tool that died without its own error line."""
    kept = [line.strip() for line in lines if line.strip()]
    return kept[-1][:limit] if kept else None


def exit_error(tool: str, exit_code: int, lines: Iterable[str], what: str = "") -> str:
    """A tool that failed without its own error line: its exit status, what it did not print, its last words."""
    tail = last_words(lines)
    return f"{tool} exited with {exit_code}" + (f" and printed no {what}" if what else "") + (f": {tail}" if tail else "")


def nchw_to_ncnn_shape(shape: tuple[int, ...]) -> list[int]:
    """An NCHW-born input shape as ncnn writes it: batch dropped, the rest reversed (w, h, [d,] c)."""
    dims = list(shape)
    if len(dims) >= 2 and dims[0] == 1:
        dims = dims[1:]
    return dims[::-1]


@dataclass(frozen=True)
class ToolSettings:
    """What devicelab asks the tool for, per config."""

    threads: int
    cpus: tuple[int, ...]  # the CPUs the device pins the tool to (taskset/dlprobe); tools that re-pin their own
    # threads (benchncnn's powersave, MNN) are told `affinity`/`big_cores` instead, the only sets they can express
    precision: str  # fp32 | fp16 | bf16 | int8
    backend: str  # cpu | gpu | opencl | vulkan | metal | nnapi | coreml
    iterations: int  # exact timed runs to force (devicelab's cooldown replaces the tools' own sleeps)
    warmups: int
    big_cores: bool = True  # the cpus are the device's big cluster (benchncnn powersave=2) or not (0 = all)
    input_shapes: tuple[tuple[int, ...], ...] = ()  # model input shapes (NCHW for ONNX-born models)
    extra_args: tuple[str, ...] = ()  # the user's own extra flags, appended verbatim (as argv items)
    # The suite's affinity word when it named one ("big", "little", "all"), None for an explicit CPU list or when
    # unknown. Tools that re-pin their own threads (benchncnn, MNN) can honour only what they can express; with
    # None, big_cores decides.
    affinity: str | None = None
    # An LLM config's request shape (prompt_tokens, gen_tokens, context_depth); None for every other config.
    llm: tuple[int, int, int] | None = None


@dataclass(frozen=True)
class ToolRun:
    """What one tool run printed, in devicelab's units (seconds, bytes). No invented numbers: a field the tool
    did not print stays None (`reconcile` may add figures fixed by the tool's source, and says so in a note)."""

    samples_s: tuple[float, ...] = ()  # per-iteration times only when the tool printed them
    count: int | None = None  # timed iterations the tool reports having run
    min_s: float | None = None
    max_s: float | None = None
    avg_s: float | None = None
    std_s: float | None = None
    median_s: float | None = None  # only when printed (TFLite newer builds, ORT)
    p90_s: float | None = None
    percentiles_s: dict[str, float] = field(default_factory=dict)  # e.g. {"p5":…, "p95":…, "p99":…} when printed
    load_s: float | None = None  # init/session creation
    first_s: float | None = None  # first inference
    warmups: int | None = None
    warmup_avg_s: float | None = None
    peak_memory_bytes: int | None = None
    memory_method: str | None = None  # e.g. "ORT Peak working set size"
    ops: tuple[dict[str, Any], ...] = ()  # per-layer: {"name", "type", "s"} (avg per call) from a tool's profile
    notes: tuple[str, ...] = ()  # e.g. delegate partially applied, "Unconsumed cmdline flags: …"
    error: str | None = None  # the tool's own error line, when it failed
    raw: dict[str, Any] = field(default_factory=dict)  # every parsed figure by the tool's own name

    @property
    def summary_only(self) -> bool:
        """The tool printed summaries (min/max/avg...) but no per-iteration times: the Result stores no samples."""
        return not self.samples_s

    @property
    def ok(self) -> bool:
        return self.error is None

    def with_notes(self, *notes: str, error: str | None = None) -> ToolRun:
        new = tuple(n for n in notes if n and n not in self.notes)
        return replace(self, notes=self.notes + new, error=self.error if error is None else (self.error or error))

    def result_fields(self) -> dict[str, Any]:
        """The Result v1 fields this run fills (the device half adds config, state, timestamps...). The
        tool's summary figures that Result v1 has no field for go in `tool`, for Result.protocol."""
        return {
            "samples_s": self.samples_s, "summary_only": self.summary_only, "warmups": self.warmups,
            "median_s": self.median_s, "p90_s": self.p90_s, "load_s": self.load_s, "first_s": self.first_s,
            "peak_rss_bytes": self.peak_memory_bytes, "memory_method": self.memory_method, "notes": self.notes,
            "tool": {"count": self.count, "min_s": self.min_s, "max_s": self.max_s, "avg_s": self.avg_s,
                     "std_s": self.std_s, "percentiles_s": dict(self.percentiles_s),
                     "warmup_avg_s": self.warmup_avg_s, "ops": list(self.ops), "raw": dict(self.raw)},
        }


def build_run(samples: Iterable[float] = (), **fields: Any) -> ToolRun:
    return ToolRun(samples_s=tuple(samples), **fields)


class ToolEngine(Engine):
    """An engine's own benchmark binary, driven as it is: one process per config, output parsed.

    The binary is the user's (built for their phone); devicelab never builds it, so `version()` is None: the
    tools print no version, and the device half records what it knows of the binary instead.
    """

    tool: ClassVar[str]  # binary name, e.g. "benchncnn"
    source: ClassVar[str]  # where flags and formats were read, e.g. "Tencent/ncnn benchmark/benchncnn.cpp"
    device_kinds = ("host", "android")
    package = ""
    module = ""
    # Files (relative to the run folder) the tool writes that `parse` reads when the device hands them back:
    # {name: what it holds}. Optional: without them parse still reads stdout/stderr.
    output_files: ClassVar[dict[str, str]] = {}
    # Whether the tool reports every timed iteration (then its Results have samples, and an A/B of it can be decided);
    # the others print only summaries (min/max/avg).
    per_iteration_times: ClassVar[bool] = False

    def version(self) -> str | None:
        return None

    def version_for(self, options: dict[str, Any]) -> str | None:
        return binary_version(options)  # the tools print no version: a rebuilt tool continues the series

    def availability(self) -> tuple[bool, str | None]:
        return True, None

    def check_options(self, options: dict[str, Any]) -> list[str]:
        problems = binary_option_problems(options, OPTION_KEYS, self.name, f"the path of your {self.tool} build")
        args = options.get("args", [])
        if not isinstance(args, list) or not all(isinstance(x, str) for x in args):
            problems.append(f"options.args: must be a list of strings (extra {self.tool} arguments, one per item)")
        return problems

    def user_runner(self, options: dict[str, Any]) -> tuple[Path, tuple[Path, ...]] | None:
        return Path(options["binary"]), tuple(Path(x) for x in options.get("libraries", []))

    @staticmethod
    def extra_args(options: dict[str, Any]) -> tuple[str, ...]:
        """ToolSettings.extra_args from a suite's options."""
        return tuple(options.get("args", ()))

    def open_session(self, config: dict[str, Any]) -> Session:
        raise NotImplementedError(f"{self.name} runs its own binary ({self.tool}); it has no in-process session")

    # ---- the pure interface the device half drives ----

    def model_layout(self, prepared: PreparedModel) -> dict[str, Path]:
        """Files the run folder must hold: {relative name: local path}."""
        raise NotImplementedError

    def argv(self, binary: str, folder: str, s: ToolSettings) -> list[str]:
        """The command as the target sees it: `binary` and `folder` (the run folder holding model_layout's
        files) are target paths. No shell quoting here: the device quotes every item. Only for settings
        that `unsupported_reason` accepts."""
        raise NotImplementedError

    def parse(self, stdout: str, stderr: str, exit_code: int, files: Mapping[str, str] | None = None) -> ToolRun:
        """What the tool printed. `files`: the contents of `output_files` the device read back, if any."""
        raise NotImplementedError

    # Flags that make the tool print per-op times, for a profiling pass of its own after the timed run (None: this
    # adapter has none; the row's profile then says why).
    profile_flags: ClassVar[tuple[str, ...] | None] = None
    no_profile: ClassVar[str] = "this tool adapter has no per-op profiling pass"

    def profile(self, run: ToolRun, iterations: int, median_s: float | None) -> dict[str, Any]:
        """ext.profile from the profiling pass's parsed run (its `ops`)."""
        from devicelab import opprof

        return opprof.unsupported(self.no_profile)

    def unsupported_reason(self, s: ToolSettings) -> str | None:
        """Why this tool cannot be asked for this config (a precision or backend it has no flag for), or None."""
        if s.precision not in self.precisions:
            return self.unsupported.get(s.precision, f"{self.tool} has no {s.precision} mode")
        if s.backend not in self.backends:
            return self.unsupported.get(s.backend, f"{self.tool} cannot run on backend '{s.backend}'")
        if s.threads < 1:
            return f"{self.tool} needs at least 1 thread"
        if s.iterations < 1:
            return f"{self.tool} needs at least 1 timed iteration"
        return None

    def forced(self, s: ToolSettings) -> tuple[str, ...]:
        """What `argv` could not force for these settings (argv's companion): notes for the Result."""
        return ()

    def reconcile(self, run: ToolRun, s: ToolSettings) -> ToolRun:
        """The run against what was asked: `forced`'s notes, a count that differs from the iterations asked,
        and (per tool) a backend asked for but not applied, which becomes an error."""
        run = run.with_notes(*self.forced(s))
        if run.error is None and run.count is not None and run.count != s.iterations:
            run = run.with_notes(f"{self.tool} reports {run.count} timed runs; {s.iterations} were asked for")
        return run
