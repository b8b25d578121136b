"""tool:llama-bench — llama.cpp's own benchmark (tools/llama-bench/llama-bench.cpp), driven as it is, for LLM configs.

    llama-bench -m FOLDER/model.gguf -p P -n G -d D -t THREADS -r REPS --delay 0 -o json

Flags and output read from the llama.cpp that devicelab builds (the llama-cpp-python 0.3.36 sdist's vendor/llama.cpp,
commit 0c1e57098: `devicelab build-native --llm` registers its llama-bench beside dlllm); a user may name another
build in options.binary. What the source fixes and devicelab cannot change (each becomes a note):
* `-p P -n G` are two tests, not one request: a prompt test (P tokens, n_gen 0) and a generation test (G tokens,
  n_prompt 0), each after clearing the KV cache and, with `-d D`, restoring D tokens of depth (decoded once, then
  restored from a saved state, untimed). The generation test's tokens follow the depth directly, not a prompt.
* Before the repetitions one warmup prompt run and one warmup generated token are run and not reported.
* Token ids are random (std::rand), the first one BOS; no logits are kept.
* samples_ns are whole tests: the prompt test's are prefill times, the generation test's G decode steps together.
The stdout is one JSON array, one object per test: fields of test::get_fields(), then samples_ns and samples_ts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from devicelab.engines.base import PreparedModel, SourceModel
from devicelab.engines.tool_base import ToolEngine, ToolRun, ToolSettings, build_run, exit_error, first_line, lines_of, \
    target_path

MODEL = "model.gguf"
# llama-bench.cpp: the warmup before each test's repetitions (test_prompt once; test_gen of 1 token).
WARMUP_NOTE = ("llama-bench runs one untimed warmup before each test (a whole prompt for the prompt test, one token "
               "for the generation test); devicelab's warmup settings do not apply")
TESTS_NOTE = ("llama-bench times the prompt (pp) and generation (tg) as two tests, each from an emptied KV cache plus "
              "the depth; its samples are per-token decode times of the tg test (samples_ns / G)")
KEPT = ("build_commit", "build_number", "cpu_info", "backends", "model_type", "model_size", "model_n_params",
        "n_batch", "n_ubatch", "n_threads", "cpu_mask", "poll", "type_k", "type_v", "flash_attn", "repack",
        "n_prompt", "n_gen", "n_depth", "avg_ns", "stddev_ns", "avg_ts", "stddev_ts", "samples_ns", "samples_ts")
_ERRORS = [re.compile(p) for p in (
    r"error: invalid parameter for argument",
    r"error: unknown argument",
    r"error: failed to load model",
    r"error: failed to create context",
    r"failed to decode (prompt|generation) batch",
    r"error: failed to run (prompt|gen|depth)",
    r"threadpool create failed",
    r"failed to parse cpu-mask",
    r"^error: ",
)]


class LlamaBenchTool(ToolEngine):
    name = "tool:llama-bench"
    tool = "llama-bench"
    source = "ggml-org/llama.cpp tools/llama-bench/llama-bench.cpp @ 0c1e57098 (vendored by llama-cpp-python 0.3.36)"
    formats = ("gguf",)
    precisions = ("fp32",)
    backends = ("cpu",)
    per_iteration_times = True
    unsupported = {"fp16": "llama-bench's weight type is the model file's (the config's llm.quant)",
                   "bf16": "llama-bench's weight type is the model file's (the config's llm.quant)",
                   "int8": "llama-bench's weight type is the model file's (the config's llm.quant)"}

    def check_options(self, options: dict[str, Any]) -> list[str]:
        """options.binary may be left out on the host: the llama-bench `devicelab build-native --target host --llm`
        built and registered (the arm64 build has none: a phone needs the user's, in options.binary)."""
        if "binary" not in options and registered_binary() is not None:
            options = {**options, "binary": str(registered_binary())}
        return super().check_options(options)

    def user_runner(self, options: dict[str, Any]) -> tuple[Path, tuple[Path, ...]] | None:
        if "binary" not in options and (built := registered_binary()) is not None:
            return built, ()
        return super().user_runner(options)

    def version_for(self, options: dict[str, Any]) -> str | None:
        if "binary" not in options:
            from devicelab import native_llm

            record = native_llm.registered("host")
            return f"llama.cpp-{record.llama_cpp_commit}" if record else None
        return super().version_for(options)

    def prepare(self, model: SourceModel, precision: str, cache_dir: Path) -> PreparedModel:
        return PreparedModel(model.path)

    def prepare_llm(self, model: SourceModel, quant: str, cache_dir: Path) -> PreparedModel:
        """The same file the llamacpp engine runs for `quant` (its quantization cache), so both compare like for like."""
        from devicelab.engines.llamacpp import ENGINE as LLAMACPP

        return LLAMACPP.prepare_llm(model, quant, cache_dir.parent / LLAMACPP.name)

    def model_layout(self, prepared: PreparedModel) -> dict[str, Path]:
        return {MODEL: prepared.path}

    def unsupported_reason(self, s: ToolSettings) -> str | None:
        if s.llm is None:
            return "llama-bench runs LLM configs only (a GGUF model with llm: prompt_tokens, gen_tokens)"
        return super().unsupported_reason(s)

    def argv(self, binary: str, folder: str, s: ToolSettings) -> list[str]:
        assert s.llm is not None
        prompt, gen, depth = s.llm
        return [binary, "-m", target_path(folder, MODEL), "-p", str(prompt), "-n", str(gen), "-d", str(depth),
                "-t", str(s.threads), "-r", str(s.iterations), "--delay", "0", "-o", "json", *s.extra_args]

    def forced(self, s: ToolSettings) -> tuple[str, ...]:
        return (WARMUP_NOTE, TESTS_NOTE)

    def parse(self, stdout: str, stderr: str, exit_code: int, files: Mapping[str, str] | None = None) -> ToolRun:
        lines = lines_of(stderr, stdout)
        error = first_line(lines_of(stderr), _ERRORS)
        tests = tests_of(stdout)
        if error or exit_code != 0 or tests is None:
            return build_run(error=error or exit_error(self.tool, exit_code, lines, "JSON results"))
        prompt = next((t for t in tests if int(t.get("n_prompt", 0)) > 0 and int(t.get("n_gen", 0)) == 0), None)
        gen = next((t for t in tests if int(t.get("n_gen", 0)) > 0 and int(t.get("n_prompt", 0)) == 0), None)
        if gen is None:
            return build_run(error="llama-bench printed no generation (tg) test")
        n_gen = int(gen["n_gen"])
        samples = [float(ns) / 1e9 / n_gen for ns in gen.get("samples_ns", [])]
        raw: dict[str, Any] = {"tg": {k: gen[k] for k in KEPT if k in gen}}
        if prompt is not None:
            raw["pp"] = {k: prompt[k] for k in KEPT if k in prompt}
            raw["prefill_s"] = [float(ns) / 1e9 for ns in prompt.get("samples_ns", [])]
        avg = float(gen["avg_ns"]) / 1e9 / n_gen if "avg_ns" in gen else None
        std = float(gen["stddev_ns"]) / 1e9 / n_gen if "stddev_ns" in gen else None
        return build_run(samples, count=len(samples), avg_s=avg, std_s=std, min_s=min(samples) if samples else None,
                         max_s=max(samples) if samples else None, warmups=1, raw=raw)


def registered_binary() -> Path | None:
    from devicelab import native_llm

    record = native_llm.registered("host")
    return record.artifacts.get("llama-bench") if record else None


def tests_of(stdout: str) -> list[dict[str, Any]] | None:
    """The JSON array llama-bench prints with -o json (anything before its '[' is someone else's print)."""
    start = stdout.find("[")
    if start < 0:
        return None
    try:
        doc = json.loads(stdout[start:])
    except ValueError:
        return None
    return [t for t in doc if isinstance(t, dict)] if isinstance(doc, list) else None


def decode_tps(test: Mapping[str, Any]) -> float:
    """A tg test's tokens per second as llama-bench computes avg_ts: the mean over repetitions of n_gen / seconds."""
    ts = [float(x) for x in test.get("samples_ts", [])]
    return sum(ts) / len(ts) if ts else float(test["avg_ts"])


ENGINE = LlamaBenchTool()
