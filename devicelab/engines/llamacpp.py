"""llamacpp: LLMs through libllama (llama.cpp) in devicelab's own C++ runner, dlllm (native/llm), speaking runner
protocol v3 (prefill and per-token events).

llama.cpp is built from the source inside the llama-cpp-python sdist (`devicelab build-native --target host|arm64
--llm`, devicelab.native_llm), for the host and for arm64 phones (a static binary); the engine version is the
llama.cpp commit that sdist vendors plus a hash of dlllm's sources. Models are GGUF files: the LLM zoo's (zoo_llm,
written here with the `gguf` package) or the user's. A config's `quant` picks the variant: a file already of that type
runs as it is; an F32 or F16 file is quantized by libllama's llama_model_quantize (`dlllm --quantize` on the host,
cached by content); a file of another quantized type is not re-quantized (llama.cpp's requantization loses accuracy
twice): the config is an `unsupported` row with that reason.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path
from typing import Any

from devicelab.engines.base import Engine, PreparedModel, SourceModel, UnsupportedError

# Which registered LLM build serves which device kind: a phone runs the static arm64 Linux build.
TARGETS_BY_KIND: dict[str, tuple[str, ...]] = {"host": ("host",), "android": ("arm64",)}
# GGUF's general.file_type (llama_ftype) → devicelab's quant name; Q4_K is llama.cpp's Q4_K_M.
FILE_TYPES: dict[int, str] = {0: "F32", 1: "F16", 7: "Q8_0", 2: "Q4_0", 15: "Q4_K"}
QUANTIZABLE_FROM = ("F32", "F16")
NOTES: dict[str, str] = {
    "Q4_K": "Q4_K is llama.cpp's Q4_K_M file type (llama_model_quantize's defaults: some tensors, e.g. the output "
            "head, get a higher-precision type)",
    "Q4_0": "quantized by llama_model_quantize with its defaults (the output head gets a higher-precision type)",
}


class LlamaCppEngine(Engine):
    name = "llamacpp"
    package = ""
    module = ""
    formats = ("gguf",)
    precisions = ("fp32",)  # activations; the weights' type is the config's quant
    backends = ("cpu",)
    device_kinds = ("host", "android")
    native_runner = "dlllm"
    unsupported = {"fp16": "llama.cpp's weight type is the config's llm.quant; precision stays fp32",
                   "bf16": "llama.cpp's weight type is the config's llm.quant; precision stays fp32",
                   "int8": "llama.cpp's weight type is the config's llm.quant (Q8_0, Q4_0, Q4_K); precision stays fp32"}

    def _build(self, kind: str | None = None) -> Any:
        from devicelab import native_llm

        kinds = [kind] if kind else list(TARGETS_BY_KIND)
        for k in kinds:
            for target in TARGETS_BY_KIND.get(k, ()):
                record = native_llm.registered(target)
                if record is not None:
                    return record
        return None

    def version(self) -> str | None:
        record = self._build()
        return record.version if record else None

    def availability(self) -> tuple[bool, str | None]:
        return True, None  # each device kind needs its build: kind_reason

    def kind_reason(self, kind: str) -> str | None:
        targets = TARGETS_BY_KIND.get(kind, ())
        if not targets:
            return f"llama.cpp has no build for {kind} devices"
        if self._build(kind) is None:
            return f"llama.cpp/dlllm is not built for {kind} devices: run `devicelab build-native --target {targets[-1]} --llm`"
        return None

    def prepare(self, model: SourceModel, precision: str, cache_dir: Path) -> PreparedModel:
        return PreparedModel(model.path)

    def prepare_llm(self, model: SourceModel, quant: str, cache_dir: Path) -> PreparedModel:
        """The GGUF file holding `quant`: the file itself, or an F32/F16 file quantized by libllama (cached).
        UnsupportedError when this engine cannot make `quant` from the file (the row is `unsupported`, with why)."""
        from devicelab import zoo_llm
        from devicelab.errors import DevicelabError

        if quant not in zoo_llm.QUANTS:
            raise DevicelabError(f"quant: {quant!r} is not allowed; allowed: {', '.join(zoo_llm.QUANTS)}")
        have = file_quant(model.path)
        notes = tuple(n for q, n in NOTES.items() if q == quant)
        if have == quant:
            return PreparedModel(model.path, notes)
        if have not in QUANTIZABLE_FROM:
            raise UnsupportedError(f"{model.name} is a {have or 'GGUF file of an unknown type'}; llamacpp quantizes to "
                                 f"{quant} only from {' or '.join(QUANTIZABLE_FROM)} files (re-quantizing loses "
                                 "accuracy twice)")
        quantizer = host_quantizer()
        if model.name in zoo_llm.LLM_ZOO:
            zoo_dir = model.path.parent
            f32 = zoo_llm.llm_model(model.name, "F32", zoo_dir)
            if f32.sha256 == model.sha256:  # the zoo's own file: its variants live beside it, in the zoo's index
                got = zoo_llm.llm_model(model.name, quant, zoo_dir, quantizer)
                return PreparedModel(got.path, notes)
        key = hashlib.sha256(f"{model.sha256}/{quant}/{quantizer.quantizer_id}".encode()).hexdigest()[:16]
        from devicelab.paths import cached_file

        out = cached_file(cache_dir, f"{model.path.stem}-{quant}-{key}.gguf",
                          lambda tmp: quantizer(model.path, tmp, quant))
        return PreparedModel(out, notes)

    def stage(self, runner_config: dict[str, Any], folder: Path) -> dict[str, Any]:
        """The model linked into the run folder (what a phone receives), the config pointing at it relatively."""
        model = Path(runner_config["model"])
        (folder / "model.gguf").symlink_to(model.resolve())
        return {**runner_config, "model": "model.gguf", "inputs": []}


class HostQuantizer:
    """`dlllm --quantize` of the host build; `quantizer_id` names the build (a new llama.cpp quantizes afresh)."""

    def __init__(self, dlllm: Path, version: str) -> None:
        self.dlllm = dlllm
        self.quantizer_id = f"libllama-{version}"

    def __call__(self, src: Path, dst: Path, quant: str) -> None:
        from devicelab.native_llm import run_quantize

        run_quantize(self.dlllm, src, dst, quant)


def host_quantizer() -> HostQuantizer:
    from devicelab import native_llm
    from devicelab.errors import DevicelabError

    record = native_llm.registered("host")
    if record is None:
        raise DevicelabError("quantizing needs libllama on this machine: run `devicelab build-native --target host --llm`")
    # The llama.cpp commit alone: a change to dlllm's protocol code does not change how libllama quantizes.
    return HostQuantizer(record.artifacts["dlllm"], record.llama_cpp_commit)


def file_quant(path: Path) -> str | None:
    """The quant name of a GGUF file's general.file_type, read from its header; None when absent or unknown."""
    value = gguf_u32(path, "general.file_type")
    return FILE_TYPES.get(value) if value is not None else None


_GGUF_SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def gguf_u32(path: Path, key: str) -> int | None:
    """A scalar integer from a GGUF file's key/value header (a small reader: no numpy, no memory map of the model)."""
    with open(path, "rb") as f:
        head = f.read(24)
        if len(head) < 24 or head[:4] != b"GGUF":
            return None
        n_kv = struct.unpack("<Q", head[16:24])[0]

        def read_str() -> bytes:
            (n,) = struct.unpack("<Q", f.read(8))
            return f.read(n)

        def skip(vtype: int) -> None:
            if vtype == 8:
                read_str()
            elif vtype == 9:
                inner, count = struct.unpack("<IQ", f.read(12))
                for _ in range(count):
                    skip(inner)
            else:
                f.read(_GGUF_SCALAR[vtype])

        for _ in range(n_kv):
            name = read_str()
            (vtype,) = struct.unpack("<I", f.read(4))
            if name == key.encode() and vtype in (4, 5):
                return int(struct.unpack("<I" if vtype == 4 else "<i", f.read(4))[0])
            skip(vtype)
    return None


ENGINE = LlamaCppEngine()
