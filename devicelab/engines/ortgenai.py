"""ortgenai: LLMs through ONNX Runtime GenAI (the `onnxruntime-genai` wheel) on the host, driven by devicelab's Python
runner speaking runner protocol v3 (devicelab.runners.llm).

GenAI runs ONNX decoders, not GGUF files: a config's GGUF model (the LLM zoo's, or any llama-architecture F32/F16
file) is converted by devicelab.ortgenai_convert into a model folder (model.onnx + its weights, genai_config.json),
cached by the GGUF file's content and the converter's version. Only F32 is converted: F16 weights would compute in
float32 on this CPU (no float16 MatMul kernel in ONNX Runtime's CPU provider on x86-64), and the GGML quantizations
have no GenAI counterpart written here; those configs are `unsupported` rows saying so (prepare_llm raises
UnsupportedError, before anything runs), as are a file holding what the graph would not apply (the converter names
it) and a request longer than the file's context (check_llm). A llama file missing a tensor is a failed row.

Per request the runner makes a fresh og.Generator (an empty KV cache), appends the depth tokens (untimed), times
`append_tokens(prompt)` (GenAI runs the prefill and computes the first logits inside it), then for each of the G steps
takes the greedy token (numpy argmax over the logits it copied, untimed) and times `append_tokens([token])`: one
decoder run of one token, exactly the step dlllm times with llama_decode. Threads: genai_config's
`session_options.intra_op_num_threads` (the config's thread count; inter-op 1), written into the run folder's copy
of the config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devicelab.engines.base import Engine, PreparedModel, SourceModel, UnsupportedError

if TYPE_CHECKING:
    from devicelab.llm import LlmWorkload

WHY_NOT: dict[str, str] = {
    "F16": ("ortgenai runs F32 only here: ONNX Runtime's CPU execution provider has no float16 MatMul kernel on "
            "x86-64 (it inserts casts and computes float32), so F16 weights would be F32's speed under F16's name"),
    "Q8_0": ("ortgenai has no Q8_0 model: devicelab's converter writes float32 ONNX graphs only (GGML's Q8_0 blocks "
             "would need ORT's MatMulNBits with 8-bit blocks of 32, not written)"),
    "Q4_0": ("ortgenai has no Q4_0 model: devicelab's converter writes float32 ONNX graphs only (GGML's Q4_0 would map "
             "to ORT's MatMulNBits, 4 bits, blocks of 32, zero point 8: not written)"),
    "Q4_K": ("ortgenai has no Q4_K model: devicelab's converter writes float32 ONNX graphs only (GGML's K-quants' "
             "super-blocks have no ORT kernel)"),
}
MODEL_DIR = "model"  # the model folder inside the run folder


class OrtGenAIEngine(Engine):
    name = "ortgenai"
    package = "onnxruntime-genai"
    module = "onnxruntime_genai"
    zygote_any_cpus = ("0.18",)  # its import reads no CPU set and maps no OpenMP runtime, as ONNX Runtime's
    formats = ("gguf",)
    precisions = ("fp32",)  # activations; the weights' type is the config's quant
    backends = ("cpu",)
    device_kinds = ("host",)
    unsupported = {"fp16": "ortgenai's weight type is the config's llm.quant; precision stays fp32",
                   "bf16": "ortgenai's weight type is the config's llm.quant; precision stays fp32",
                   "int8": "ortgenai's weight type is the config's llm.quant; precision stays fp32"}

    def version(self) -> str | None:
        import importlib.metadata

        from devicelab.ortgenai_convert import CONVERTER_VERSION

        base = super().version()
        if not base:
            return None
        try:
            ort = importlib.metadata.version("onnxruntime")
        except importlib.metadata.PackageNotFoundError:
            ort = "none"
        # GenAI runs on the onnxruntime package's library, and the converter writes the graph it runs: a new
        # onnxruntime or a new converter starts a new series, as a new wheel does.
        return f"{base}+ort{ort}+dlconv{CONVERTER_VERSION}"

    def prepare(self, model: SourceModel, precision: str, cache_dir: Path) -> PreparedModel:
        raise UnsupportedError("ortgenai runs GGUF language models only (an `llm:` suite)")

    def prepare_llm(self, model: SourceModel, quant: str, cache_dir: Path) -> PreparedModel:
        """The converted model folder for `quant` (F32); UnsupportedError with the reason for another quant or a file
        this converter refuses (the sweep makes that an `unsupported` row, and nothing is converted)."""
        from devicelab import ortgenai_convert as conv

        if quant not in conv.QUANTS:
            raise UnsupportedError(WHY_NOT.get(quant, f"ortgenai has no {quant} model"))
        name = f"{model.path.stem}-F32-{conv.cache_key(model.sha256)}"
        try:
            conv.check_source(model.path)  # before anything is written: a file the graph cannot hold is refused whole
            folder = conv.cached_folder(cache_dir, name, lambda out: conv.write_folder(model.path, out))
        except conv.ConversionRefusedError as e:
            raise UnsupportedError(f"{model.name}: {e}") from None
        # conv.MalformedGGUFError (a llama file missing a tensor or key) is not caught: a failed row, with its message
        return PreparedModel(folder, ("the GGUF weights converted by devicelab to a float32 ONNX decoder of plain "
                                      "ONNX ops (no ORT contrib ops; KV cache concatenated per step)",))

    def check_llm(self, model: SourceModel, workload: LlmWorkload) -> None:
        """UnsupportedError when depth + P + G exceeds the file's `llama.context_length`: the converted graph's rope
        tables and GenAI's max_length end there (llama.cpp runs past it with a warning; this graph cannot). Read from
        the file before anything is converted or started."""
        from devicelab import ortgenai_convert as conv

        n_ctx = workload.context_depth + workload.prompt_tokens + workload.gen_tokens
        n_ctx_train = conv.context_length(model.path)
        if n_ctx_train is not None and n_ctx > n_ctx_train:
            raise UnsupportedError(f"{model.name}: context_depth + prompt_tokens + gen_tokens = {n_ctx} exceeds the "
                                   f"model's llama.context_length of {n_ctx_train} tokens (ortgenai's graph has no "
                                   "positions past it)")

    def stage(self, runner_config: dict[str, Any], folder: Path) -> dict[str, Any]:
        """The model folder linked into the run folder file by file, with its own genai_config.json carrying the
        config's thread count (GenAI reads threads from there)."""
        from devicelab.ortgenai_convert import CONFIG_FILE

        src = Path(runner_config["model"])
        (folder / MODEL_DIR).mkdir()
        for f in sorted(src.iterdir()):
            if f.is_file() and f.name != CONFIG_FILE:
                (folder / MODEL_DIR / f.name).symlink_to(f.resolve())
        cfg = json.loads((src / CONFIG_FILE).read_text())
        sess = cfg["model"]["decoder"].setdefault("session_options", {})
        sess["intra_op_num_threads"] = int(runner_config.get("threads") or 1)
        sess["inter_op_num_threads"] = 1
        (folder / MODEL_DIR / CONFIG_FILE).write_text(json.dumps(cfg, indent=1))
        return {**runner_config, "model": MODEL_DIR, "inputs": []}

    # ---- runner side (inside the measured process)

    def open_session(self, config: dict[str, Any]) -> Any:
        raise UnsupportedError("ortgenai runs GGUF language models only (an `llm:` suite)")

    def open_llm_session(self, config: dict[str, Any]) -> GenAISession:
        if config.get("precision", "fp32") != "fp32" or config.get("backend", "cpu") != "cpu":
            raise UnsupportedError("ortgenai runs fp32 activations on the cpu backend only")
        return GenAISession(config)


class _Request:
    __slots__ = ("start", "prefill_s", "token_s")

    def __init__(self, start: float, prefill_s: float, token_s: list[float]) -> None:
        self.start, self.prefill_s, self.token_s = start, prefill_s, token_s


class GenAISession:
    """One og.Model; each request on a fresh og.Generator."""

    def __init__(self, config: dict[str, Any]) -> None:
        import numpy as np
        import onnxruntime_genai as og

        from devicelab.ortgenai_convert import CONFIG_FILE, DATA_FILE, INFO_FILE, ONNX_FILE

        folder = Path(config["model"])
        self.np, self.og = np, og
        self.facts = json.loads((folder / INFO_FILE).read_text())
        self.threads = json.loads((folder / CONFIG_FILE).read_text())["model"]["decoder"]["session_options"].get(
            "intra_op_num_threads")
        req = config["llm"]
        self.depth = [int(t) for t in req.get("depth") or []]
        self.prompt = [int(t) for t in req["prompt"]]
        self.gen = int(req["gen_tokens"])
        self.n_vocab = int(self.facts["n_vocab"])
        if self.gen < 1 or not self.prompt:
            raise ValueError("llm: needs a prompt of at least one token and gen_tokens >= 1")
        bad = [t for t in self.depth + self.prompt if not 0 <= t < self.n_vocab]
        if bad:
            raise ValueError(f"llm.prompt: token id {bad[0]} is outside the vocabulary of {self.n_vocab}")
        want = req.get("quant")
        if want and want != self.facts["quant"]:
            raise UnsupportedError(f"llm.quant: asked for {want} but the model folder holds {self.facts['quant']}")
        self.n_ctx = len(self.depth) + len(self.prompt) + self.gen
        if self.n_ctx > int(self.facts["n_ctx_train"]):  # check_llm refuses it before a run: a direct caller's error
            raise UnsupportedError(f"llm: depth + P + G = {self.n_ctx} exceeds the model's context of "
                                   f"{self.facts['n_ctx_train']} tokens")
        self.model_bytes = sum((folder / f).stat().st_size for f in (ONNX_FILE, DATA_FILE))
        og_config = og.Config(str(folder))
        og_config.clear_providers()  # the CPU execution provider, whatever the config says
        self.model = og.Model(og_config)
        self.params = og.GeneratorParams(self.model)
        self.params.set_search_options(max_length=self.n_ctx, do_sample=False, batch_size=1)
        self.rows = np.zeros((self.gen + 1, self.n_vocab), dtype=np.float32)

    def _take(self, generator: Any, row: int) -> int:
        """The logits GenAI computed (untimed: a copy), kept as `row`; the greedy next token."""
        logits = self.np.asarray(generator.get_logits(), dtype=self.np.float32).reshape(-1)[-self.n_vocab:]
        self.rows[row] = logits
        return int(self.np.argmax(logits))

    def request(self) -> _Request:
        import time

        og, perf = self.og, time.perf_counter
        g = og.Generator(self.model, self.params)  # a fresh KV cache
        if self.depth:
            g.append_tokens(self.np.asarray(self.depth, dtype=self.np.int32))  # untimed: the cache a chat holds
        prompt = self.np.asarray(self.prompt, dtype=self.np.int32)
        start = perf()
        g.append_tokens(prompt)  # the prefill: GenAI runs the decoder and computes the first logits
        prefill_s = perf() - start
        token = self._take(g, 0)
        token_s = [0.0] * self.gen
        one = self.np.zeros(1, dtype=self.np.int32)
        for i in range(self.gen):
            one[0] = token
            s0 = perf()
            g.append_tokens(one)  # one decoder run of one token: the step that makes the next logits
            token_s[i] = perf() - s0
            token = self._take(g, i + 1)
        del g
        return _Request(start, prefill_s, token_s)

    def info(self) -> dict[str, Any]:
        return {"n_params": int(self.facts["n_params"]), "model_bytes": int(self.model_bytes),
                "quant": self.facts["quant"], "kv_type": self.facts["kv_type"], "n_ctx": self.n_ctx,
                "n_vocab": self.n_vocab, "intra_op_num_threads": self.threads, "library": "onnxruntime-genai",
                "library_version": getattr(self.og, "__version__", None)}

    def logits(self) -> bytes:
        return self.rows.astype("<f4").tobytes()


ENGINE = OrtGenAIEngine()
