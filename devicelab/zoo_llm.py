"""The LLM zoo: small Llama-architecture models with seeded weights, written as GGUF with the `gguf` package.

Nothing is downloaded. Each model is a standard Llama block stack (RMSNorm, rotary attention with grouped KV heads,
SwiGLU feed-forward, untied output head) whose weights are drawn from one seeded generator, with a real tokenizer
section: a SentencePiece-style ("llama") vocabulary of <unk>, <s>, </s>, the 256 byte tokens <0x00>..<0xFF> (what
llama.cpp's byte fallback and its newline lookup need) and word pieces generated deterministically, with scores. The
weights are random, so the text such a model writes is noise; what the benchmark needs from it — the shapes, the
memory traffic of each decode step, a deterministic greedy path and logits to compare across quantizations — is
real.

Every width is a multiple of 256 (the Q4_K super-block), so every matrix quantizes to the type asked for.

Quantized variants (F16, Q8_0, Q4_0, Q4_K) are made from the F32 file by libllama's own `llama_model_quantize` through
`dlllm --quantize` (the host build of devicelab's LLM runner, devicelab.native_llm): what llama.cpp's quantize tool
does, with its default choices (the output head and token embedding may get a higher-precision type, as in any
llama.cpp quantization). Q4_K is llama.cpp's Q4_K_M file type. Files are cached by content in ``<zoo>/llm`` with an
index by recipe, like the ONNX zoo.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from devicelab.errors import DevicelabError, UnknownNameError
from devicelab.paths import write_atomic

LLM_ZOO_VERSION = 1
SEED = 20261206
QUANTS = ("F32", "F16", "Q8_0", "Q4_0", "Q4_K")
# libllama's llama_ftype for each quantization (llama.h): what `dlllm --quantize` is asked for.
FTYPES: dict[str, int] = {"F32": 0, "F16": 1, "Q8_0": 7, "Q4_0": 2, "Q4_K": 15}
N_SPECIAL = 3  # <unk>, <s>, </s>
N_BYTES = 256
GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class LlmEntry:
    name: str
    description: str
    n_vocab: int
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_ctx_train: int = 2048

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def n_params(self) -> int:
        """Every weight: embeddings, output head, norms and the blocks' matrices."""
        kv = self.n_head_kv * self.head_dim
        block = 2 * self.n_embd * self.n_embd + 2 * self.n_embd * kv + 3 * self.n_embd * self.n_ff + 2 * self.n_embd
        return 2 * self.n_vocab * self.n_embd + self.n_embd + self.n_layer * block


LLM_ZOO: dict[str, LlmEntry] = {
    e.name: e
    for e in (
        # Seconds per config on a laptop core: 2 blocks of width 256.
        LlmEntry("llama-tiny", "Llama architecture, 2 blocks, width 256, vocab 512 (1.8M parameters)",
                 n_vocab=512, n_embd=256, n_layer=2, n_head=4, n_head_kv=2, n_ff=768),
        # ~100M parameters: realistic memory traffic per decode step (about 410 MB at F32).
        LlmEntry("llama-100m", "Llama architecture, 12 blocks, width 768, vocab 8192 (102M parameters)",
                 n_vocab=8192, n_embd=768, n_layer=12, n_head=12, n_head_kv=4, n_ff=2560),
    )
}


def special_ids() -> dict[str, int]:
    return {"unk": 0, "bos": 1, "eos": 2}


def first_plain_token() -> int:
    """The first id that is neither a special nor a byte token: synthetic prompts draw from here up."""
    return N_SPECIAL + N_BYTES


def vocabulary(n_vocab: int, seed: int = SEED) -> tuple[list[str], list[float], list[int]]:
    """(tokens, scores, token types) of the SentencePiece-style vocabulary, deterministic for (n_vocab, seed)."""
    from gguf import TokenType

    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(N_BYTES)]
    types = [int(TokenType.UNKNOWN), int(TokenType.CONTROL), int(TokenType.CONTROL)] + [int(TokenType.BYTE)] * N_BYTES
    scores = [0.0] * len(tokens)
    letters = "abcdefghijklmnopqrstuvwxyz"
    seen = set(tokens)
    pieces: list[str] = []
    for ch in letters:  # every letter alone and word-initial, so any lower-case text tokenizes
        pieces += [ch, "\u2581" + ch]
    rng = np.random.default_rng([seed, n_vocab])
    while len(tokens) + len(pieces) < n_vocab:
        length = int(rng.integers(2, 7))
        word = "".join(letters[i] for i in rng.integers(0, len(letters), size=length))
        piece = ("\u2581" if rng.random() < 0.5 else "") + word
        if piece not in seen and piece not in pieces:
            pieces.append(piece)
    pieces = pieces[:n_vocab - len(tokens)]
    for i, piece in enumerate(pieces):
        seen.add(piece)
        tokens.append(piece)
        scores.append(-float(i))  # SentencePiece scores: earlier pieces are preferred when merging
        types.append(int(TokenType.NORMAL))
    return tokens, scores, types


def _weights(entry: LlmEntry, seed: int) -> dict[str, np.ndarray]:
    """float32 tensors by GGUF name, numpy shape (out, in) for matrices. Each tensor from its own stream of the seed,
    so adding a tensor never changes another's values. Scales keep activations O(1) through the stack."""
    e = entry
    kv = e.n_head_kv * e.head_dim
    out: dict[str, np.ndarray] = {}

    def normal(name: str, shape: tuple[int, ...], std: float) -> None:
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
        out[name] = np.random.default_rng([seed, key]).normal(0.0, std, size=shape).astype(np.float32)

    normal("token_embd.weight", (e.n_vocab, e.n_embd), 1.0)
    for i in range(e.n_layer):
        b = f"blk.{i}."
        out[b + "attn_norm.weight"] = np.ones(e.n_embd, np.float32)
        normal(b + "attn_q.weight", (e.n_embd, e.n_embd), e.n_embd ** -0.5)
        normal(b + "attn_k.weight", (kv, e.n_embd), e.n_embd ** -0.5)
        normal(b + "attn_v.weight", (kv, e.n_embd), e.n_embd ** -0.5)
        normal(b + "attn_output.weight", (e.n_embd, e.n_embd), (e.n_embd * 2 * e.n_layer) ** -0.5)
        out[b + "ffn_norm.weight"] = np.ones(e.n_embd, np.float32)
        normal(b + "ffn_gate.weight", (e.n_ff, e.n_embd), e.n_embd ** -0.5)
        normal(b + "ffn_up.weight", (e.n_ff, e.n_embd), e.n_embd ** -0.5)
        normal(b + "ffn_down.weight", (e.n_embd, e.n_ff), (e.n_ff * 2 * e.n_layer) ** -0.5)
    out["output_norm.weight"] = np.ones(e.n_embd, np.float32)
    normal("output.weight", (e.n_vocab, e.n_embd), e.n_embd ** -0.5)
    return out


def write_gguf(entry: LlmEntry, path: Path, seed: int = SEED) -> None:
    """The F32 model as a GGUF file at `path`."""
    import gguf

    e = entry
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(f"devicelab {e.name}")
    w.add_context_length(e.n_ctx_train)
    w.add_embedding_length(e.n_embd)
    w.add_block_count(e.n_layer)
    w.add_feed_forward_length(e.n_ff)
    w.add_head_count(e.n_head)
    w.add_head_count_kv(e.n_head_kv)
    w.add_rope_dimension_count(e.head_dim)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(e.n_vocab)
    w.add_file_type(FTYPES["F32"])
    tokens, scores, types = vocabulary(e.n_vocab, seed)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    ids = special_ids()
    w.add_unk_token_id(ids["unk"])
    w.add_bos_token_id(ids["bos"])
    w.add_eos_token_id(ids["eos"])
    w.add_add_bos_token(True)
    for name, array in _weights(e, seed).items():
        w.add_tensor(name, array)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@dataclass(frozen=True)
class LlmModel:
    """A zoo GGUF on disk, identified by content."""

    name: str
    quant: str
    path: Path
    sha256: str
    bytes: int
    n_params: int
    n_vocab: int


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _index(cache_dir: Path) -> dict[str, str]:
    try:
        return dict(json.loads((cache_dir / "index.json").read_text()))
    except (OSError, ValueError):
        return {}  # a damaged index only costs a rebuild


def _remember(cache_dir: Path, recipe: str, digest: str) -> None:
    index = _index(cache_dir)
    index[recipe] = digest
    write_atomic(cache_dir / "index.json", json.dumps(index, indent=1, sort_keys=True).encode())


Quantizer = Callable[[Path, Path, str], None]


def llm_model(name: str, quant: str, cache_dir: Path, quantizer: Quantizer | None = None,
              seed: int = SEED) -> LlmModel:
    """The zoo model `name` at `quant`, built on first use and then found by its recipe in the cache index.

    F32 is written here; the other quantizations need `quantizer(src, dst, quant)` (native_llm.run_quantize with the
    host dlllm), and their recipe names the quantizer's build (`quantizer_id`), so a new llama.cpp re-quantizes.
    """
    if name not in LLM_ZOO:
        raise UnknownNameError("LLM zoo model", name, LLM_ZOO)
    if quant not in QUANTS:
        raise DevicelabError(f"quant: {quant!r} is not allowed; allowed: {', '.join(QUANTS)}")
    entry = LLM_ZOO[name]
    cache_dir.mkdir(parents=True, exist_ok=True)
    base = f"{name}@llmzoo{LLM_ZOO_VERSION}/seed{seed}"
    if quant == "F32":
        recipe, build = base + "/F32", None
    else:
        if quantizer is None:
            raise DevicelabError(f"quant {quant}: quantized zoo models are made by libllama (`devicelab build-native "
                                 "--target host --llm` builds it)")
        src = llm_model(name, "F32", cache_dir, None, seed)
        recipe = f"{base}/{quant}/{getattr(quantizer, 'quantizer_id', 'libllama')}"

        def build(out: Path) -> None:
            quantizer(src.path, out, quant)

    digest = _index(cache_dir).get(recipe)
    if digest:
        path = cache_dir / f"{name}-{quant}-{digest[:16]}.gguf"
        if path.is_file():
            return LlmModel(name, quant, path, digest, path.stat().st_size, entry.n_params, entry.n_vocab)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".build-") as tmp:
        out = Path(tmp) / "model.gguf"
        if build is None:
            write_gguf(entry, out, seed)
        else:
            build(out)
        digest = _sha256(out)
        path = cache_dir / f"{name}-{quant}-{digest[:16]}.gguf"
        if not path.is_file():
            out.replace(path)
    _remember(cache_dir, recipe, digest)
    return LlmModel(name, quant, path, digest, path.stat().st_size, entry.n_params, entry.n_vocab)


def check_gguf(path: Path) -> str | None:
    """Why `path` is not a GGUF file (one line), or None: the magic and a version llama.cpp reads (2 or 3)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        return f"cannot read {path}: {e.strerror}"
    if head[:4] != GGUF_MAGIC:
        return f"{path} is not a GGUF file (it does not start with the bytes 'GGUF')"
    version = int.from_bytes(head[4:8], "little")
    if version not in (2, 3):
        return f"{path}: GGUF version {version} is not allowed; allowed: 2, 3"
    return None
