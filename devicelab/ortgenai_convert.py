"""GGUF → an ONNX Runtime GenAI model folder: a decoder ONNX graph written with the `onnx` helper API from the GGUF
file's own weights (read with the `gguf` package), its `genai_config.json`, and what devicelab needs to know of it.

What is converted: the llama architecture (`general.architecture: llama`) from F32 or F16 weights (written as float32),
the layout of the
LLM zoo's files and of llama.cpp's convert_hf_to_gguf output: token embedding, per block an RMSNorm, Q/K/V/O
projections with rotary position embedding and grouped KV heads, an RMSNorm and a SwiGLU feed-forward; a final RMSNorm
and the output head (or the tied embedding). Anything else (another architecture, rope scaling, a partial rotary
dimension, a quantized tensor type, a rope frequency scale other than 1, a tensor the graph would not consume — e.g. the
optional biases and `.scale` tensors llama.cpp applies to llama files) is refused with the reason
(ConversionRefusedError: an `unsupported` row); a llama file missing a tensor or key this layout needs is broken
(MalformedGGUFError: a failed row). No approximation is ever written under a quant's name.

The graph is plain ONNX (opset 17) only, no ORT contrib ops: every op has a CPU kernel in every ONNX Runtime build,
the numerics are the textbook ones (so the logits can be held to llama.cpp's), and ONNX Runtime's own graph optimizer
fuses what it recognises: in ONNX Runtime 1.32's optimized graph the RMSNorms are SimplifiedLayerNormalization, the
SiLUs QuickGelu, the transposed MatMuls FusedMatMul. ONNX
Runtime GenAI's model builder writes GroupQueryAttention, RotaryEmbedding and SkipSimplifiedLayerNormalization contrib
ops with a KV buffer shared between past and present; this graph concatenates past and present instead (GenAI's
default `past_present_share_buffer: false`), which copies the KV cache once per step: the README says so.

llama.cpp's conventions, followed exactly:
* rope: the llama architecture is LLAMA_ROPE_TYPE_NORM, which rotates ADJACENT pairs (x[2i], x[2i+1]) by
  pos · base^(-2i/n_rot). GGUF files hold Q/K weights permuted from Hugging Face's layout (whose rope rotates the halves
  x[i], x[i + d/2]) precisely so that this adjacent-pair rope is right for them; the graph applies it to the GGUF
  weights as they are. The angles are computed as ggml computes them (float32, theta multiplied by theta_scale step by
  step), from `llama.rope.freq_base`.
* RMSNorm: x / sqrt(mean(x²) + eps) · w with eps = `llama.attention.layer_norm_rms_epsilon`.
* attention: scale 1/sqrt(head_dim); query head h reads KV head h // (n_head / n_head_kv), as ggml's broadcast does.
* logits of the last position only (llama.cpp computes no others for a prompt), declared [batch, 1, vocab], which
  GenAI treats as a model that outputs the last token's logits. As in llama.cpp's llama graph (its `inp_out_ids`), the
  sequence is cut to that position right after the last block's attention residual: the last block's feed-forward,
  the final norm and the head run for one position, not for every prompt token.

The converter's version (CONVERTER_VERSION, in the cache key and in the engine's version) is a hash of this file's
source and of the `gguf` and `onnx` packages' versions that read and write the graph: a changed converter never
reuses a cached folder nor continues another converter's series.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np


def converter_version(source: bytes) -> str:
    """12 hex digits of the sha256 of the converter's `source` and of the gguf and onnx versions it runs with."""
    from importlib.metadata import PackageNotFoundError, version

    h = hashlib.sha256(source)
    for package in ("gguf", "onnx"):
        try:
            h.update(f"\n{package}=={version(package)}".encode())
        except PackageNotFoundError:
            h.update(f"\n{package} missing".encode())
    return h.hexdigest()[:12]


@functools.cache
def _own_version() -> str:
    return converter_version(Path(__file__).read_bytes())


def __getattr__(name: str) -> Any:
    """CONVERTER_VERSION: no hand-bumped number, any edit of this file changes it (the cache key and the engine's
    version name it). Computed on first use: the runner imports this module for its file names, and hashing and
    package metadata lookups would otherwise land in its measured load time."""
    if name == "CONVERTER_VERSION":
        return _own_version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


OPSET = 17
IR_VERSION = 8  # the IR of opset 17: every ONNX Runtime since 1.13 loads it
ONNX_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"
CONFIG_FILE = "genai_config.json"
INFO_FILE = "devicelab.json"  # what the runner reports of the model (n_params, quant, …): not read by GenAI
# GGML tensor types this converter reads, and the quant each stands for in devicelab's names.
FLOAT_TYPES = {0: "F32", 1: "F16"}
# What the graph stores: float32 weights only. F16 weights would not run as F16 on the host's CPU: ONNX Runtime's CPU
# execution provider has no float16 MatMul kernel on x86-64, so it inserts casts around the MatMul and folds the
# weight back to float32 (seen in its optimized graph), and an F16 row would be F32's speed under F16's name. An F16
# *file* is converted losslessly to float32 for the F32 row.
QUANTS = ("F32",)


class ConversionRefusedError(ValueError):
    """The GGUF file is a valid model this converter does not write honestly (the message says why, naming the field
    or tensor): the engine makes it an `unsupported` row."""


class MalformedGGUFError(ValueError):
    """The GGUF file says it is a llama model but lacks a tensor or key that architecture requires (llama.cpp would not
    load it either): a failed row, not an unsupported one."""


# Keys llama.cpp reads for a llama file that change the numerics, with the values under which they change nothing.
# `llama.rope.scaling.factor` (or the older `llama.rope.scale_linear`) sets freq_scale = 1/factor whatever the scaling
# type (default "linear"; llama-model.cpp's load_hparams), 0 meaning unset.
NEUTRAL_KEYS: dict[str, tuple[Any, ...]] = {
    "llama.rope.scaling.factor": (0.0, 1.0),
    "llama.rope.scale_linear": (0.0, 1.0),
    "llama.expert_count": (0,),
}


@dataclass(frozen=True)
class Hyper:
    """The llama hyper-parameters read from the GGUF metadata."""

    n_vocab: int
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_rot: int
    n_ctx_train: int
    rope_base: float
    rms_eps: float
    bos: int
    eos: int

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


def _field(reader: Any, key: str, default: Any = None) -> Any:
    f = reader.fields.get(key)
    if f is None:
        return default
    value = f.contents()
    return value


def read_hyper(reader: Any) -> Hyper:
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise ConversionRefusedError(f"general.architecture: {arch!r} is not converted; allowed: 'llama'")
    scaling = _field(reader, "llama.rope.scaling.type")
    if scaling not in (None, "none", "linear"):  # linear with a neutral factor (below) is no scaling
        raise ConversionRefusedError(f"llama.rope.scaling.type: {scaling!r} is not converted; allowed: none, linear "
                                     "(with a factor of 1)")
    for key, neutral in NEUTRAL_KEYS.items():
        value = _field(reader, key)
        if value is not None and value not in neutral:
            raise ConversionRefusedError(f"{key}: {value!r} is not converted (llama.cpp applies it to llama files); "
                                         f"allowed: absent or {', '.join(map(str, neutral))}")
    if any(t.name == "rope_freqs.weight" for t in reader.tensors):
        raise ConversionRefusedError("rope_freqs.weight: per-frequency rope factors (Llama 3.1 scaling) are not "
                                     "converted")

    def need(key: str) -> Any:
        value = _field(reader, key)
        if value is None:
            raise MalformedGGUFError(f"{key}: missing from the GGUF metadata")
        return value

    tokens = reader.fields.get("tokenizer.ggml.tokens")
    n_embd, n_head = int(need("llama.embedding_length")), int(need("llama.attention.head_count"))
    head_dim = n_embd // n_head
    for key in ("llama.attention.key_length", "llama.attention.value_length"):
        value = _field(reader, key)
        if value is not None and value != head_dim:
            raise ConversionRefusedError(f"{key}: {value!r} is not converted; allowed: absent or n_embd / n_head "
                                         f"({head_dim})")
    n_rot = int(_field(reader, "llama.rope.dimension_count", head_dim))
    if n_rot != head_dim or head_dim % 2:
        raise ConversionRefusedError(f"llama.rope.dimension_count: {n_rot} is not converted; allowed: the head "
                                     f"dimension ({head_dim}), even")
    embd = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
    if embd is None:
        raise MalformedGGUFError("token_embd.weight: missing")
    n_vocab = int(embd.shape[1]) if len(embd.shape) == 2 else 0
    if tokens is not None and len(tokens.data) != n_vocab:
        raise MalformedGGUFError(f"tokenizer.ggml.tokens: {len(tokens.data)} tokens for an embedding of {n_vocab} "
                                 "rows")
    h = Hyper(n_vocab=n_vocab, n_embd=n_embd, n_layer=int(need("llama.block_count")), n_head=n_head,
              n_head_kv=int(_field(reader, "llama.attention.head_count_kv", n_head)),
              n_ff=int(need("llama.feed_forward_length")), n_rot=n_rot,
              n_ctx_train=int(need("llama.context_length")),
              rope_base=float(_field(reader, "llama.rope.freq_base", 10000.0)),
              rms_eps=float(need("llama.attention.layer_norm_rms_epsilon")),
              bos=int(_field(reader, "tokenizer.ggml.bos_token_id", 1)),
              eos=int(_field(reader, "tokenizer.ggml.eos_token_id", 2)))
    names = {t.name for t in reader.tensors}
    missing = [n for n in graph_tensors(h, names) if n not in names and n != "output.weight"]
    if missing:
        raise MalformedGGUFError(f"tensor {missing[0]}: missing (a llama file needs it)")
    extra = sorted(names - set(graph_tensors(h, names)))
    if extra:
        raise ConversionRefusedError(f"tensor {extra[0]}: not converted (the graph has no place for it; llama.cpp "
                                     f"applies it); allowed: {_ALLOWED}")
    return h


_ALLOWED = ("token_embd.weight, output_norm.weight, output.weight and per block attn_norm, attn_q, attn_k, attn_v, "
            "attn_output, ffn_norm, ffn_gate, ffn_up, ffn_down (.weight)")


def graph_tensors(h: Hyper, names: set[str]) -> list[str]:
    """The tensors the graph consumes, in order: any other tensor in the file is refused, never dropped silently
    (llama.cpp would apply e.g. an optional bias or a `.scale`). The output head is optional: without it the head is
    the token embedding (tied), as in llama.cpp."""
    out = ["token_embd.weight"]
    for i in range(h.n_layer):
        out += [f"blk.{i}.{n}.weight" for n in ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm",
                                                 "ffn_gate", "ffn_up", "ffn_down")]
    out.append("output_norm.weight")
    if "output.weight" in names:
        out.append("output.weight")
    return out


def context_length(path: Path) -> int | None:
    """`llama.context_length` of the file (None when absent: check_source then says what is wrong with the file)."""
    from gguf import GGUFReader

    value = _field(GGUFReader(str(path)), "llama.context_length")
    return None if value is None else int(value)


def check_source(path: Path) -> str:
    """What build_model refuses, checked without building anything (the metadata, the tensors' names and types):
    'F32' or 'F16', the file's weight type; ConversionRefusedError or MalformedGGUFError naming the field."""
    from gguf import GGUFReader

    source_type = file_float_type(path)
    read_hyper(GGUFReader(str(path)))
    return source_type


def file_float_type(path: Path) -> str:
    """'F32' or 'F16': the type of the file's 2-D weights; ConversionRefusedError naming the first other type."""
    from gguf import GGMLQuantizationType, GGUFReader

    reader = GGUFReader(str(path))
    seen = set()
    for t in reader.tensors:
        if len(t.shape) >= 2 or t.name == "token_embd.weight":
            kind = FLOAT_TYPES.get(int(t.tensor_type))
            if kind is None:
                raise ConversionRefusedError(f"tensor {t.name} is {GGMLQuantizationType(int(t.tensor_type)).name}: "
                                             "ortgenai converts F32 or F16 GGUF files only (a quantized file would "
                                             "be dequantized, which is not that quantization's speed or accuracy)")
            seen.add(kind)
    return "F16" if "F16" in seen else "F32"


def rope_tables(h: Hyper) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of every (position, pair) up to the training context, as ggml_rope_cache_init computes them in
    float32: theta starts at the position and is multiplied by theta_scale = base^(-2/n_rot) for each pair."""
    pos = np.arange(h.n_ctx_train, dtype=np.float32)
    theta_scale = np.float32(np.power(np.float32(h.rope_base), np.float32(-2.0) / np.float32(h.n_rot)))
    cos = np.empty((h.n_ctx_train, h.n_rot // 2), np.float32)
    sin = np.empty_like(cos)
    theta = pos.copy()
    for i in range(h.n_rot // 2):
        cos[:, i] = np.cos(theta)
        sin[:, i] = np.sin(theta)
        theta = (theta * theta_scale).astype(np.float32)
    return cos, sin


class _Graph:
    """A small builder over onnx.helper: unique names, initializers, nodes."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.n = 0

    def name(self, hint: str) -> str:
        self.n += 1
        return f"{hint}_{self.n}"

    def const(self, hint: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(array.copy(order="C"), name))  # 0-d stays 0-d
        return name

    def op(self, op: str, inputs: list[str], hint: str = "", outputs: list[str] | None = None, **attrs: Any) -> str:
        from onnx import helper

        outs = outputs or [self.name(hint or op.lower())]
        self.nodes.append(helper.make_node(op, inputs, outs, name=self.name(op), **attrs))
        return outs[0]


def _rms_norm(g: _Graph, x: str, weight: str, eps: float) -> str:
    # Pow → ReduceMean → Add → Sqrt → Div → Mul: the pattern ONNX Runtime fuses into SimplifiedLayerNormalization.
    two = g.const("two", np.array(2.0, np.float32))
    sq = g.op("Pow", [x, two])
    mean = g.op("ReduceMean", [sq], axes=[-1], keepdims=1)
    var = g.op("Add", [mean, g.const("eps", np.array(eps, np.float32))])
    std = g.op("Sqrt", [var])
    return g.op("Mul", [g.op("Div", [x, std]), weight])


def build_model(path: Path) -> tuple[Any, Hyper, dict[str, Any]]:
    """The decoder's ONNX ModelProto (float32 weights), its hyper-parameters and facts for INFO_FILE, from the GGUF
    file at `path` (F32, or F16 converted losslessly)."""
    from gguf import GGUFReader
    from onnx import TensorProto, helper

    source_type = file_float_type(path)  # refuses quantized tensors with their name
    reader = GGUFReader(str(path))
    h = read_hyper(reader)  # refuses keys and tensors the graph would not apply
    tensors = {t.name: t for t in reader.tensors}
    n_params = int(sum(int(t.n_elements) for t in reader.tensors))
    consumed: set[str] = set()

    def tensor(name: str) -> np.ndarray:
        t = tensors.get(name)
        if t is None:
            raise MalformedGGUFError(f"tensor {name}: missing (a llama file needs it)")
        consumed.add(name)
        return np.asarray(t.data)  # numpy shape (rows, cols) = GGUF (ne1, ne0): a matrix is (out, in)

    g = _Graph()

    def weight(name: str, hint: str) -> str:
        """A matrix as a MatMul's right operand, [in, out], float32."""
        return g.const(hint, tensor(name).T.astype(np.float32))

    def vector(name: str, hint: str) -> str:
        return g.const(hint, tensor(name).astype(np.float32))

    rep = h.n_head // h.n_head_kv
    half = h.head_dim // 2
    batch, seq, total, past = "batch_size", "sequence_length", "total_sequence_length", "past_sequence_length"
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [batch, seq]),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [batch, total]),
              helper.make_tensor_value_info("position_ids", TensorProto.INT64, [batch, seq])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 1, h.n_vocab])]
    for i in range(h.n_layer):
        for kind in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{kind}", TensorProto.FLOAT,
                                                        [batch, h.n_head_kv, past, h.head_dim]))
            outputs.append(helper.make_tensor_value_info(f"present.{i}.{kind}", TensorProto.FLOAT,
                                                         [batch, h.n_head_kv, total, h.head_dim]))

    x = g.op("Gather", [g.const("token_embd", tensor("token_embd.weight").astype(np.float32)), "input_ids"], axis=0)

    # Rotary tables gathered by position: [batch, seq, 1, half], broadcast over heads.
    cos_t, sin_t = rope_tables(h)
    ax2 = g.const("axis2", np.array([2], np.int64))
    cos = g.op("Unsqueeze", [g.op("Gather", [g.const("rope_cos", cos_t), "position_ids"], axis=0), ax2])
    sin = g.op("Unsqueeze", [g.op("Gather", [g.const("rope_sin", sin_t), "position_ids"], axis=0), ax2])

    # The mask: query i (at position past + i) sees key j when j <= past + i and attention_mask[j] is 1.
    zero, one = g.const("zero", np.array(0, np.int64)), g.const("one", np.array(1, np.int64))
    past_len = g.op("Gather", [g.op("Shape", ["past_key_values.0.key"]), g.const("i2", np.array(2, np.int64))],
                    axis=0)
    seq_len = g.op("Gather", [g.op("Shape", ["input_ids"]), one], axis=0)
    total_len = g.op("Add", [past_len, seq_len])
    q_pos = g.op("Range", [past_len, total_len, one])
    k_pos = g.op("Range", [zero, total_len, one])
    causal = g.op("LessOrEqual", [g.op("Unsqueeze", [k_pos, g.const("axis0", np.array([0], np.int64))]),
                                  g.op("Unsqueeze", [q_pos, g.const("axis1", np.array([1], np.int64))])])  # [S, T]
    pad = g.op("Cast", [g.op("Unsqueeze", ["attention_mask", g.const("axes123", np.array([1, 2, 3], np.int64))])],
               to=TensorProto.BOOL)  # [B, 1, 1, 1, T]
    allowed = g.op("And", [causal, pad])  # [B, 1, 1, S, T]
    neg_inf = g.const("neg_inf", np.array(-np.inf, np.float32))
    scale = g.const("scale", np.array(1.0 / np.sqrt(h.head_dim), np.float32))

    shape_q5 = g.const("shape_q5", np.array([0, 0, h.n_head, half, 2], np.int64))
    shape_k5 = g.const("shape_k5", np.array([0, 0, h.n_head_kv, half, 2], np.int64))
    shape_q4 = g.const("shape_q4", np.array([0, 0, h.n_head, h.head_dim], np.int64))
    shape_k4 = g.const("shape_k4", np.array([0, 0, h.n_head_kv, h.head_dim], np.int64))
    shape_grp = g.const("shape_grp", np.array([0, h.n_head_kv, rep, -1, h.head_dim], np.int64))
    shape_heads = g.const("shape_heads", np.array([0, h.n_head, -1, h.head_dim], np.int64))
    shape_embd = g.const("shape_embd", np.array([0, 0, h.n_embd], np.int64))
    pair0, pair1 = g.const("p0", np.array(0, np.int64)), g.const("p1", np.array(1, np.int64))
    ax4 = g.const("axis4", np.array([4], np.int64))

    def rope(t: str, shape5: str, shape4: str) -> str:
        """Adjacent pairs (x[2i], x[2i+1]) rotated by the position's angle i (LLAMA_ROPE_TYPE_NORM)."""
        five = g.op("Reshape", [t, shape5])  # [B, S, H, half, 2]
        a = g.op("Gather", [five, pair0], axis=4)  # [B, S, H, half]
        b = g.op("Gather", [five, pair1], axis=4)
        ra = g.op("Sub", [g.op("Mul", [a, cos]), g.op("Mul", [b, sin])])
        rb = g.op("Add", [g.op("Mul", [a, sin]), g.op("Mul", [b, cos])])
        both = g.op("Concat", [g.op("Unsqueeze", [ra, ax4]), g.op("Unsqueeze", [rb, ax4])], axis=4)
        return g.op("Reshape", [both, shape4])  # [B, S, H, head_dim]

    for i in range(h.n_layer):
        b = f"blk.{i}."
        hx = _rms_norm(g, x, vector(b + "attn_norm.weight", f"l{i}_attn_norm"), h.rms_eps)
        q = rope(g.op("MatMul", [hx, weight(b + "attn_q.weight", f"l{i}_wq")]), shape_q5, shape_q4)
        k = rope(g.op("MatMul", [hx, weight(b + "attn_k.weight", f"l{i}_wk")]), shape_k5, shape_k4)
        v = g.op("Reshape", [g.op("MatMul", [hx, weight(b + "attn_v.weight", f"l{i}_wv")]), shape_k4])
        q = g.op("Transpose", [q], perm=[0, 2, 1, 3])  # [B, H, S, d]
        k = g.op("Transpose", [k], perm=[0, 2, 1, 3])  # [B, Hkv, S, d]
        v = g.op("Transpose", [v], perm=[0, 2, 1, 3])
        k_all = g.op("Concat", [f"past_key_values.{i}.key", k], axis=2, outputs=[f"present.{i}.key"])
        v_all = g.op("Concat", [f"past_key_values.{i}.value", v], axis=2, outputs=[f"present.{i}.value"])
        # Grouped heads: query head h = kv * rep + r reads KV head kv.
        q5 = g.op("Reshape", [q, shape_grp])  # [B, Hkv, rep, S, d]
        kt = g.op("Unsqueeze", [g.op("Transpose", [k_all], perm=[0, 1, 3, 2]), ax2])  # [B, Hkv, 1, d, T]
        scores = g.op("Mul", [g.op("MatMul", [q5, kt]), scale])  # [B, Hkv, rep, S, T]
        probs = g.op("Softmax", [g.op("Where", [allowed, scores, neg_inf])], axis=-1)
        ctx = g.op("MatMul", [probs, g.op("Unsqueeze", [v_all, ax2])])  # [B, Hkv, rep, S, d]
        ctx = g.op("Reshape", [g.op("Transpose", [g.op("Reshape", [ctx, shape_heads])], perm=[0, 2, 1, 3]),
                               shape_embd])  # [B, S, E]
        x = g.op("Add", [x, g.op("MatMul", [ctx, weight(b + "attn_output.weight", f"l{i}_wo")])])
        if i == h.n_layer - 1:
            # Only the last position's logits are output: cut here, as llama.cpp's llama graph does (inp_out_ids,
            # after the last block's attention), so this block's feed-forward, the final norm and the head run for
            # one position instead of P. Earlier blocks need every position: later positions attend to their K/V.
            x = g.op("Slice", [x, g.const("m1", np.array([-1], np.int64)),
                               g.const("big", np.array([np.iinfo(np.int64).max], np.int64)),
                               g.const("axis1b", np.array([1], np.int64))])  # [B, 1, E]
        hx = _rms_norm(g, x, vector(b + "ffn_norm.weight", f"l{i}_ffn_norm"), h.rms_eps)
        gate = g.op("MatMul", [hx, weight(b + "ffn_gate.weight", f"l{i}_wgate")])
        up = g.op("MatMul", [hx, weight(b + "ffn_up.weight", f"l{i}_wup")])
        act = g.op("Mul", [g.op("Mul", [gate, g.op("Sigmoid", [gate])]), up])  # SiLU(gate) · up
        x = g.op("Add", [x, g.op("MatMul", [act, weight(b + "ffn_down.weight", f"l{i}_wdown")])])

    hx = _rms_norm(g, x, vector("output_norm.weight", "output_norm"), h.rms_eps)  # [B, 1, E]
    head = "output.weight" if "output.weight" in tensors else "token_embd.weight"  # tied embeddings
    g.op("MatMul", [hx, weight(head, "output")], outputs=["logits"])
    unused = sorted(set(tensors) - consumed)
    if unused:  # read_hyper refused every tensor outside graph_tensors: this only guards the two lists' agreement
        raise ConversionRefusedError(f"tensor {unused[0]}: not converted (the graph has no place for it)")

    graph = helper.make_graph(g.nodes, "devicelab-llama-F32", inputs, outputs, g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="devicelab", producer_version=_own_version())
    model.ir_version = IR_VERSION
    # The KV cache's type as the graph declares its present outputs (what the runner reports as kv_type).
    kv_type = {TensorProto.FLOAT: "f32", TensorProto.FLOAT16: "f16"}[outputs[1].type.tensor_type.elem_type]
    facts = {"n_params": n_params, "n_vocab": h.n_vocab, "n_ctx_train": h.n_ctx_train, "quant": "F32",
             "source_type": source_type, "kv_type": kv_type,
             "converter": _own_version(), "hyper": asdict(h)}
    return model, h, facts


def genai_config(h: Hyper, threads: int = 1) -> dict[str, Any]:
    """genai_config.json for the decoder (ONNX Runtime GenAI's schema: model.decoder names, sizes, session options;
    search: greedy). `threads` is the intra-op thread count; the runner rewrites it per config."""
    return {
        "model": {
            "type": "llama",
            "bos_token_id": h.bos,
            "eos_token_id": h.eos,
            # No pad token is ever fed (batch 1, synthetic prompts without special tokens); GenAI needs one.
            "pad_token_id": h.eos,
            "vocab_size": h.n_vocab,
            "context_length": h.n_ctx_train,
            "decoder": {
                "filename": ONNX_FILE,
                "session_options": {"log_id": "devicelab-ortgenai", "intra_op_num_threads": threads,
                                    "inter_op_num_threads": 1, "provider_options": []},
                "head_size": h.head_dim,
                "hidden_size": h.n_embd,
                "num_attention_heads": h.n_head,
                "num_hidden_layers": h.n_layer,
                "num_key_value_heads": h.n_head_kv,
                "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask",
                           "position_ids": "position_ids", "past_key_names": "past_key_values.%d.key",
                           "past_value_names": "past_key_values.%d.value"},
                "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                            "present_value_names": "present.%d.value"},
            },
        },
        "search": {"do_sample": False, "num_beams": 1, "num_return_sequences": 1, "max_length": h.n_ctx_train,
                   "min_length": 0, "top_k": 1, "top_p": 1.0, "temperature": 1.0, "repetition_penalty": 1.0,
                   "length_penalty": 1.0, "early_stopping": True, "no_repeat_ngram_size": 0,
                   "past_present_share_buffer": False},
    }


def write_folder(src: Path, out: Path) -> None:
    """The F32 model folder at `out` (created): model.onnx + model.onnx.data, genai_config.json, devicelab.json."""
    import onnx

    model, h, facts = build_model(src)
    out.mkdir(parents=True)
    onnx.save_model(model, str(out / ONNX_FILE), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=DATA_FILE, size_threshold=1024)  # small constants inline: shape inference reads them
    (out / INFO_FILE).write_text(json.dumps(facts, indent=1, sort_keys=True))
    (out / CONFIG_FILE).write_text(json.dumps(genai_config(h), indent=1))  # last: its presence marks a whole folder


def cache_key(source_sha256: str) -> str:
    return hashlib.sha256(f"{source_sha256}/F32/ortgenai-converter-{_own_version()}".encode()).hexdigest()[:16]


def cached_folder(cache_dir: Path, name: str, build: Callable[[Path], None]) -> Path:
    """The cache's folder `name`, built once by build(tmp_folder) and renamed into place, so a crash or a concurrent
    build never leaves half a folder under the final name (paths.cached_file, for a folder)."""
    final = cache_dir / name
    if (final / CONFIG_FILE).is_file():
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".build-"))
    try:
        built = tmp / name
        build(built)
        try:
            os.rename(built, final)
        except OSError:
            if not (final / CONFIG_FILE).is_file():  # not another build finishing first: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
