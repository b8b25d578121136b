"""LLM workloads (pure): the suite's `llm:` settings, their validation, the identity they add to a config, the
deterministic synthetic prompt, the `ext.llm` record built from runner protocol v3's events, and the accuracy drift
of logits (docs/results.md, "ext.llm"; docs/runner-protocol.md, "v3").

The unit the statistics use is one request: a prefill of P prompt tokens (after `context_depth` tokens were decoded
into an emptied KV cache, untimed), then G greedy decode steps of one token each. Each request's TTFT and decode
speed are samples; its per-token latencies are kept as detail only, since they grow with the depth of the KV cache
and so are not independent samples for the stopping rule.

Nothing here imports a device kind, an engine or numpy at module level: the planner and the config import it.
"""

from __future__ import annotations

import hashlib
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The quantizations a suite may ask for (GGML type names, as llama.cpp's files and tools spell them).
QUANTS = ("F32", "F16", "Q8_0", "Q4_0", "Q4_K")
REFERENCE_QUANT = "F32"  # accuracy drift is measured against this variant of the same engine and model
LLM_KEYS = ("prompt_tokens", "gen_tokens", "context_depth", "quant")
MAX_TOKENS = 1 << 20  # a sanity bound: no config of a phone benchmark asks for a million-token prompt

EXCLUDED = "tokenization and sampling"
TTFT_DEFINITION = ("TTFT = the prefill of the P prompt tokens, until the logits of the first generated token are "
                   "ready (its argmax is not timed; the depth tokens were decoded before, untimed)")
SAMPLES_DEFINITION = ("samples_s: one per request, its decode seconds per generated token (the G decode steps' "
                      "time / G); TTFT, prefill and decode tokens/s per request are in ext.llm")


@dataclass(frozen=True, order=True)
class LlmWorkload:
    """One LLM request shape: P prompt tokens after D tokens already in the KV cache, then G generated tokens, with
    the model quantized as `quant`."""

    quant: str
    prompt_tokens: int
    gen_tokens: int
    context_depth: int = 0

    def key(self) -> str:
        """The workload's part of a config's identity and series keys (devicelab.result.Config.workload)."""
        return f"llm {self.quant} P{self.prompt_tokens} G{self.gen_tokens} D{self.context_depth}"

    def to_dict(self) -> dict[str, Any]:
        return {"quant": self.quant, "prompt_tokens": self.prompt_tokens, "gen_tokens": self.gen_tokens,
                "context_depth": self.context_depth}


def workload_from_key(key: str) -> LlmWorkload | None:
    """The workload a config's `workload` names, or None (not an LLM config)."""
    parts = key.split()
    if len(parts) != 5 or parts[0] != "llm" or parts[1] not in QUANTS:
        return None
    try:
        p, g, d = (int(x[1:]) for x in parts[2:])
    except ValueError:
        return None
    return LlmWorkload(parts[1], p, g, d)


def _ints(raw: Any, key: str, where: str, problems: list[str], minimum: int, default: list[int] | None) -> list[int]:
    values = raw.get(key, default) if isinstance(raw, dict) else default
    if values is None:
        problems.append(f"{where}.{key}: missing; allowed: an integer >= {minimum} or a list of them")
        return []
    out: list[int] = []
    for v in values if isinstance(values, list) else [values]:
        if isinstance(v, bool) or not isinstance(v, int) or not minimum <= v <= MAX_TOKENS:
            problems.append(f"{where}.{key}: {v!r} is not allowed; allowed: an integer from {minimum} to {MAX_TOKENS}")
        elif v not in out:
            out.append(v)
    if not out and not values:
        problems.append(f"{where}.{key}: must list at least one integer >= {minimum}")
    return out


def parse_llm(raw: Any, where: str, problems: list[str]) -> tuple[LlmWorkload, ...]:
    """A suite's `llm:` mapping → its workloads (every list expanded, like threads); every problem appended, each
    naming its field and the allowed values."""
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be a mapping of {', '.join(LLM_KEYS)}")
        return ()
    for key in raw:
        if key not in LLM_KEYS:
            problems.append(f"{where}.{key}: unknown key; allowed: {', '.join(LLM_KEYS)}")
    before = len(problems)
    prompts = _ints(raw, "prompt_tokens", where, problems, 1, None)
    gens = _ints(raw, "gen_tokens", where, problems, 1, None)
    depths = _ints(raw, "context_depth", where, problems, 0, [0])
    quants: list[str] = []
    raw_quants = raw.get("quant", [REFERENCE_QUANT])
    for q in raw_quants if isinstance(raw_quants, list) else [raw_quants]:
        if q not in QUANTS:
            problems.append(f"{where}.quant: {q!r} is not allowed; allowed: {', '.join(QUANTS)}")
        elif q not in quants:
            quants.append(q)
    if not quants and len(problems) == before:
        problems.append(f"{where}.quant: must list at least one of {', '.join(QUANTS)}")
    if len(problems) > before:
        return ()
    return tuple(LlmWorkload(q, p, g, d) for q in quants for p in prompts for g in gens for d in depths)


# --------------------------------------------------------------------------------------------------
# GGUF files: what the controller reads of them (the `gguf` package's reader; nothing is loaded for inference)

GGUF_MAGIC = b"GGUF"


def gguf_problem(path: Path) -> str | None:
    """Why the file is not a readable GGUF model, or None."""
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        return e.strerror or type(e).__name__
    if magic != GGUF_MAGIC:
        return f"it does not start with the GGUF magic (starts with {magic!r})"
    try:
        vocab(path)
    except Exception as e:  # noqa: BLE001 - any parse failure is the user's file, reported in one line
        return (str(e).splitlines() or [type(e).__name__])[0][:160]
    return None


@dataclass(frozen=True)
class Vocab:
    """What the synthetic prompt needs of a model's tokenizer: its size and the ids never to feed."""

    size: int
    special: frozenset[int]


# llama.cpp's token types (gguf.TokenType): only NORMAL tokens are text a user could type.
_NORMAL_TOKEN = 1
_SPECIAL_ID_KEYS = ("bos_token_id", "eos_token_id", "unknown_token_id", "padding_token_id", "separator_token_id",
                    "eot_token_id", "eom_token_id")


def vocab(path: Path) -> Vocab:
    """The vocabulary size and special token ids of a GGUF file (tokenizer.ggml.*); ValueError when it has none."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    if tokens is None:
        raise ValueError("no tokenizer.ggml.tokens (not a language model's GGUF)")
    size = len(tokens.data)
    special: set[int] = set()
    types = reader.fields.get("tokenizer.ggml.token_type")
    if types is not None:
        for i, idx in enumerate(types.data):
            if int(types.parts[idx][0]) != _NORMAL_TOKEN:
                special.add(i)
    for key in _SPECIAL_ID_KEYS:
        field = reader.fields.get(f"tokenizer.ggml.{key}")
        if field is not None:
            special.add(int(field.parts[field.data[0]][0]))
    if len(special) >= size:
        raise ValueError("every token of its vocabulary is a special token")
    return Vocab(size, frozenset(special))


def synthetic_tokens(seed: int, workload: LlmWorkload, voc: Vocab) -> tuple[list[int], list[int]]:
    """(depth tokens, prompt tokens): deterministic token ids from the run's input seed, drawn uniformly from the
    vocabulary minus its special tokens, so every engine and every run sees the same prompt. The stream depends on
    the seed and the vocabulary only: a longer prompt extends a shorter one."""
    import numpy as np

    allowed = np.array(sorted(set(range(voc.size)) - voc.special), dtype=np.int64)
    rng = np.random.default_rng([seed, 0x11A])
    ids = allowed[rng.integers(0, len(allowed), size=workload.context_depth + workload.prompt_tokens)]
    return ids[:workload.context_depth].tolist(), ids[workload.context_depth:].tolist()


def runner_payload(seed: int, workload: LlmWorkload, voc: Vocab) -> dict[str, Any]:
    """The `llm` key of a v3 runner's config (docs/runner-protocol.md)."""
    depth, prompt = synthetic_tokens(seed, workload, voc)
    return {"prompt": prompt, "depth": depth, "gen_tokens": workload.gen_tokens, "seed": seed,
            "quant": workload.quant}


# --------------------------------------------------------------------------------------------------
# What a v3 runner reports, and the Result it makes


@dataclass(frozen=True)
class Request:
    """One timed request as its events told it: the prefill, each decode step, and the whole."""

    prefill_s: float
    token_s: tuple[float, ...]
    request_s: float

    @property
    def decode_s(self) -> float:
        return float(sum(self.token_s))

    @property
    def per_token_s(self) -> float:
        """The statistic's sample: decode seconds per generated token."""
        return self.decode_s / len(self.token_s)


def _median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def _p90(xs: Sequence[float]) -> float:
    s = sorted(xs)
    return float(s[min(len(s) - 1, max(0, math.ceil(0.9 * len(s)) - 1))])


def _spread(xs: Sequence[float]) -> dict[str, Any]:
    return {"median": _median(xs), "p90": _p90(xs), "samples": [float(x) for x in xs]}


def ext_llm(workload: LlmWorkload, requests: Sequence[Request], ready_llm: Mapping[str, Any],
            energy_j_per_request: float | None) -> dict[str, Any]:
    """`ext.llm` of an ok row: the workload, the per-request figures (TTFT, prefill and decode tokens/s: medians and
    p90s of the per-request values, which are the samples; a rate's p90 is its slow tail), the per-token latencies as detail, what the runner said
    of the model, and energy per generated token when energy was measured."""
    p, g = workload.prompt_tokens, workload.gen_tokens
    ttft = [r.prefill_s for r in requests]
    prefill_tps = [p / r.prefill_s for r in requests]
    decode_tps = [g / r.decode_s for r in requests]
    tokens = [t for r in requests for t in r.token_s]
    out: dict[str, Any] = {
        **workload.to_dict(),
        "requests": len(requests),
        "ttft_s": _spread(ttft),
        # A rate's p90 is the slow tail, as a latency's is: the rate at the 90th percentile of the request's time
        # (the 90th percentile of the rates themselves would be the fast end).
        "prefill_tps": {"median": _median(prefill_tps), "p90": p / _p90(ttft)},
        "decode_tps": {"median": _median(decode_tps), "p90": g / _p90([r.decode_s for r in requests]),
                       "samples": decode_tps},
        "token_s": _spread(tokens),
        "excluded": EXCLUDED,
    }
    for key in ("model_bytes", "n_params", "n_ctx", "n_vocab"):
        if isinstance(ready_llm.get(key), int) and not isinstance(ready_llm.get(key), bool):
            out[key] = int(ready_llm[key])
    if isinstance(ready_llm.get("kv_type"), str):
        out["kv_type"] = ready_llm["kv_type"]
    if isinstance(ready_llm.get("quant"), str):
        out["model_quant"] = ready_llm["quant"]  # as the runner read it from the file
    if energy_j_per_request is not None:
        out["energy_per_token_j"] = energy_j_per_request / g  # the request's energy, prefill included, per decode step
    return out


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x >= 0


def _spread_ok(x: Any, samples: bool) -> bool:
    return (isinstance(x, dict) and _num(x.get("median")) and _num(x.get("p90"))
            and (not samples or (isinstance(x.get("samples"), list) and all(_num(v) for v in x["samples"]))))


def check_ext_llm(x: Any) -> bool:
    """ext.llm's validator (devicelab.result.EXTENSIONS): the workload always; the figures when any is present
    (a failed or unsupported row carries the workload only)."""
    if not isinstance(x, dict) or x.get("quant") not in QUANTS:
        return False
    ints = [x.get(k) for k in ("prompt_tokens", "gen_tokens", "context_depth")]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in ints) or ints[0] < 1 or ints[1] < 1 \
            or ints[2] < 0:
        return False
    if "ttft_s" not in x:
        return not any(k in x for k in ("decode_tps", "prefill_tps", "token_s"))
    return (_spread_ok(x.get("ttft_s"), True) and _spread_ok(x.get("prefill_tps"), False)
            and _spread_ok(x.get("decode_tps"), True) and _spread_ok(x.get("token_s"), True)
            and x.get("excluded") == EXCLUDED
            and all(_num(x[k]) for k in ("energy_per_token_j", "model_bytes", "n_params", "file_bytes") if k in x))


# --------------------------------------------------------------------------------------------------
# Accuracy drift: logits against the F32 variant of the same engine, same prompt


def read_logits(path: Path, n_vocab: int) -> Any:
    """A v3 runner's outputs file: float32, row-major, (G + 1) × n_vocab."""
    import numpy as np

    data = np.fromfile(path, dtype="<f4")
    if n_vocab <= 0 or data.size == 0 or data.size % n_vocab:
        raise ValueError(f"the logits file holds {data.size} floats, not a whole number of rows of {n_vocab}")
    return data.reshape(-1, n_vocab)


def drift(reference: Any, got: Any) -> dict[str, Any]:
    """Per-step cosine similarity of the logits and agreement of their argmax (the greedy token) over the G + 1
    steps. After the first disagreement the two greedy paths feed different tokens, so later steps compare
    different contexts: `first_disagreement` says where that began (None: never), and `cosine_*_shared` are over
    the `shared_steps` before it and the step itself (the same context on both sides)."""
    import numpy as np

    a, b = np.asarray(reference, dtype=np.float64), np.asarray(got, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"logits of shape {list(b.shape)} against a reference of shape {list(a.shape)}")
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos = np.where(norms > 0, (a * b).sum(axis=1) / np.where(norms > 0, norms, 1), 0.0)
    agree = a.argmax(axis=1) == b.argmax(axis=1)
    first = int(np.argmin(agree)) if not agree.all() else None
    # The steps up to and including the first disagreement saw the same tokens: their cosine measures the
    # quantization; after it, a different token went in (with seeded weights the logits sit almost level, so one
    # flip comes soon and the later logits are of another sequence).
    shared = cos[: (first + 1 if first is not None else len(cos))]
    return {"steps": int(a.shape[0]), "cosine_min": float(cos.min()), "cosine_mean": float(cos.mean()),
            "top1_agreement": float(agree.mean()), "first_disagreement": first, "shared_steps": int(len(shared)),
            "cosine_min_shared": float(shared.min()), "cosine_mean_shared": float(shared.mean())}


def logits_key(engine: str, label: str, engine_version: str, model: str, workload: LlmWorkload, seed: int,
               device_profile: str) -> str:
    """Which stored logits a variant is compared with: the same device, engine build, model (by name: its quantized
    files differ), prompt (P, D, seed), G; only the quantization left out."""
    parts = [device_profile, engine, label, engine_version, model, str(workload.prompt_tokens),
             str(workload.gen_tokens), str(workload.context_depth), str(seed)]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]
