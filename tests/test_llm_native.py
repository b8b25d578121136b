"""The LLM zoo (seeded GGUF files), the llama.cpp build (dlllm, llama-bench), dlllm speaking runner protocol v3,
tool:llama-bench's parser against captured output, and the arm64 dlllm on the emulated phone. Real builds (cached
under the build cache, `devicelab build-native --llm`), real models (llama-tiny), real processes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import yaml
from android_env import cli_env, needs_adb, needs_namespace, needs_qemu
from helpers import FAST_PROTOCOL, run_json

from devicelab import zoo_llm
from devicelab.engines.base import PreparedModel, SourceModel, UnsupportedError
from devicelab.engines.llamacpp import ENGINE as LLAMACPP
from devicelab.engines.llamacpp import file_quant
from devicelab.engines.tool_base import ToolSettings
from devicelab.engines.tool_llama_bench import ENGINE as LLAMA_BENCH

GOLDEN = Path(__file__).parent / "golden" / "tools" / "llama_bench"
G = 4


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("llm-zoo")


# ---------------------------------------------------------------------------------------------------- the zoo


def test_zoo_is_deterministic_with_a_real_tokenizer_section(zoo_dir: Path, tmp_path: Path) -> None:
    from gguf import GGUFReader

    a = zoo_llm.llm_model("llama-tiny", "F32", zoo_dir)
    b = zoo_llm.llm_model("llama-tiny", "F32", tmp_path)  # built afresh elsewhere: the same bytes
    assert a.sha256 == b.sha256 and a.bytes == b.bytes
    reader = GGUFReader(str(a.path))
    entry = zoo_llm.LLM_ZOO["llama-tiny"]
    assert sum(int(t.n_elements) for t in reader.tensors) == entry.n_params == a.n_params
    tokens = [bytes(reader.fields["tokenizer.ggml.tokens"].parts[i]).decode()
              for i in reader.fields["tokenizer.ggml.tokens"].data]
    assert len(tokens) == entry.n_vocab and len(set(tokens)) == entry.n_vocab
    assert tokens[:3] == ["<unk>", "<s>", "</s>"] and tokens[3 + 0x0A] == "<0x0A>"  # llama.cpp looks up the newline
    model = reader.fields["tokenizer.ggml.model"]
    assert bytes(model.parts[model.data[0]]).decode() == "llama"
    assert file_quant(a.path) == "F32"


def test_every_matrix_width_is_a_multiple_of_256() -> None:
    for entry in zoo_llm.LLM_ZOO.values():
        kv = entry.n_head_kv * entry.head_dim
        assert entry.n_embd % 256 == 0 and entry.n_ff % 256 == 0, entry  # the rows of every matrix: n_embd or n_ff
        assert entry.n_embd % entry.n_head == 0 and entry.n_head % entry.n_head_kv == 0 and kv > 0
    assert 90e6 < zoo_llm.LLM_ZOO["llama-100m"].n_params < 110e6


def test_not_a_gguf_and_unknown_names_are_one_line(tmp_path: Path, zoo_dir: Path) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"ONNX" + bytes(100))
    assert zoo_llm.check_gguf(bad) == f"{bad} is not a GGUF file (it does not start with the bytes 'GGUF')"
    assert file_quant(bad) is None
    from devicelab.errors import DevicelabError

    with pytest.raises(DevicelabError, match="quant: 'Q3_K' is not allowed; allowed: F32, F16, Q8_0, Q4_0, Q4_K"):
        zoo_llm.llm_model("llama-tiny", "Q3_K", zoo_dir)
    with pytest.raises(DevicelabError, match="llama-tiny"):
        zoo_llm.llm_model("llama-tny", "F32", zoo_dir)


# ---------------------------------------------------------------------------------------------------- the build


def _registry(data_dir: Path) -> dict[str, Any]:
    return json.loads((data_dir / "native" / "registry.json").read_text())


@pytest.mark.slow  # builds llama.cpp on first use (cached under ~/.cache, keyed by version)
def test_build_registers_dlllm_and_llama_bench_beside_dlprobe(llm_host: dict[str, Any], data_dir: Path) -> None:
    arts = llm_host["artifacts"]
    assert {"dlprobe", "dlbench", "dlllm", "llama-bench"} <= set(arts)
    llm = llm_host["llm"]
    assert llm["llama_cpp_commit"] == "0c1e57098" and llm["llama_cpp_python"] == "0.3.36"
    assert "-DGGML_NATIVE=OFF" in llm["flags"] and llm["version"].startswith("llama.cpp-0c1e57098+dlllm-")
    out = subprocess.run([arts["dlllm"]["path"], "--version"], capture_output=True, text=True, timeout=60)
    assert json.loads(out.stdout) == {"runner": "dlllm", "runner_version": llm["version"].split("+")[1],
                                      "llama_cpp_commit": "0c1e57098", "protocol": 3}
    assert _registry(data_dir)["llm"]["host"]["version"] == llm["version"]


def _quantizer(llm_host: dict[str, Any]) -> Any:
    from devicelab.engines.llamacpp import HostQuantizer

    return HostQuantizer(Path(llm_host["artifacts"]["dlllm"]["path"]), llm_host["llm"]["llama_cpp_commit"])


def _info(dlllm: str, path: Path) -> dict[str, Any]:
    p = subprocess.run([dlllm, "--info", str(path)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr[-2000:]
    return dict(json.loads(p.stdout))


@pytest.mark.slow  # builds llama.cpp on first use (cached under ~/.cache, keyed by version)
def test_each_quantization_is_made_by_libllama_and_loads(llm_host: dict[str, Any], zoo_dir: Path) -> None:
    dlllm = llm_host["artifacts"]["dlllm"]["path"]
    sizes = {}
    for quant in zoo_llm.QUANTS:
        m = zoo_llm.llm_model("llama-tiny", quant, zoo_dir, _quantizer(llm_host))
        info = _info(dlllm, m.path)
        assert info["arch"] == "llama" and info["quant"] == quant and file_quant(m.path) == quant, info
        assert info["n_params"] == zoo_llm.LLM_ZOO["llama-tiny"].n_params and info["n_vocab"] == 512
        sizes[quant] = m.bytes
        again = zoo_llm.llm_model("llama-tiny", quant, zoo_dir, _quantizer(llm_host))
        assert again.path == m.path  # found in the index by recipe, not rebuilt
    assert sizes["F32"] > sizes["F16"] > sizes["Q8_0"] > sizes["Q4_0"], sizes
    assert sizes["Q4_K"] < sizes["Q8_0"], sizes


# ---------------------------------------------------------------------------------------------------- dlllm


def _config(folder: Path, model_path: Path, **over: Any) -> Path:
    rng = np.random.default_rng(5)
    first = zoo_llm.first_plain_token()
    cfg: dict[str, Any] = {"model": str(model_path), "threads": 1, "cpus": [], "precision": "fp32", "backend": "cpu",
                           "warmup": {"min_iterations": 1, "min_seconds": 0.0, "by": "controller"},
                           "outputs_file": "logits.f32",
                           "llm": {"prompt": [int(x) for x in rng.integers(first, 512, 16)],
                                   "depth": [int(x) for x in rng.integers(first, 512, 8)], "gen_tokens": G, "seed": 1,
                                   "quant": file_quant(model_path)}}
    for k, v in over.items():
        if k == "llm":
            cfg["llm"] = {**cfg["llm"], **v}
        else:
            cfg[k] = v
    path = folder / "config.json"
    path.write_text(json.dumps(cfg))
    return path


def _talk(dlllm: str, config: Path, commands: list[dict[str, Any]]) -> tuple[int, list[dict[str, Any]], str]:
    stdin = "".join(json.dumps(c) + "\n" for c in commands)
    p = subprocess.run([dlllm, str(config)], input=stdin, capture_output=True, text=True, timeout=300)
    return p.returncode, [json.loads(line) for line in p.stdout.splitlines() if line.strip()], p.stderr


@pytest.mark.slow  # builds llama.cpp on first use (cached under ~/.cache, keyed by version)
def test_dlllm_speaks_protocol_v3_and_writes_the_last_requests_logits(llm_host: dict[str, Any], zoo_dir: Path,
                                                                     tmp_path: Path) -> None:
    dlllm = llm_host["artifacts"]["dlllm"]["path"]
    model = zoo_llm.llm_model("llama-tiny", "F32", zoo_dir)
    digests = []
    for run in ("a", "b"):
        folder = tmp_path / run
        folder.mkdir()
        code, events, err = _talk(dlllm, _config(folder, model.path),
                                  [{"cmd": "warmup", "iterations": 1}, {"cmd": "run", "iterations": 2}, {"cmd": "stop"}])
        assert code == 0, err[-2000:]
        ready = events[0]
        assert ready["event"] == "ready" and ready["protocol"] == 3 and ready["warmups"] == 0  # the controller warms
        assert ready["llm"]["n_vocab"] == 512 and ready["llm"]["quant"] == "F32" and ready["llm"]["kv_type"] == "f16"
        assert ready["llm"]["n_ctx"] >= 8 + 16 + G and ready["llm"]["n_params"] == model.n_params
        kinds = [e["event"] for e in events[1:]]
        request = ["prefill"] + ["token"] * G + ["iter"]
        assert kinds == request + ["batch"] + request * 2 + ["batch", "done"], kinds
        for e in events[1:-1]:
            if e["event"] in ("prefill", "token", "iter"):
                assert e["s"] > 0
        prefill, iters = events[1 + len(request) + 1], events[2 * len(request) + 1]
        assert prefill["tokens"] == 16 and iters["event"] == "iter"
        tokens = [e["s"] for e in events[len(request) + 3:2 * len(request) + 1]]
        assert iters["s"] == pytest.approx(prefill["s"] + sum(tokens), rel=1e-9)
        done = events[-1]
        logits = np.fromfile(folder / "logits.f32", dtype="<f4")
        assert logits.size == (G + 1) * 512 and np.isfinite(logits).all() and logits.std() > 0
        import hashlib

        assert done["outputs_sha256"] == hashlib.sha256(logits.tobytes()).hexdigest()
        digests.append(done["outputs_sha256"])
    assert digests[0] == digests[1]  # greedy, one thread, the same prompt: the same logits in another process


@pytest.mark.slow  # builds llama.cpp on first use (cached under ~/.cache, keyed by version)
def test_dlllm_bad_input_is_one_error_line_exit_2(llm_host: dict[str, Any], zoo_dir: Path, tmp_path: Path) -> None:
    dlllm = llm_host["artifacts"]["dlllm"]["path"]
    model = zoo_llm.llm_model("llama-tiny", "F32", zoo_dir)
    q8 = zoo_llm.llm_model("llama-tiny", "Q8_0", zoo_dir, _quantizer(llm_host))
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_bytes(b"\x08\x01ONNX-ish" * 64)
    cases = [
        (dict(model=str(not_gguf), llm={"quant": None}), f"model: {not_gguf} is not a GGUF file", False),
        (dict(llm={"gen_tokens": 0}), "llm.gen_tokens: must be an integer >= 1", False),
        (dict(llm={"prompt": []}), "llm.prompt: must be a non-empty list of token ids", False),
        (dict(llm={"prompt": [3, 512]}), "llm.prompt: token id 512 is not allowed; allowed: 0-511", False),
        (dict(model=str(q8.path), llm={"quant": "Q4_K"}), "llm.quant: asked for Q4_K but the model file holds Q8_0",
         True),
        (dict(llm={"quant": "Q3_K"}), "llm.quant: 'Q3_K' is not allowed; allowed: F32, F16, Q8_0, Q4_0, Q4_K", True),
    ]
    for k, (over, message, unsupported) in enumerate(cases):
        folder = tmp_path / str(k)
        folder.mkdir()
        code, events, err = _talk(dlllm, _config(folder, model.path, **over), [{"cmd": "stop"}])
        assert code == 2 and len(events) == 1, (over, events, err[-1000:])
        assert events[0]["event"] == "error" and events[0]["message"].startswith(message), events
        assert events[0].get("unsupported", False) is unsupported, events
        assert not (folder / "logits.f32").exists()


@pytest.mark.slow  # builds llama.cpp on first use (cached under ~/.cache, keyed by version)
def test_the_plugin_prepares_each_quant_and_refuses_requantizing(llm_host: dict[str, Any], zoo_dir: Path,
                                                                tmp_path: Path, data_dir: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVICELAB_DATA", str(data_dir))  # the session's registry: the host build is there
    f32 = zoo_llm.llm_model("llama-tiny", "F32", zoo_dir)
    source = SourceModel("llama-tiny", f32.path, f32.sha256, ())
    for quant in ("F32", "Q4_0"):
        prepared = LLAMACPP.prepare_llm(source, quant, tmp_path / "converted")
        assert file_quant(prepared.path) == quant
    q4 = LLAMACPP.prepare_llm(source, "Q4_0", tmp_path / "converted")
    assert q4.path.parent == zoo_dir  # the zoo's own variant, from the zoo's index
    user = SourceModel("mine", q4.path, "x", ())
    with pytest.raises(UnsupportedError, match="mine is a Q4_0; llamacpp quantizes to Q8_0 only from F32 or F16 files"):
        LLAMACPP.prepare_llm(user, "Q8_0", tmp_path / "converted")
    assert LLAMACPP.kind_reason("host") is None and LLAMACPP.version() == llm_host["llm"]["version"]
    staged = LLAMACPP.stage({"model": str(q4.path), "inputs": []}, tmp_path)
    assert staged["model"] == "model.gguf" and (tmp_path / "model.gguf").resolve() == q4.path.resolve()


# ---------------------------------------------------------------------------------------------------- llama-bench


def _settings(**kw: Any) -> ToolSettings:
    base: dict[str, Any] = dict(threads=1, cpus=(0,), precision="fp32", backend="cpu", iterations=3, warmups=1,
                                llm=(16, G, 8))
    return ToolSettings(**{**base, **kw})


def test_llama_bench_argv_and_what_it_cannot_be_asked() -> None:
    assert LLAMA_BENCH.argv("/d/llama-bench", "/d/run", _settings()) == [
        "/d/llama-bench", "-m", "/d/run/model.gguf", "-p", "16", "-n", str(G), "-d", "8", "-t", "1", "-r", "3",
        "--delay", "0", "-o", "json"]
    assert LLAMA_BENCH.unsupported_reason(_settings(llm=None)) == (
        "llama-bench runs LLM configs only (a GGUF model with llm: prompt_tokens, gen_tokens)")
    assert "llm.quant" in (LLAMA_BENCH.unsupported_reason(_settings(precision="int8")) or "")
    assert LLAMA_BENCH.model_layout(PreparedModel(Path("/m/x.gguf"))) == {"model.gguf": Path("/m/x.gguf")}


def test_llama_bench_golden_output_parses_to_per_token_samples() -> None:
    """Captured from the registered llama-bench (tests/golden/tools/README.md, llama_bench)."""
    out = (GOLDEN / "tiny_p16_n4_d8.stdout").read_text()
    doc = json.loads(out)
    tg = next(t for t in doc if t["n_gen"] > 0)
    run = LLAMA_BENCH.parse(out, (GOLDEN / "tiny_p16_n4_d8.stderr").read_text(), 0)
    assert run.error is None and run.count == 3 == len(tg["samples_ns"])
    assert run.samples_s == tuple(ns / 1e9 / tg["n_gen"] for ns in tg["samples_ns"])
    assert run.raw["tg"]["n_depth"] == 8 and run.raw["pp"]["n_prompt"] == 16
    assert run.raw["prefill_s"] == [ns / 1e9 for ns in next(t for t in doc if t["n_prompt"] > 0)["samples_ns"]]
    bad = LLAMA_BENCH.parse((GOLDEN / "error_not_gguf.stdout").read_text(),
                            (GOLDEN / "error_not_gguf.stderr").read_text(), 1)
    assert bad.error is not None and "failed to load model" in bad.error


@pytest.mark.slow  # builds llama.cpp on first use (cached under ~/.cache, keyed by version)
def test_llama_bench_runs_for_real(llm_host: dict[str, Any], zoo_dir: Path, tmp_path: Path) -> None:
    model = zoo_llm.llm_model("llama-tiny", "Q8_0", zoo_dir, _quantizer(llm_host))
    (tmp_path / "model.gguf").symlink_to(model.path)
    argv = LLAMA_BENCH.argv(llm_host["artifacts"]["llama-bench"]["path"], str(tmp_path), _settings(iterations=2))
    p = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    run = LLAMA_BENCH.parse(p.stdout, p.stderr, p.returncode)
    assert run.error is None and run.count == 2 and all(s > 0 for s in run.samples_s), (run, p.stderr[-2000:])
    assert run.raw["tg"]["build_commit"] == "0c1e57098" and run.raw["tg"]["n_threads"] == 1


# ---------------------------------------------------------------------------------------------------- the phone


@pytest.mark.slow
@needs_adb()
@needs_namespace()
@needs_qemu()
def test_arm64_dlllm_runs_on_the_emulated_phone(llm_host: dict[str, Any], llm_arm64: dict[str, Any], phone: Any,
                                                server: Any, zoo_dir: Path, tmp_path: Path) -> None:
    """The static arm64 dlllm, pushed through the real adb server to the emulated phone and run there under qemu: the
    same protocol and the same greedy logits as the host build (timings under qemu mean nothing)."""
    import adbutils

    model = zoo_llm.llm_model("llama-tiny", "Q8_0", zoo_dir, _quantizer(llm_host))
    local = _config(tmp_path, model.path, model="model.gguf", iterations=1, outputs_file="logits.f32",
                    llm={"gen_tokens": 2, "depth": []})
    (tmp_path / "model.gguf").symlink_to(model.path)
    client = adbutils.AdbClient(host="127.0.0.1", port=server.port)
    dev = client.device(phone.serial)
    folder = "/data/local/tmp/devicelab/llm-test"
    dev.shell(f"mkdir -p {folder}")
    dev.sync.push(llm_arm64["artifacts"]["dlllm"]["path"], f"{folder}/dlllm", mode=0o755)
    dev.sync.push(str(model.path), f"{folder}/model.gguf")
    dev.sync.push(str(local), f"{folder}/config.json")
    out = dev.shell(f"cd {folder} && ./dlllm config.json; echo exit=$?", timeout=300)
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines[-1] == "exit=0", out[-2000:]
    events = [json.loads(line) for line in lines[:-1] if line.startswith("{")]
    kinds = [e["event"] for e in events]
    assert kinds == ["ready", "prefill", "token", "token", "iter", "batch", "done"], kinds
    assert events[0]["llm"]["quant"] == "Q8_0" and events[0]["protocol"] == 3
    phone_logits = np.frombuffer(dev.sync.read_bytes(f"{folder}/logits.f32"), dtype="<f4")
    host = subprocess.run([llm_arm64["host_dlllm"], str(local)], capture_output=True, text=True, cwd=tmp_path,
                          timeout=300)
    assert host.returncode == 0, host.stderr[-2000:]
    host_logits = np.fromfile(tmp_path / "logits.f32", dtype="<f4")
    assert phone_logits.shape == host_logits.shape == (3 * 512,)
    # Different SIMD kernels (NEON vs AVX2) round differently; the greedy path and the logits agree closely.
    a, b = phone_logits.reshape(3, 512), host_logits.reshape(3, 512)
    assert (a.argmax(1) == b.argmax(1)).all()
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.999, cos


@pytest.mark.slow  # builds llama.cpp on first use (cached under ~/.cache, keyed by version)
def test_a_quant_llamacpp_cannot_make_is_an_unsupported_row(llm_host: dict[str, Any], zoo_dir: Path,
                                                           env: dict[str, str], tmp_path: Path) -> None:
    """`devicelab run` of a user's Q4_0 file at Q4_0 and Q8_0: the Q4_0 row runs; Q8_0 is `unsupported` with the reason
    (re-quantizing is refused), and the run is no failure (exit 0)."""
    q4 = zoo_llm.llm_model("llama-tiny", "Q4_0", zoo_dir, _quantizer(llm_host))
    suite = tmp_path / "s.yaml"
    suite.write_text(yaml.safe_dump({"models": [{"path": str(q4.path), "name": "mine"}], "engines": ["llamacpp"],
                                     "threads": [1], "seed": 2, "llm": {"prompt_tokens": 4, "gen_tokens": 2,
                                                                        "quant": ["Q4_0", "Q8_0"]},
                                     "protocol": {**FAST_PROTOCOL, "accuracy_inputs": 1}}))
    code, data, err = run_json("run", "--suite", str(suite), env=env)
    assert code == 0, err
    by_quant = {r["ext"]["llm"]["quant"]: r for r in data["results"]}
    assert by_quant["Q4_0"]["status"] == "ok", by_quant["Q4_0"]["reason"]
    assert by_quant["Q8_0"]["status"] == "unsupported"
    assert by_quant["Q8_0"]["reason"] == ("mine is a Q4_0; llamacpp quantizes to Q8_0 only from F32 or F16 files "
                                          "(re-quantizing loses accuracy twice)")
    # no F32 variant of a Q4_0 file either: the row runs and says why it has no drift
    assert any("llamacpp has no F32 variant of mine to compare with (mine is a Q4_0" in n
               for n in by_quant["Q4_0"]["notes"]), by_quant["Q4_0"]["notes"]


@pytest.mark.slow
@needs_adb()
@needs_namespace()
@needs_qemu()
def test_devicelab_run_of_llamacpp_on_the_emulated_phone(llm_host: dict[str, Any], llm_arm64: dict[str, Any],
                                                         phone: Any, server: Any, env: dict[str, str],
                                                         tmp_path: Path) -> None:
    """`devicelab run` of the llamacpp engine on the emulated phone, named in a devices.yaml, as a user runs it: the
    controller pushes the static arm64 dlllm and the GGUF files into devicelab's folder on the phone and drives dlllm
    there (under qemu) with protocol v3. Ok rows with ext.llm; the quantized one has its drift against F32 whatever
    the order (the F32 reference pass runs on the phone when needed). Timings under qemu mean nothing: not looked at."""
    inventory = tmp_path / "devices.yaml"
    inventory.write_text(yaml.safe_dump({"devices": [{"id": "emu-phone", "kind": "android",
                                                      "address": phone.address}]}))
    suite = tmp_path / "s.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "llm-phone", "models": ["llama-tiny"], "engines": ["llamacpp"], "threads": [1],
        "devices": ["emu-phone"], "seed": 4, "llm": {"prompt_tokens": 8, "gen_tokens": 4, "quant": ["F32", "Q8_0"]},
        "protocol": {**FAST_PROTOCOL, "min_iterations": 2, "max_iterations": 3, "accuracy_inputs": 1,
                     "cooldown_timeout_seconds": 20}}))
    code, data, err = run_json("run", "--suite", str(suite), "--devices", str(inventory), env=cli_env(env, server))
    assert code == 0, err
    rows = data["results"]
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows), [r.get("reason") for r in rows]
    for r in rows:
        x = r["ext"]["llm"]
        assert r["device"] == "emu-phone" and r["engine"] == "llamacpp" and r["protocol"]["runner_protocol"] == 3
        assert x["model_quant"] == x["quant"] and x["n_vocab"] == 512 and len(r["samples_s"]) == x["requests"] >= 2
        assert any("its timings say nothing about a phone's speed" in n for n in r["notes"])
    (q8,) = [r for r in rows if r["ext"]["llm"]["quant"] == "Q8_0"]
    (f32,) = [r for r in rows if r["ext"]["llm"]["quant"] == "F32"]
    assert q8["ext"]["llm"]["drift"]["vs_f32"]["cosine_min"] > 0.99
    # seed 4 runs Q8_0 first: its F32 reference ran on the phone right after it
    assert q8["started_at"] < f32["started_at"] and any("F32 variant ran once" in n for n in q8["notes"])
    sandbox = phone.root / "data" / "local" / "tmp"
    files = [p.relative_to(sandbox) for p in sandbox.rglob("*") if p.is_file()]
    assert files and all(f.parts[0] == "devicelab" for f in files), files  # only devicelab's folder
    names = [f.name for f in files]  # content-addressed: devicelab/a/<digest>/<name>
    assert "dlllm" in names and names.count("model.gguf") == 2, files  # the F32 and the Q8_0 file
    assert not any((sandbox / "devicelab" / "run").iterdir())  # each run folder removed after its config
