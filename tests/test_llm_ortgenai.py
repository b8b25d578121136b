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


def _llama_gguf(path: Path, rope_base: float = 10000.0, eps: float = 1e-5, embd_scale: float = 1.0,
                extra: dict[str, np.ndarray] | None = None, keys: dict[str, Any] | None = None,
                drop: tuple[str, ...] = ()) -> Path:
    """llama-tiny's shapes and seeded weights written as the zoo writes them, with what a test needs changed: the rope
    base and RMSNorm eps (the zoo always writes 10000 and 1e-5, and 10000 is also the converter's default, so a
    converter reading neither would pass on zoo files), the embedding's scale (small, so that eps matters), extra
    tensors or metadata keys, tensors left out."""
    import gguf

    e = zoo_llm.LLM_ZOO["llama-tiny"]
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(e.n_ctx_train)
    w.add_embedding_length(e.n_embd)
    w.add_block_count(e.n_layer)
    w.add_feed_forward_length(e.n_ff)
    w.add_head_count(e.n_head)
    w.add_head_count_kv(e.n_head_kv)
    w.add_rope_dimension_count(e.head_dim)
    w.add_rope_freq_base(rope_base)
    w.add_layer_norm_rms_eps(eps)
    w.add_file_type(zoo_llm.FTYPES["F32"])
    for key, value in (keys or {}).items():
        w.add_float32(key, value) if isinstance(value, float) else w.add_string(key, value)
    tokens, scores, types = zoo_llm.vocabulary(e.n_vocab)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    weights = zoo_llm._weights(e, zoo_llm.SEED)
    weights["token_embd.weight"] = weights["token_embd.weight"] * np.float32(embd_scale)
    for name, array in {**weights, **(extra or {})}.items():
        if name not in drop:
            w.add_tensor(name, array)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _onnx_logits(folder: Path, tokens: list[int], split: int) -> np.ndarray:
    """The converted graph's logits for tokens[split-1:], run in ONNX Runtime: a prefill of `split` tokens, then one
    token at a time with the KV cache fed back."""
    import onnxruntime as ort

    info = json.loads((folder / "devicelab.json").read_text())["hyper"]
    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    empty = np.zeros((1, info["n_head_kv"], 0, info["n_embd"] // info["n_head"]), np.float32)
    feeds: dict[str, Any] = {f"past_key_values.{i}.{k}": empty
                             for i in range(info["n_layer"]) for k in ("key", "value")}
    out = sess.run(None, {"input_ids": np.array([tokens[:split]]), "attention_mask": np.ones((1, split), np.int64),
                          "position_ids": np.arange(split)[None], **feeds})
    got = [out[0][0, -1]]
    names = [o.name for o in sess.get_outputs()]
    for n in range(split, len(tokens)):
        past = {name.replace("present", "past_key_values"): v for name, v in zip(names[1:], out[1:])}
        out = sess.run(None, {"input_ids": np.array([[tokens[n]]]), "attention_mask": np.ones((1, n + 1), np.int64),
                              "position_ids": np.array([[n]]), **past})
        got.append(out[0][0, -1])
    return np.array(got)


def _assert_close(got: np.ndarray, ref: np.ndarray) -> None:
    cos = (ref * got).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
    assert np.abs(got - ref).max() < 1e-3 * np.abs(ref).max() and cos.min() > 0.999999, \
        (np.abs(got - ref).max(), np.abs(ref).max(), cos.min())
    assert (got.argmax(1) == ref.argmax(1)).all()


def test_the_converted_decoder_matches_an_independent_llama_with_and_without_past(tiny: zoo_llm.LlmModel,
                                                                                  folder: Path) -> None:
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["devicelab.json", "genai_config.json", "model.onnx", "model.onnx.data"]
    cfg = json.loads((folder / "genai_config.json").read_text())
    dec = cfg["model"]["decoder"]
    assert (dec["num_attention_heads"], dec["num_key_value_heads"], dec["head_size"], dec["num_hidden_layers"]) \
        == (4, 2, 64, 2)
    assert cfg["search"]["do_sample"] is False and cfg["search"]["past_present_share_buffer"] is False
    assert json.loads((folder / "devicelab.json").read_text())["n_params"] == tiny.n_params

    tokens = [300, 17, 480, 259, 301, 402, 77, 290]
    split = 5  # a prefill of 5 tokens, then one token at a time with the KV cache fed back
    _assert_close(_onnx_logits(folder, tokens, split), _reference_logits(tiny.path, tokens)[split - 1:])


def test_the_rope_base_and_rms_eps_are_the_files(tmp_path: Path) -> None:
    """A file whose freq_base (500000) and eps (1e-2, with an embedding small enough for eps to matter) are not the
    zoo's or the converter's defaults: the graph must read both from the file to match the reference, which reads
    them from the file too. 48 positions so that the rope's slower frequencies turn far enough to tell the bases
    apart."""
    src = _llama_gguf(tmp_path / "odd.gguf", rope_base=500000.0, eps=1e-2, embd_scale=0.1)
    ortgenai_convert.write_folder(src, tmp_path / "odd")
    tokens = [int(t) for t in np.random.default_rng(7).integers(259, 512, size=48)]
    _assert_close(_onnx_logits(tmp_path / "odd", tokens, 40), _reference_logits(src, tokens)[39:])


def test_the_prefill_skips_the_last_blocks_feed_forward_for_all_but_the_last_position(folder: Path) -> None:
    """llama.cpp cuts the sequence to the output position after the last block's attention (inp_out_ids): the graph
    must do no more work than that. The feed-forward's gate MatMul of every block is made a graph output and a
    prefill of 5 tokens run: the first block computes it for 5 positions (later positions attend to them), the last
    for 1."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    model = onnx.load(str(folder / "model.onnx"))  # with its external weights, from the folder
    gates = {n.input[1].split("_")[0]: n.output[0] for n in model.graph.node
             if n.op_type == "MatMul" and n.input[1].startswith(("l0_wgate_", "l1_wgate_"))}
    assert sorted(gates) == ["l0", "l1"]
    for name in gates.values():
        model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    empty = np.zeros((1, 2, 0, 64), np.float32)
    feeds: dict[str, Any] = {f"past_key_values.{i}.{k}": empty for i in range(2) for k in ("key", "value")}
    out = sess.run([gates["l0"], gates["l1"], "logits"],
                   {"input_ids": np.array([[300, 17, 480, 259, 301]]), "attention_mask": np.ones((1, 5), np.int64),
                    "position_ids": np.arange(5)[None], **feeds})
    assert [o.shape for o in out] == [(1, 5, 768), (1, 1, 768), (1, 1, 512)]


@pytest.mark.parametrize(("change", "named"), [
    ({"extra": {"blk.0.attn_q.bias": np.zeros(256, np.float32)}}, "tensor blk.0.attn_q.bias: not converted"),
    ({"extra": {"blk.1.attn_output.bias": np.zeros(256, np.float32)}}, "tensor blk.1.attn_output.bias: not converted"),
    ({"extra": {"blk.0.ffn_down.bias": np.zeros(256, np.float32)}}, "tensor blk.0.ffn_down.bias: not converted"),
    ({"extra": {"blk.1.ffn_up.scale": np.ones(1, np.float32)}}, "tensor blk.1.ffn_up.scale: not converted"),
    ({"keys": {"llama.rope.scaling.factor": 2.0}}, "llama.rope.scaling.factor: 2.0 is not converted"),
    ({"keys": {"llama.rope.scale_linear": 4.0}}, "llama.rope.scale_linear: 4.0 is not converted"),
    ({"keys": {"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": 8.0}},
     "llama.rope.scaling.factor: 8.0 is not converted"),
])
def test_what_llama_cpp_would_apply_and_the_graph_would_not_is_refused(change: dict[str, Any], named: str,
                                                                       tmp_path: Path) -> None:
    """Optional biases and `.scale` tensors llama.cpp multiplies in for llama files, and the rope frequency scale it
    applies without any scaling type: a graph without them would be another model under the file's name. Refused
    before anything is written, naming the tensor or key."""
    src = _llama_gguf(tmp_path / "m.gguf", **change)
    cache = tmp_path / "converted"
    with pytest.raises(UnsupportedError) as e:
        ORTGENAI.prepare_llm(SourceModel("m", src, "0" * 64, ()), "F32", cache)
    assert str(e.value).startswith(f"m: {named}"), str(e.value)
    assert "\n" not in str(e.value) and not cache.exists()


def test_neutral_rope_factors_convert(tmp_path: Path) -> None:
    """A factor of 1 (or 0, llama.cpp's "unset") scales nothing: such a file converts, and its logits are the
    reference's."""
    src = _llama_gguf(tmp_path / "m.gguf", keys={"llama.rope.scaling.type": "linear",
                                                 "llama.rope.scaling.factor": 1.0, "llama.rope.scale_linear": 0.0})
    ortgenai_convert.write_folder(src, tmp_path / "m")
    tokens = [300, 17, 480, 259, 301, 402]
    _assert_close(_onnx_logits(tmp_path / "m", tokens, 4), _reference_logits(src, tokens)[3:])


def _load_copy(path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The module at `path` imported under its own name (a copy of the converter)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, path.stem, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_converter_version_is_its_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A converter changed by one comment line is another converter: another version, so another cache key (a cached
    graph is never reused) and another engine version (a series never continues silently)."""
    source = Path(ortgenai_convert.__file__).read_text()
    (tmp_path / "changed_convert.py").write_text(source + "\n# one more line\n")
    changed = _load_copy(tmp_path / "changed_convert.py", monkeypatch)
    assert changed.CONVERTER_VERSION != ortgenai_convert.CONVERTER_VERSION
    assert changed.cache_key("0" * 64) != ortgenai_convert.cache_key("0" * 64)
    (tmp_path / "same_convert.py").write_text(source)
    again = _load_copy(tmp_path / "same_convert.py", monkeypatch)
    assert again.CONVERTER_VERSION == ortgenai_convert.CONVERTER_VERSION  # the source decides, not the path
    assert ORTGENAI.version().endswith(f"+dlconv{ortgenai_convert.CONVERTER_VERSION}")


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


def test_a_quantized_gguf_and_the_quants_not_converted_are_unsupported_rows_a_broken_file_a_failed_one(
        env: dict[str, str], tmp_path: Path, tiny: zoo_llm.LlmModel) -> None:
    q8 = _quantized_gguf(tmp_path / "q8.gguf")
    broken = _llama_gguf(tmp_path / "broken.gguf", drop=("blk.1.ffn_up.weight",))  # llama.cpp would not load it
    raw = {"models": [{"path": str(q8), "name": "mine"}, {"path": str(broken), "name": "broken"}], "threads": [1],
           "llm": {"prompt_tokens": 8, "gen_tokens": 2, "quant": ["F32"]}}
    code, data, err = run_json("run", "--suite", str(_suite(tmp_path, **raw)), env=env)
    assert code == 1, err  # the run finished, a config failed
    rows = {r["model"]: r for r in data["results"]}
    assert rows["mine"]["status"] == "unsupported", rows["mine"]
    assert rows["mine"]["reason"] == ("mine: tensor token_embd.weight is Q8_0: ortgenai converts F32 or F16 GGUF "
                                      "files only (a quantized file would be dequantized, which is not that "
                                      "quantization's speed or accuracy)")
    assert rows["mine"]["ext"]["llm"] == {"quant": "F32", "prompt_tokens": 8, "gen_tokens": 2, "context_depth": 0}
    assert rows["broken"]["status"] == "failed", rows["broken"]
    assert rows["broken"]["reason"].endswith("MalformedGGUFError: tensor blk.1.ffn_up.weight: missing (a llama file "
                                             "needs it)"), rows["broken"]["reason"]
    converted = Path(env["DEVICELAB_DATA"]) / "converted" / "ortgenai"
    assert not list(converted.glob("q8-*")) and not list(converted.glob("broken-*"))  # nothing half-written
    for quant in ("F16", "Q8_0", "Q4_0", "Q4_K"):
        cache = tmp_path / f"cache-{quant}"
        with pytest.raises(UnsupportedError) as e:
            ORTGENAI.prepare_llm(SourceModel("llama-tiny", tiny.path, tiny.sha256, ()), quant, cache)
        assert quant in str(e.value)
        assert not cache.exists()  # refused before anything is converted


def test_a_context_past_the_files_is_unsupported_before_anything_runs(env: dict[str, str], tmp_path: Path) -> None:
    """depth + P + G beyond llama.context_length (2048 for llama-tiny): the graph has no positions there. Known from
    the file, so an `unsupported` row without a conversion or a runner; the config that fits runs."""
    raw = {"threads": [1], "llm": {"prompt_tokens": 16, "gen_tokens": 4, "context_depth": [0, 2040],
                                   "quant": ["F32"]}}
    code, data, err = run_json("run", "--suite", str(_suite(tmp_path, **raw)), env=env)
    assert code == 0, err
    rows = {r["ext"]["llm"]["context_depth"]: r for r in data["results"]}
    assert rows[0]["status"] == "ok", rows[0].get("reason")
    assert rows[2040]["status"] == "unsupported", rows[2040]
    assert rows[2040]["reason"] == ("llama-tiny: context_depth + prompt_tokens + gen_tokens = 2060 exceeds the "
                                    "model's llama.context_length of 2048 tokens (ortgenai's graph has no positions "
                                    "past it)")


# ---- the runner's greedy path is GenAI's own


def test_the_runners_greedy_steps_are_genai_generate_next_token(folder: Path, tiny: zoo_llm.LlmModel) -> None:
    import onnxruntime_genai as og

    w = llm.LlmWorkload("F32", 12, 6, 5)
    payload = llm.runner_payload(3, w, llm.vocab(tiny.path))
    session = GenAISession({"model": str(folder), "llm": payload})
    r = session.request()
    assert len(r.token_s) == 6
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
    # kv_type as ONNX Runtime sees the graph's present outputs, not as the runner was told
    import onnxruntime as ort

    present = {o.name: o.type for o in ort.InferenceSession(str(folder / "model.onnx")).get_outputs()}["present.0.key"]
    assert session.info()["kv_type"] == {"tensor(float)": "f32", "tensor(float16)": "f16"}[present]
    assert session.info()["n_vocab"] == 512


def _median_prefill(session: GenAISession, n: int = 7) -> float:
    return float(np.median([session.request().prefill_s for _ in range(n)]))


def test_the_prefill_time_grows_with_the_prompt(folder: Path, tiny: zoo_llm.LlmModel) -> None:
    """The timed prefill is where GenAI runs the decoder over the prompt: 16 times the tokens take clearly longer
    (a span that timed a lazy call, with the work deferred to get_logits or the next step, would stay flat). Only
    ratios of medians taken in one process, no absolute time."""
    vocab = llm.vocab(tiny.path)
    short = GenAISession({"model": str(folder), "llm": llm.runner_payload(3, llm.LlmWorkload("F32", 16, 1, 0), vocab)})
    long = GenAISession({"model": str(folder), "llm": llm.runner_payload(3, llm.LlmWorkload("F32", 256, 1, 0), vocab)})
    short.request(), long.request()  # warm
    assert _median_prefill(long) > 3 * _median_prefill(short)


def test_genai_computes_the_logits_inside_append_tokens(folder: Path, tiny: zoo_llm.LlmModel) -> None:
    """What the runner's timed spans rely on: after append_tokens(prompt) the logits are ready, so get_logits (a copy)
    takes a small fraction of the append; were GenAI lazy, get_logits would carry the decoder run."""
    import time

    import onnxruntime_genai as og

    payload = llm.runner_payload(3, llm.LlmWorkload("F32", 256, 1, 0), llm.vocab(tiny.path))
    session = GenAISession({"model": str(folder), "llm": payload})
    prompt = np.asarray(payload["prompt"], np.int32)
    append, copy = [], []
    for _ in range(7):
        g = og.Generator(session.model, session.params)
        t0 = time.perf_counter()
        g.append_tokens(prompt)
        t1 = time.perf_counter()
        g.get_logits()
        append.append(t1 - t0)
        copy.append(time.perf_counter() - t1)
    assert np.median(copy) < 0.2 * np.median(append), (append, copy)


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


@pytest.mark.slow  # needs llama.cpp's host build (cached under ~/.cache, keyed by version)
def test_ortgenai_f32_logits_agree_with_llama_cpp_on_another_rope_base_and_eps(llm_host: dict[str, Any],
                                                                               env: dict[str, str],
                                                                               tmp_path: Path) -> None:
    """The same comparison on a file whose freq_base (500000) and RMSNorm eps (1e-2, with a small embedding so that it
    matters) are neither the zoo's nor the converter's defaults: llama.cpp reads them from the file, so must the
    graph."""
    odd = _llama_gguf(tmp_path / "odd.gguf", rope_base=500000.0, eps=1e-2, embd_scale=0.1)
    raw = {"models": [{"path": str(odd), "name": "odd"}], "engines": ["llamacpp", "ortgenai"], "threads": [1],
           "llm": {"prompt_tokens": 48, "gen_tokens": 8, "context_depth": [0], "quant": ["F32"]}}
    code, data, err = run_json("run", "--suite", str(_suite(tmp_path, **raw)), env=env)
    assert code == 0, err
    rows = data["results"]
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows), [r.get("reason") for r in rows]
    (d,) = [d for r in rows for d in r["ext"]["llm"]["drift"].get("vs_engines_f32", {}).values()]
    assert d["steps"] == 9 and d["first_disagreement"] is None and d["top1_agreement"] == 1.0, d
    assert d["cosine_min_shared"] > 0.99999, d


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
        assert (run / cfg["model"] / "model.onnx.data").resolve() == (folder / "model.onnx.data").resolve()
        before = len(os.listdir("/proc/self/task"))
        session = GenAISession({**cfg, "model": str(run / cfg["model"])})
        session.request()
        started[threads] = len(os.listdir("/proc/self/task")) - before
        del session
    assert started == {1: 0, 2: 1, 3: 2}, started
