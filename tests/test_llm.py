"""LLM workloads, controller side: the suite's `llm:` settings and their bad input, the synthetic prompt read from a
GGUF file's vocabulary, runner protocol v3 driven end to end (ext.llm, the statistics' samples) and its malformed
event streams, accuracy drift of logits. The runner here is tests/llm_fixture_runner.py, a protocol-v3 fixture for
the `protocol` engine (no language model: llama.cpp's own runner is tested with its plug-in)."""

from __future__ import annotations

import dataclasses

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from devicelab import llm
from devicelab.config import ConfigError, parse_suite
from devicelab.devices.host import HostTransport
from devicelab.engines import PreparedModel, SourceModel
from devicelab.facts import DeviceEntry
from devicelab.measure import ProtocolSettings
from devicelab.result import OK, Config, Result
from devicelab.session import Job, run_jobs
from helpers import FAST_PROTOCOL, devicelab, run_json

RUNNER = Path(__file__).resolve().parent / "llm_fixture_runner.py"
N_VOCAB = 64
SPECIAL = {0, 1, 2}  # <unk>, <s>, </s>: CONTROL / UNKNOWN tokens


def write_gguf(path: Path, n_vocab: int = N_VOCAB, file_type: int | None = None) -> Path:
    """A small GGUF file with a real tokenizer section (the `gguf` package's writer): tokens 0-2 special;
    `file_type`: its general.file_type (llama_ftype), when given."""
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    if file_type is not None:
        w.add_file_type(file_type)
    w.add_tokenizer_model("llama")
    w.add_token_list([b"<unk>", b"<s>", b"</s>", *(f"t{i}".encode() for i in range(3, n_vocab))])
    w.add_token_types([gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL,
                       *([gguf.TokenType.NORMAL] * (n_vocab - 3))])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_tensor("token_embd.weight", np.zeros((n_vocab, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


# ---- the suite's llm: settings


def _suite(model: Path, **llm_settings: Any) -> dict[str, Any]:
    return {"models": [str(model)], "engines": [{"name": "protocol", "options": {"binary": str(RUNNER),
                                                                                  "formats": ["gguf"]}}],
            "llm": llm_settings}


def test_llm_lists_expand_into_workloads_in_the_identity(gguf_file: Path) -> None:
    suite = parse_suite(_suite(gguf_file, prompt_tokens=[8, 16], gen_tokens=4, context_depth=[0, 32],
                               quant=["F32", "Q4_0"]), "t")
    assert len(suite.llm) == 8 and llm.LlmWorkload("Q4_0", 16, 4, 32) in suite.llm
    assert parse_suite(suite.to_dict(), "again").llm == suite.llm  # what --resume re-reads
    keys = {llm.LlmWorkload("F32", 8, 4, 0).key(), llm.LlmWorkload("F32", 8, 4, 32).key()}
    cfgs = [Config("host", "protocol", "", "v", "tiny", "ab", 1, "fp32", "cpu", 1, (0,), "big", 0, k) for k in keys]
    assert len({c.identity_key() for c in cfgs}) == len({c.series_key() for c in cfgs}) == 2
    plain = Config("host", "protocol", "", "v", "tiny", "ab", 1, "fp32", "cpu", 1, (0,), "big")
    assert "workload" not in Result.for_config("r", plain, "failed", reason="x").to_dict()  # old rows unchanged
    assert llm.workload_from_key(cfgs[0].workload) in suite.llm


@pytest.mark.parametrize("settings, expected", [
    ({"prompt_tokens": 0, "gen_tokens": 4}, "llm.prompt_tokens: 0 is not allowed; allowed: an integer from 1"),
    ({"prompt_tokens": 8, "gen_tokens": -1}, "llm.gen_tokens: -1 is not allowed; allowed: an integer from 1"),
    ({"prompt_tokens": 8, "gen_tokens": 4, "quant": "Q2_K"},
     "llm.quant: 'Q2_K' is not allowed; allowed: F32, F16, Q8_0, Q4_0, Q4_K"),
    ({"prompt_tokens": 8, "gen_tokens": 4, "depth": 3}, "llm.depth: unknown key; allowed: prompt_tokens"),
    ({"gen_tokens": 4}, "llm.prompt_tokens: missing"),
])
def test_bad_llm_settings_name_the_field_and_what_is_allowed(gguf_file: Path, settings: dict[str, Any],
                                                             expected: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_suite(_suite(gguf_file, **settings), "t")
    assert expected in str(e.value)


def test_bad_llm_input_at_the_cli_is_one_line_exit_2_and_nothing_written(env: dict[str, str], tmp_path: Path,
                                                                         gguf_file: Path) -> None:
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"ONNX" + bytes(64))
    for raw, expected in [(_suite(fake, prompt_tokens=8, gen_tokens=4), "models[0].path: "),
                          (_suite(gguf_file, prompt_tokens=8, gen_tokens=0), "llm.gen_tokens: 0 is not allowed")]:
        suite = tmp_path / "s.yaml"
        suite.write_text(yaml.safe_dump(raw))
        p = devicelab("run", "--suite", str(suite), env=env)
        assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and expected in p.stderr, p.stderr
        assert not Path(env["DEVICELAB_DB"]).exists()
    assert "is not a GGUF language model (it does not start with the GGUF magic" in \
        devicelab("run", "--suite", str(_write(tmp_path, _suite(fake, prompt_tokens=8, gen_tokens=4))),
                  env=env).stderr


def _write(tmp: Path, raw: dict[str, Any]) -> Path:
    path = tmp / "suite.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


# ---- the synthetic prompt


def test_the_prompt_is_seeded_token_ids_without_the_special_tokens(gguf_file: Path) -> None:
    voc = llm.vocab(gguf_file)
    assert voc.size == N_VOCAB and voc.special == SPECIAL
    w = llm.LlmWorkload("F32", 500, 4, 100)
    depth, prompt = llm.synthetic_tokens(7, w, voc)
    assert len(depth) == 100 and len(prompt) == 500 and not (set(depth) | set(prompt)) & SPECIAL
    assert set(prompt) == set(range(3, N_VOCAB))  # 500 draws cover the 61 ordinary tokens
    assert llm.synthetic_tokens(7, w, voc) == (depth, prompt)
    assert llm.synthetic_tokens(8, w, voc) != (depth, prompt)


# ---- protocol v3 through the session


FAST = ProtocolSettings(**{**{k: v for k, v in FAST_PROTOCOL.items() if k != "accuracy_inputs"},
                           "accuracy_inputs": 0})


def _job(gguf_file: Path, quant: str = "F32", label: str = "", reference: bool = False, **options: Any) -> Job:
    w = llm.LlmWorkload(quant, 8, 4, 16)
    cpu = max(os.sched_getaffinity(0))
    cfg = Config("host", "protocol", label, "sha256:fixture", "tiny", "ab" * 32, gguf_file.stat().st_size, "fp32",
                 "cpu", 1, (cpu,), "big", 0, w.key())
    # accuracy on where a reference is given: the F32 reference pass is part of the accuracy measurement
    settings = dataclasses.replace(FAST, accuracy_inputs=1) if reference else FAST
    return Job("run-1", cfg, SourceModel("tiny", gguf_file, "ab" * 32, ()), PreparedModel(gguf_file), settings,
               options={"binary": str(RUNNER), **options},  # the fixture assumes 64 tokens
               llm=llm.runner_payload(1, w, llm.vocab(gguf_file)),
               reference=PreparedModel(gguf_file) if reference else None)  # the fixture writes each quant's logits


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> HostTransport:
    monkeypatch.setenv("DEVICELAB_DATA", str(tmp_path / "data"))  # its own logits folder: drift starts empty
    return HostTransport(DeviceEntry("host", "host"))


def test_a_v3_runner_gives_an_ok_row_with_ext_llm(host: HostTransport, gguf_file: Path) -> None:
    r = run_jobs(host, [_job(gguf_file)])[0]
    assert r.status == OK, (r.reason, r.stderr_tail)
    x = r.ext["llm"]
    assert x["quant"] == "F32" and (x["prompt_tokens"], x["gen_tokens"], x["context_depth"]) == (8, 4, 16)
    # One sample per request: its decode seconds per token; TTFT and decode t/s per request beside them.
    assert len(r.samples_s) == x["requests"] == len(x["ttft_s"]["samples"]) == len(x["decode_tps"]["samples"])
    assert len(x["token_s"]["samples"]) == 4 * x["requests"]
    for sample, tps in zip(r.samples_s, x["decode_tps"]["samples"], strict=True):
        assert sample == pytest.approx(1 / tps)
    assert x["kv_type"] == "f16" and x["n_vocab"] == N_VOCAB and x["excluded"] == "tokenization and sampling"
    assert x["file_bytes"] == gguf_file.stat().st_size
    assert "energy_per_token_j" not in x  # energy is off on the host
    assert any(n.startswith("TTFT = the prefill") for n in r.notes)
    assert any("tokenization and sampling excluded" in n for n in r.notes)
    assert r.protocol is not None and r.protocol.runner_protocol == 3 and r.protocol.warmup.by == "controller"
    assert Result.from_dict(json.loads(r.to_json())) == r


@pytest.mark.parametrize("mode, expected", [
    ("short", "the request had 3 token lines; asked for 4"),
    ("no-prefill", "a token before the request's prefill"),
    ("wrong-prompt", "'tokens' must be the prompt's 8 tokens"),
    ("negative-token", "'s' must be a positive number of seconds"),
    ("v2", "an LLM config needs runner protocol 3 (prefill and token events); the runner speaks 2"),
    ("no-llm-ready", "protocol 3 for an LLM config carries 'llm'"),
])
def test_malformed_v3_streams_fail_the_row_naming_the_line(host: HostTransport, gguf_file: Path, mode: str,
                                                            expected: str) -> None:
    r = run_jobs(host, [_job(gguf_file, mode=mode)])[0]
    assert r.status == "failed" and expected in (r.reason or ""), r.reason
    assert r.ext["llm"] == {"quant": "F32", "prompt_tokens": 8, "gen_tokens": 4, "context_depth": 16}


def test_a_quant_the_build_lacks_is_an_unsupported_row(host: HostTransport, gguf_file: Path) -> None:
    r = run_jobs(host, [_job(gguf_file, "Q4_K", lacks=["Q4_K"])])[0]
    assert r.status == "unsupported" and r.reason == "this build has no Q4_K kernels"


# ---- accuracy drift


def test_drift_of_quantized_logits_against_f32(host: HostTransport, gguf_file: Path) -> None:
    no_ref = dataclasses.replace(_job(gguf_file, "Q4_0", label="first"), settings=dataclasses.replace(FAST, accuracy_inputs=1))
    q = run_jobs(host, [no_ref])[0]  # accuracy on, no F32 logits yet, no F32 variant to run
    assert "vs_f32" not in q.ext["llm"].get("drift", {})
    assert any("no F32 logits of protocol for this model and prompt on this device, and no F32 variant to run" in n
               for n in q.notes)
    f32, f16, q4 = (run_jobs(host, [_job(gguf_file, quant)])[0] for quant in ("F32", "F16", "Q4_0"))
    assert f32.ext["llm"]["drift"]["steps"] == 5
    assert any("no other engine's F32 logits" in n for n in f32.notes)
    near, far = f16.ext["llm"]["drift"]["vs_f32"], q4.ext["llm"]["drift"]["vs_f32"]
    assert near["top1_agreement"] == 1.0 and near["cosine_min"] > 0.999 and near["first_disagreement"] is None
    assert far["cosine_min"] < near["cosine_min"] and far["top1_agreement"] < 1.0
    # A second engine (here the same program under another label) at F32 is compared with the first.
    other = run_jobs(host, [_job(gguf_file, "F32", label="other")])[0]
    assert other.ext["llm"]["drift"]["vs_engines_f32"]["protocol"]["top1_agreement"] == 1.0


def test_a_quantized_config_before_its_reference_runs_the_f32_variant_once(host: HostTransport, gguf_file: Path
                                                                          ) -> None:
    """No F32 logits of the prompt on this device yet: the quantized config runs the F32 variant once after its timing
    (its state after read before that pass) and has its drift; the next config of the prompt finds them kept."""
    q4 = run_jobs(host, [_job(gguf_file, "Q4_0", reference=True)])[0]
    assert q4.status == OK, q4.reason
    assert any("so the F32 variant ran once after this config's timing" in n for n in q4.notes), q4.notes
    assert "state after: read when timing ended, before the F32 reference pass" in q4.notes
    far = q4.ext["llm"]["drift"]["vs_f32"]
    assert far["steps"] == 5 and far["top1_agreement"] < 1.0  # the fixture's Q4_0 noise flips greedy tokens
    kept = sorted(p.name.rsplit("-", 1)[1] for p in (Path(os.environ["DEVICELAB_DATA"]) / "llm-logits").glob("*.f32"))
    assert kept == ["F32.f32", "Q4_0.f32"]
    q8 = run_jobs(host, [_job(gguf_file, "Q8_0", reference=True)])[0]  # kept: no second pass
    assert not any("ran once" in n for n in q8.notes) and "vs_f32" in q8.ext["llm"]["drift"]
    f32 = run_jobs(host, [_job(gguf_file, "F32")])[0]  # the F32 config itself: the logits the pass kept
    assert q8.ext["llm"]["drift"]["vs_f32"]["cosine_min"] < 1.0
    again = run_jobs(host, [_job(gguf_file, "Q4_0", reference=True)])[0]
    assert again.ext["llm"]["drift"]["vs_f32"] == far and f32.status == OK


def test_no_reference_pass_with_accuracy_off(host: HostTransport, gguf_file: Path) -> None:
    job = _job(gguf_file, "Q4_0", reference=True)
    r = run_jobs(host, [dataclasses.replace(job, settings=FAST)])[0]  # accuracy_inputs 0
    assert r.status == OK and "vs_f32" not in r.ext["llm"]["drift"] and not any("ran once" in n for n in r.notes)
    assert any("accuracy is off (accuracy_inputs: 0), so no F32 reference pass ran" in n for n in r.notes), r.notes


def test_logits_of_another_type_than_asked_are_not_kept(host: HostTransport, gguf_file: Path) -> None:
    """A runner that reads the file as it is (a third-party one given the quantized file as its "F32 variant") says
    which type it read: those logits must never be kept as F32, or the drift would be nil."""
    r = run_jobs(host, [_job(gguf_file, "Q4_0", reference=True, ready_quant="Q4_0")])[0]
    assert r.status == OK and "vs_f32" not in r.ext["llm"].get("drift", {})
    assert any("so the F32 variant ran once" in n for n in r.notes), r.notes  # it ran; its logits were refused
    assert not list((Path(os.environ["DEVICELAB_DATA"]) / "llm-logits").glob("*-F32.f32"))


def test_lockstep_labels_end_before_a_reference_pass_runs(host: HostTransport, gguf_file: Path) -> None:
    """Two labels timed in lockstep: their F32 reference passes (in collect) run only once both runners have ended,
    and both rows' state after was read before any of them."""
    a, b = (_job(gguf_file, "Q4_0", label=label, reference=True) for label in ("A", "B"))
    ra, rb = run_jobs(host, [a, b])
    assert ra.status == rb.status == OK, (ra.reason, rb.reason)
    assert ra.protocol is not None and ra.protocol.lockstep is not None  # timed together
    for r in (ra, rb):
        assert "state after: read when timing ended, before any label's F32 reference pass" in r.notes, r.notes
        assert "vs_f32" in r.ext["llm"]["drift"]
    assert all(any("ran once" in n for n in r.notes) for r in (ra, rb))  # logits are kept per label (build)


def test_a_reference_pass_that_fails_says_so(host: HostTransport, gguf_file: Path) -> None:
    r = run_jobs(host, [_job(gguf_file, "Q4_0", reference=True, lacks=["F32"])])[0]
    assert r.status == OK and "vs_f32" not in r.ext["llm"]["drift"]
    assert "accuracy drift not compared: the F32 reference pass was unsupported: this build has no F32 kernels" \
        in r.notes


def test_drift_does_not_depend_on_the_shuffled_order(env: dict[str, str], tmp_path: Path, gguf_file: Path) -> None:
    """Two seeds that order F32 and Q4_0 differently, each in a data folder with no logits kept: the Q4_0 row has the
    same drift either way."""
    orders, drifts = {}, {}
    for seed in (1, 5):
        raw = _suite(gguf_file, prompt_tokens=8, gen_tokens=4, quant=["F32", "Q4_0"])
        raw.update(seed=seed, protocol={**FAST_PROTOCOL, "accuracy_inputs": 1})
        e = {**env, "DEVICELAB_DATA": str(tmp_path / f"data-{seed}")}
        code, data, err = run_json("run", "--suite", str(_write(tmp_path, raw)), env=e)
        assert code == 0, err
        ran = sorted(data["results"], key=lambda r: r["started_at"])
        assert all(r["status"] == OK for r in ran), [r["reason"] for r in ran]
        orders[seed] = [r["ext"]["llm"]["quant"] for r in ran]
        (q4,) = [r for r in ran if r["ext"]["llm"]["quant"] == "Q4_0"]
        drifts[seed] = q4["ext"]["llm"]["drift"]["vs_f32"]
    assert sorted(orders.values()) == [["F32", "Q4_0"], ["Q4_0", "F32"]], orders  # one seed each way
    assert drifts[1] == drifts[5]


def _register_many(data: str, worker: int, n: int) -> None:
    os.environ["DEVICELAB_DATA"] = data
    from devicelab import llm_logits

    for i in range(n):
        llm_logits.register("k", f"engine-{worker}-{i}", f"file-{worker}-{i}.f32")


def test_the_engines_index_keeps_every_writers_entries(tmp_path: Path) -> None:
    """Writers in four processes at once (a farm's workers on one host): read, update and write under the lock, so no
    entry is lost to another writer's older copy."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_register_many, args=(str(tmp_path), w, 50)) for w in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert [w.exitcode for w in workers] == [0] * 4
    index = json.loads((tmp_path / "llm-logits" / "k-engines.json").read_text())
    assert len(index) == 200 and index["engine-3-49"] == "file-3-49.f32"


def test_a_quant_llamacpp_cannot_make_is_unsupported_not_failed(tmp_path: Path) -> None:
    from devicelab import rows
    from devicelab.engines.base import UnsupportedError
    from devicelab.engines.llamacpp import ENGINE as LLAMACPP

    q4 = write_gguf(tmp_path / "mine.gguf", file_type=2)  # llama_ftype MOSTLY_Q4_0
    source = SourceModel("mine", q4, "ab" * 32, ())
    assert LLAMACPP.prepare_llm(source, "Q4_0", tmp_path / "converted").path == q4  # the file itself
    with pytest.raises(UnsupportedError, match="mine is a Q4_0; llamacpp quantizes to Q8_0 only from F32 or F16 "):
        LLAMACPP.prepare_llm(source, "Q8_0", tmp_path / "converted")
    cfg = Config("host", "llamacpp", "", "v", "mine", "ab" * 32, 1, "fp32", "cpu", 1, (0,), "big", 0,
                 llm.LlmWorkload("Q8_0", 8, 4, 0).key())
    row = rows.not_prepared("r", cfg, rows.Unsupported("no"))
    assert row.status == "unsupported" and row.ext["llm"] == llm.LlmWorkload("Q8_0", 8, 4, 0).to_dict()
    assert rows.not_prepared("r", cfg, "converter crashed").status == "failed"


def test_drift_is_cosine_and_top1_per_step() -> None:
    ref = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    got = np.array([[1.0, 0.0, 0.0], [1.0, 0.5, 0.0]])
    d = llm.drift(ref, got)
    assert d["steps"] == 2 and d["cosine_min"] == pytest.approx(0.5 / np.sqrt(1.25))
    assert d["top1_agreement"] == 0.5 and d["first_disagreement"] == 1
    # both steps up to the first disagreement saw the same tokens: the shared cosine covers them
    assert d["shared_steps"] == 2 and d["cosine_min_shared"] == d["cosine_min"]
    late = llm.drift(np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]))
    assert late["first_disagreement"] == 1 and late["shared_steps"] == 2
    assert late["cosine_min_shared"] == 0.0 and late["cosine_mean_shared"] == 0.5 and late["cosine_mean"] == 1 / 3
    with pytest.raises(ValueError):
        llm.drift(ref, got[:1])


# ---- a whole run at the CLI


def test_devicelab_run_with_an_llm_suite(env: dict[str, str], tmp_path: Path, gguf_file: Path) -> None:
    raw = _suite(gguf_file, prompt_tokens=8, gen_tokens=4, context_depth=[0, 32], quant=["F32", "Q8_0"])
    raw["protocol"] = {**FAST_PROTOCOL, "accuracy_inputs": 0}
    raw["seed"] = 3
    code, data, err = run_json("run", "--suite", str(_write(tmp_path, raw)), env=env)
    assert code == 0, err
    rows = data["results"]
    assert len(rows) == 4 and all(r["status"] == OK for r in rows), [r.get("reason") for r in rows]
    assert sorted((r["ext"]["llm"]["quant"], r["ext"]["llm"]["context_depth"]) for r in rows) == \
        [("F32", 0), ("F32", 32), ("Q8_0", 0), ("Q8_0", 32)]
    assert len({r["workload"] for r in rows}) == 4
    with sqlite3.connect(env["DEVICELAB_DB"]) as db:
        assert db.execute("SELECT count(DISTINCT series_key) FROM results").fetchone()[0] == 4
    shown = devicelab("show", data["run_id"], env=env)
    assert shown.returncode == 0 and all(f"{q} P8 G4 D{d}" in shown.stdout for q in ("F32", "Q8_0") for d in (0, 32))


# ---- report, A/B and regress on LLM series

HOSTILE = "<img src=x onerror=alert(1)>"


def test_the_report_shows_the_llm_table_and_the_depth_chart_in_chromium(env: dict[str, str], tmp_path: Path,
                                                                          gguf_file: Path) -> None:
    import shutil

    if not shutil.which("chromium"):
        pytest.fail("Debian's chromium is missing: scripts/test installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    raw = _suite(gguf_file, prompt_tokens=8, gen_tokens=4, context_depth=[0, 64], quant=["F32", "Q4_0"])
    raw["models"] = [{"path": str(gguf_file), "name": HOSTILE}]
    raw["engines"][0]["label"] = HOSTILE
    raw.update(threads=[1, 2], seed=5, protocol={**FAST_PROTOCOL, "accuracy_inputs": 0})
    code, data, err = run_json("run", "--suite", str(_write(tmp_path, raw)), "--report",
                               str(tmp_path / "report.html"), env=env)
    assert code == 0 and all(r["status"] == OK for r in data["results"]), err
    html = (tmp_path / "report.html").read_text()
    assert HOSTILE not in html
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"),
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                          "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page()
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("dialog", lambda d: (problems.append("dialog: " + d.message), d.dismiss()))
        page.goto((tmp_path / "report.html").as_uri())
        page.wait_for_load_state("load")
        heading = page.locator("#llm ~ h3").first.inner_text()
        rows = [r.split("\t") for r in page.locator("table.llm tr").all_inner_texts()]
        depth_charts = page.locator('[data-kind="llm-depth"] svg').count()
        engines_tables = page.locator("table.engines").count()
        nav = page.locator("nav a").all_inner_texts()
        browser.close()
    assert problems == [] and "language models" in nav
    assert heading == f"{HOSTILE} on host — P=8, G=4, depth 0"
    assert rows[0][:6] == ["engine", "quant", "TTFT at P=8 (1t)", "prefill t/s (1t)", "decode t/s (1t)",
                           "decode t/s (2t)"]
    assert [r[:2] for r in rows[1:]] == [[f"protocol [{HOSTILE}]", "F32"], [f"protocol [{HOSTILE}]", "Q4_0"]]
    assert rows[1][-1] == "reference" and all(c.endswith(" ms") for c in (rows[1][2], rows[2][2]))
    assert depth_charts == 1 and engines_tables == 0  # LLM rows stay out of the latency tables


def test_ab_labels_and_regress_work_on_llm_series(env: dict[str, str], tmp_path: Path, gguf_file: Path) -> None:
    raw = _suite(gguf_file, prompt_tokens=8, gen_tokens=4)
    raw["engines"] = [{**raw["engines"][0], "label": "a"}, {**raw["engines"][0], "label": "b"}]
    raw.update(repeats=3, seed=6, protocol={**FAST_PROTOCOL, "accuracy_inputs": 0})
    code, data, err = run_json("run", "--suite", str(_write(tmp_path, raw)), env=env)
    assert code == 0, err
    run_id = data["run_id"]
    assert all(r["protocol"]["lockstep"]["with"] for r in data["results"])  # the labels ran in lockstep
    code, out, err = run_json("compare", f"{run_id}:a", f"{run_id}:b", env=env)
    assert code in (0, 1), err
    (c,) = out["comparisons"]
    assert "llm F32 P8 G4 D0" in json.dumps(c) and c["verdict"] in ("same", "faster", "slower", "unknown")
    code, out, err = run_json("regress", env=env)
    assert code in (0, 1), err
    assert any("llm F32 P8 G4 D0" in s["series"] for s in out["series"])


# ---- the LLM zoo and llama.cpp (the llamacpp engine's dlllm, built from the llama-cpp-python sdist, cached)


def test_llm_zoo_names_are_models_of_a_suite() -> None:
    suite = parse_suite({"models": ["llama-tiny"], "engines": ["llamacpp"], "llm": {"prompt_tokens": 8,
                                                                                       "gen_tokens": 2}}, "t")
    assert [m.name for m in suite.models] == ["llama-tiny"] and len(suite.llm) == 1
    with pytest.raises(ConfigError) as e:
        parse_suite({"models": ["llama-tny"], "engines": ["llamacpp"], "llm": {"prompt_tokens": 8, "gen_tokens": 2}},
                    "t")
    assert "unknown zoo model 'llama-tny' (did you mean 'llama-tiny'?)" in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse_suite({"models": ["llama-tiny"], "engines": ["llamacpp"]}, "t")
    assert "llm: GGUF model(s) llama-tiny need the request shape" in str(e.value)


EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "llm.yaml"


@pytest.mark.slow  # builds llama.cpp on first use (cached under ~/.cache, keyed by version)
def test_the_example_suite_runs_llama_cpp_on_the_host(llm_host: dict[str, Any], env: dict[str, str],
                                                      tmp_path: Path) -> None:
    """examples/llm.yaml as it is, but for a shorter protocol and two depths: ok rows for llama.cpp at F32, F16, Q8_0
    and Q4_0, 1 and 2 threads, with TTFT, prefill and decode figures and samples; the report's LLM table."""
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["llm"]["context_depth"] = [0, 64]
    raw["protocol"] = {**FAST_PROTOCOL, "accuracy_inputs": 1}
    code, data, err = run_json("run", "--suite", str(_write(tmp_path, raw)), "--report",
                               str(tmp_path / "report.html"), env=env)
    assert code == 0, err
    genai = [r for r in data["results"] if r["engine"] == "ortgenai"]  # F32 only: its other quants are unsupported
    assert sorted((r["ext"]["llm"]["quant"], r["status"]) for r in genai) == \
        sorted([("F32", OK)] * 4 + [(q, "unsupported") for q in ("F16", "Q8_0", "Q4_0") for _ in range(4)])
    rows = [r for r in data["results"] if r["engine"] != "ortgenai"]
    assert len(rows) == 16 and all(r["status"] == OK for r in rows), [r.get("reason") for r in rows]
    assert {(r["ext"]["llm"]["quant"], r["threads"]) for r in rows} == \
        {(q, t) for q in ("F32", "F16", "Q8_0", "Q4_0") for t in (1, 2)}
    for r in rows:
        x = r["ext"]["llm"]
        assert r["engine"] == "llamacpp" and r["protocol"]["runner_protocol"] == 3
        assert x["ttft_s"]["median"] > 0 and x["prefill_tps"]["median"] > 0 and x["decode_tps"]["median"] > 0
        assert len(r["samples_s"]) == x["requests"] and x["n_vocab"] == 512 and x["model_quant"] == x["quant"]
    # Drift: every quantized row compares with its F32 reference, whichever ran first (a reference pass otherwise).
    drifted = {(r["ext"]["llm"]["quant"], r["threads"], r["ext"]["llm"]["context_depth"]):
               r["ext"]["llm"]["drift"]["vs_f32"] for r in rows if "vs_f32" in r["ext"]["llm"].get("drift", {})}
    assert len(drifted) == 12 and all(-1 <= d["cosine_min"] <= d["cosine_mean"] <= 1 and d["steps"] == 17
                           for d in drifted.values())
    f16 = [d for (q, _, _), d in drifted.items() if q == "F16"]
    assert f16 and all(d["top1_agreement"] == 1.0 and d["cosine_min"] > 0.999 for d in f16)
    html = (tmp_path / "report.html").read_text()
    assert 'id="llm"' in html and html.count('data-kind="llm-depth"') == 1


def test_ext_llm_energy_is_per_generated_token_and_the_validator_refuses_bad_records() -> None:
    w = llm.LlmWorkload("Q4_0", 8, 4, 0)
    reqs = [llm.Request(0.02, (0.01, 0.01, 0.01, 0.01), 0.06), llm.Request(0.03, (0.01, 0.02, 0.01, 0.02), 0.09)]
    x = llm.ext_llm(w, reqs, {"n_vocab": 64, "kv_type": "f16"}, energy_j_per_request=2.0)
    assert x["energy_per_token_j"] == 0.5 and x["ttft_s"]["samples"] == [0.02, 0.03]
    assert x["decode_tps"]["samples"] == [pytest.approx(100.0), pytest.approx(4 / 0.06)]
    assert x["prefill_tps"]["median"] == pytest.approx((400 + 800 / 3) / 2)
    # a rate's p90 is its slow tail, as a time's is: at or below the median, never the fast end
    assert x["decode_tps"]["p90"] <= x["decode_tps"]["median"] and x["prefill_tps"]["p90"] <= x["prefill_tps"]["median"]
    assert llm.check_ext_llm(x) and llm.check_ext_llm(w.to_dict())
    assert not llm.check_ext_llm({**x, "quant": "Q3_K"}) and not llm.check_ext_llm({**x, "gen_tokens": 0})
    assert not llm.check_ext_llm({**w.to_dict(), "decode_tps": x["decode_tps"]})  # figures without TTFT
    with pytest.raises(ValueError, match="ext.llm"):
        Result.for_config("r", Config("host", "protocol", "", "v", "tiny", "ab", 1, "fp32", "cpu", 1, (0,), "big", 0,
                                      w.key()), "failed", reason="x", ext={"llm": {**x, "excluded": "nothing"}})
