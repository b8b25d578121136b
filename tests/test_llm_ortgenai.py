"""ONNX Runtime GenAI (the `ortgenai` engine): the GGUF → ONNX decoder converter held to an independent numpy Llama
(Hugging Face's rope layout on un-permuted weights), the runner's greedy path against GenAI's own
generate_next_token, `devicelab run` at 1 and 2 threads, bad input as `unsupported` rows, and the engines-against-
each-other drift with llama.cpp at F32 (slow: it needs the cached llama.cpp build). Real wheel, real models
(llama-tiny), real processes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from devicelab import llm, ortgenai_convert, zoo_llm
from devicelab.engines.base import SourceModel, UnsupportedError
from devicelab.engines.ortgenai import ENGINE as ORTGENAI
from devicelab.engines.ortgenai import WHY_NOT, GenAISession
from helpers import FAST_PROTOCOL, run_json



@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> zoo_llm.LlmModel:
    return zoo_llm.llm_model("llama-tiny", "F32", tmp_path_factory.mktemp("llm-zoo"))


@pytest.fixture(scope="module")
def folder(tiny: zoo_llm.LlmModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    prepared = ORTGENAI.prepare_llm(SourceModel("llama-tiny", tiny.path, tiny.sha256, ()), "F32",
                                    tmp_path_factory.mktemp("converted"))
    return prepared.path


# ---- the converter against an independent Llama in numpy


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """GGUF's Q/K rows back to Hugging Face's order (the inverse of convert_hf_to_gguf's `permute`)."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _reference_logits(path: Path, tokens: list[int]) -> np.ndarray:
    """Every position's logits of a Llama written the Hugging Face way: Q/K un-permuted, rope rotating the halves
    (rotate_half), float64 throughout. Shares nothing with the converter but the GGUF file."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    w = {t.name: np.asarray(t.data, dtype=np.float64) for t in reader.tensors}

    def meta(key: str) -> Any:
        return reader.fields[key].contents()

    n_head, n_kv = meta("llama.attention.head_count"), meta("llama.attention.head_count_kv")
    eps, base = meta("llama.attention.layer_norm_rms_epsilon"), meta("llama.rope.freq_base")
    x = w["token_embd.weight"][tokens]
    d = x.shape[1] // n_head
    pos = np.arange(len(tokens))[:, None]
    freqs = pos / base ** (np.arange(0, d, 2) / d)
    cos, sin = np.cos(np.concatenate([freqs, freqs], 1)), np.sin(np.concatenate([freqs, freqs], 1))

    def rope(t: np.ndarray) -> np.ndarray:  # [S, H, d]
        rot = np.concatenate([-t[..., d // 2:], t[..., :d // 2]], -1)
        return t * cos[:, None] + rot * sin[:, None]

    def norm(t: np.ndarray, g: np.ndarray) -> np.ndarray:
        return t / np.sqrt((t * t).mean(-1, keepdims=True) + eps) * g

    s = len(tokens)
    for i in range(meta("llama.block_count")):
        b = f"blk.{i}."
        h = norm(x, w[b + "attn_norm.weight"])
        q = rope((h @ _unpermute(w[b + "attn_q.weight"], n_head).T).reshape(s, n_head, d))
        k = rope((h @ _unpermute(w[b + "attn_k.weight"], n_kv).T).reshape(s, n_kv, d))
        v = (h @ w[b + "attn_v.weight"].T).reshape(s, n_kv, d)
        k, v = np.repeat(k, n_head // n_kv, 1), np.repeat(v, n_head // n_kv, 1)
        scores = np.einsum("shd,thd->hst", q, k) / np.sqrt(d) + np.triu(np.full((s, s), -np.inf), 1)
        p = np.exp(scores - scores.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        x = x + np.einsum("hst,thd->shd", p, v).reshape(s, -1) @ w[b + "attn_output.weight"].T
        h = norm(x, w[b + "ffn_norm.weight"])
        gate = h @ w[b + "ffn_gate.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * (h @ w[b + "ffn_up.weight"].T)) @ w[b + "ffn_down.weight"].T
    return norm(x, w["output_norm.weight"]) @ w["output.weight"].T


def test_the_converted_decoder_matches_an_independent_llama_with_and_without_past(tiny: zoo_llm.LlmModel,
                                                                                  folder: Path) -> None:
    import onnxruntime as ort

    files = sorted(p.name for p in folder.iterdir())
    assert files == ["devicelab.json", "genai_config.json", "model.onnx", "model.onnx.data"]
    cfg = json.loads((folder / "genai_config.json").read_text())
    dec = cfg["model"]["decoder"]
    assert (dec["num_attention_heads"], dec["num_key_value_heads"], dec["head_size"], dec["num_hidden_layers"]) \
        == (4, 2, 64, 2)
    assert cfg["search"]["do_sample"] is False and cfg["search"]["past_present_share_buffer"] is False
    assert json.loads((folder / "devicelab.json").read_text())["n_params"] == tiny.n_params

    tokens = [300, 17, 480, 259, 301, 402, 77, 290]
    want = _reference_logits(tiny.path, tokens)
    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    empty = np.zeros((1, 2, 0, 64), np.float32)
    feeds: dict[str, Any] = {f"past_key_values.{i}.{k}": empty for i in range(2) for k in ("key", "value")}
    split = 5  # a prefill of 5 tokens, then one token at a time with the KV cache fed back
    out = sess.run(None, {"input_ids": np.array([tokens[:split]]), "attention_mask": np.ones((1, split), np.int64),
                          "position_ids": np.arange(split)[None], **feeds})
    got = [out[0][0, -1]]
    names = [o.name for o in sess.get_outputs()]
    for n in range(split, len(tokens)):
        past = {name.replace("present", "past_key_values"): v for name, v in zip(names[1:], out[1:])}
        out = sess.run(None, {"input_ids": np.array([[tokens[n]]]), "attention_mask": np.ones((1, n + 1), np.int64),
                              "position_ids": np.array([[n]]), **past})
        got.append(out[0][0, -1])
    ref = want[split - 1:]
    cos = (ref * np.array(got)).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
    assert np.abs(np.array(got) - ref).max() < 1e-3 * np.abs(ref).max() and cos.min() > 0.999999
    assert (np.array(got).argmax(1) == ref.argmax(1)).all()


def _quantized_gguf(path: Path) -> Path:
    """A small GGUF language model (a real tokenizer section) whose embedding is Q8_0, quantized by gguf-py."""
    import gguf

    n_vocab = 64
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list([b"<unk>", b"<s>", b"</s>", *(f"t{i}".encode() for i in range(3, n_vocab))])
    w.add_token_types([gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL,
                       *([gguf.TokenType.NORMAL] * (n_vocab - 3))])
    data = np.random.default_rng(0).normal(size=(n_vocab, 64)).astype(np.float32)
    w.add_tensor("token_embd.weight", gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0),
                 raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_a_quantized_gguf_and_the_quants_not_converted_are_unsupported_rows(env: dict[str, str], tmp_path: Path,
                                                                            tiny: zoo_llm.LlmModel) -> None:
    q8 = _quantized_gguf(tmp_path / "q8.gguf")
    raw = {"models": [{"path": str(q8), "name": "mine"}], "threads": [1],
           "llm": {"prompt_tokens": 8, "gen_tokens": 2, "quant": ["F32"]}}
    code, data, err = run_json("run", "--suite", str(_suite(tmp_path, **raw)), env=env)
    assert code == 0, err
    (row,) = data["results"]
    assert row["status"] == "unsupported", row
    assert row["reason"] == ("mine: tensor token_embd.weight is Q8_0: ortgenai converts F32 or F16 GGUF files only "
                             "(a quantized file would be dequantized, which is not that quantization's speed or "
                             "accuracy)")
    assert row["ext"]["llm"] == {"quant": "F32", "prompt_tokens": 8, "gen_tokens": 2, "context_depth": 0}
    assert not list((Path(env["DEVICELAB_DATA"]) / "converted" / "ortgenai").glob("q8-*"))  # nothing half-written
    for quant in ("F16", "Q8_0", "Q4_0", "Q4_K"):
        with pytest.raises(UnsupportedError) as e:
            ORTGENAI.prepare_llm(SourceModel("llama-tiny", tiny.path, tiny.sha256, ()), quant, tmp_path)
        assert str(e.value) == WHY_NOT[quant]


# ---- the runner's greedy path is GenAI's own


def test_the_runners_greedy_steps_are_genai_generate_next_token(folder: Path, tiny: zoo_llm.LlmModel) -> None:
    import onnxruntime_genai as og

    w = llm.LlmWorkload("F32", 12, 6, 5)
    payload = llm.runner_payload(3, w, llm.vocab(tiny.path))
    session = GenAISession({"model": str(folder), "llm": payload})
    r = session.request()
    assert len(r.token_s) == 6 and r.prefill_s > 0 and all(s > 0 for s in r.token_s)
    rows = np.frombuffer(session.logits(), dtype="<f4").reshape(7, 512)
    mine = rows.argmax(1).tolist()
    # GenAI's own greedy loop over the same prompt: generate_next_token picks each token from the logits.
    params = og.GeneratorParams(session.model)
    params.set_search_options(max_length=5 + 12 + 7, do_sample=False)
    g = og.Generator(session.model, params)
    g.append_tokens(np.array(payload["depth"], np.int32))
    g.append_tokens(np.array(payload["prompt"], np.int32))
    theirs = []
    for _ in range(7):
        g.generate_next_token()
        theirs.append(int(g.get_next_tokens()[0]))
    assert mine == theirs
    assert session.info()["n_vocab"] == 512 and session.info()["kv_type"] == "f32"


# ---- devicelab run


def _suite(tmp_path: Path, **over: Any) -> Path:
    raw = {"models": ["llama-tiny"], "engines": ["ortgenai"], "threads": [1, 2], "affinity": ["big"],
           "llm": {"prompt_tokens": 16, "gen_tokens": 4, "context_depth": [0, 32], "quant": ["F32"]},
           "protocol": {**FAST_PROTOCOL, "accuracy_inputs": 0}, "seed": 4, **over}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_devicelab_run_gives_ok_rows_with_ext_llm_at_1_and_2_threads(env: dict[str, str], tmp_path: Path) -> None:
    raw_llm = {"prompt_tokens": 16, "gen_tokens": 4, "context_depth": [0, 32], "quant": ["F32", "Q4_0"]}
    code, data, err = run_json("run", "--suite", str(_suite(tmp_path, llm=raw_llm)), env=env)
    assert code == 0, err
    rows = data["results"]
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(rows) == 8 and len(ok) == 4, [(r["status"], r.get("reason")) for r in rows]
    assert {(r["threads"], r["ext"]["llm"]["context_depth"]) for r in ok} == {(1, 0), (1, 32), (2, 0), (2, 32)}
    from importlib.metadata import version

    # the wheel, the ONNX Runtime it runs on and the converter that wrote the graph: each starts a new series
    series = f"{version('onnxruntime-genai')}+ort{version('onnxruntime')}+dlconv{ortgenai_convert.CONVERTER_VERSION}"
    for r in ok:
        x = r["ext"]["llm"]
        assert r["engine"] == "ortgenai" and r["protocol"]["runner_protocol"] == 3 and r["engine_version"] == series
        assert x["ttft_s"]["median"] > 0 and x["prefill_tps"]["median"] > 0 and x["decode_tps"]["median"] > 0
        assert len(r["samples_s"]) == x["requests"] and len(x["token_s"]["samples"]) == 4 * x["requests"]
        assert x["n_vocab"] == 512 and x["model_quant"] == "F32" and x["kv_type"] == "f32"
        assert x["n_ctx"] == x["context_depth"] + 16 + 4
        assert x["drift"]["steps"] == 5
    q4 = [r for r in rows if r["status"] != "ok"]
    assert all(r["status"] == "unsupported" and r["reason"] == WHY_NOT["Q4_0"] for r in q4), q4


# ---- engines against each other at F32: ONNX Runtime GenAI against llama.cpp


@pytest.mark.slow  # needs llama.cpp's host build (cached under ~/.cache, keyed by version)
def test_ortgenai_f32_logits_agree_with_llama_cpp(llm_host: dict[str, Any], env: dict[str, str],
                                                  tmp_path: Path) -> None:
    """Both engines at F32 on llama-tiny, the same prompt, at two depths: whichever ran second compares its logits
    with the other's (ext.llm.drift.vs_engines_f32). A converter that got the rope, the norms or the heads wrong
    fails here, long before a cosine of 0.9999."""
    raw = {"engines": ["llamacpp", "ortgenai"], "threads": [1],
           "llm": {"prompt_tokens": 24, "gen_tokens": 16, "context_depth": [0, 200], "quant": ["F32"]}}
    code, data, err = run_json("run", "--suite", str(_suite(tmp_path, **raw)), "--report",
                               str(tmp_path / "report.html"), env=env)
    assert code == 0, err
    rows = data["results"]
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows), [r.get("reason") for r in rows]
    html = (tmp_path / "report.html").read_text()  # both engines' F32 rows show the comparison
    assert "reference; vs ortgenai: top-1 100%" in html and "reference; vs llamacpp: top-1 100%" in html
    figures = {}
    for r in rows:
        other = r["ext"]["llm"]["drift"].get("vs_engines_f32", {})
        for name, d in other.items():
            figures[(r["engine"], name, r["ext"]["llm"]["context_depth"])] = d
    assert {(a, b) for a, b, _ in figures} <= {("llamacpp", "ortgenai"), ("ortgenai", "llamacpp")}
    assert sorted(depth for _, _, depth in figures) == [0, 200], figures  # one comparison per depth
    for d in figures.values():
        assert d["steps"] == 17 and d["first_disagreement"] is None and d["top1_agreement"] == 1.0, d
        assert d["cosine_min_shared"] > 0.99999, d  # measured: 1 - 4e-8 at depth 200


def test_threads_are_genai_configs_intra_op_threads(folder: Path, tiny: zoo_llm.LlmModel, tmp_path: Path) -> None:
    """stage() writes the config's thread count into the run folder's genai_config.json; ONNX Runtime then starts
    N - 1 pool threads beside the caller (counted in /proc: what the engine really runs, not what it was told)."""
    import os

    payload = llm.runner_payload(3, llm.LlmWorkload("F32", 8, 2, 0), llm.vocab(tiny.path))
    # The first model in this process also starts ONNX Runtime's process-wide threads (its telemetry uploader, unless
    # CI=true as the session sets it for runners): counted before, not as a session's.
    GenAISession({"model": str(folder), "llm": payload}).request()
    started = {}
    for threads in (1, 2, 3):
        run = tmp_path / f"t{threads}"
        run.mkdir()
        cfg = ORTGENAI.stage({"model": str(folder), "threads": threads, "llm": payload, "inputs": []}, run)
        staged = json.loads((run / cfg["model"] / "genai_config.json").read_text())
        assert staged["model"]["decoder"]["session_options"]["intra_op_num_threads"] == threads
        assert (run / cfg["model"] / "model.onnx.data").resolve() == (folder / "model.onnx.data").resolve()
        before = len(os.listdir("/proc/self/task"))
        session = GenAISession({**cfg, "model": str(run / cfg["model"])})
        session.request()
        started[threads] = len(os.listdir("/proc/self/task")) - before
        del session
    assert started == {1: 0, 2: 1, 3: 2}, started
