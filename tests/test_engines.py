"""The five host engines: declarations, conversion round-trips, fp32 agreement, precision variants and the
conversion cache, through the real CLI and the real engines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from devicelab.analysis.accuracy import FP32_MAX_ABS_DIFF, FP32_MIN_COSINE
from devicelab.engines import engine_names, get_engine
from devicelab.engines.base import Engine
from devicelab.result import PRECISIONS
from helpers import devicelab, run_json, write_suite

ENGINES = ["onnxruntime", "ncnn", "mnn", "litert", "openvino"]
TOOLS = ["tool:benchncnn", "tool:benchmark_model", "tool:mnn-benchmark", "tool:onnxruntime_perf_test",
         "tool:llama-bench"]


def test_every_engine_declares_its_capabilities() -> None:
    # dlbench: ncnn through devicelab's C++ runner (tests/test_dlbench); protocol: any runner-protocol program;
    # tool:*: the engines' own benchmark binaries (tests/test_tools)
    assert engine_names() == ENGINES + ["dlbench", "protocol", "llamacpp", "ortgenai", *TOOLS]  # llamacpp: tests/test_llm_native
    for name in ENGINES:
        e = get_engine(name)
        assert e.name == name and e.formats and set(e.precisions) <= set(PRECISIONS) and "fp32" in e.precisions
        assert "cpu" in e.backends and "host" in e.device_kinds
        # every precision is either supported or says why not
        assert set(e.precisions) | set(e.unsupported) >= set(PRECISIONS), name
        info = e.info()
        assert info.available and info.version, (name, info.reason)


def test_missing_package_is_unavailable_with_the_reason() -> None:
    class Ghost(Engine):
        name, package, module = "ghost", "ghost-engine", "ghost_engine_not_installed"
        formats, precisions, backends = ("onnx",), ("fp32",), ("cpu",)

    info = Ghost().info()
    assert not info.available and info.version is None
    assert info.reason == "Python package 'ghost-engine' is not installed (pip install ghost-engine)"


def test_engines_json_per_device(env: dict[str, str]) -> None:
    p = devicelab("engines", "--json", env=env)
    assert p.returncode == 0, p.stderr
    rows = {r["name"]: r for r in json.loads(p.stdout)}
    assert set(rows) == set(ENGINES) | {"dlbench", "protocol", "llamacpp", "ortgenai", *TOOLS}
    for r in (rows[name] for name in ENGINES):
        (host,) = r["devices"]
        assert host["id"] == "host" and host["available"] and "fp32/cpu" in host["runs"]
    assert "int8" in rows["ncnn"]["precisions"] and "int8" not in rows["ncnn"]["unsupported"]  # devicelab's ncnn_int8


@pytest.mark.slow
def test_tflite_writer_matches_onnx_on_every_zoo_model() -> None:
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter

    from devicelab import zoo
    from devicelab.zoo_tflite import to_tflite

    for name in zoo.ZOO:
        x = np.random.default_rng(3).standard_normal(zoo.ZOO[name].input_shape, dtype=np.float32)
        graph = zoo.build_graph(name)
        (ref,) = ort.InferenceSession(zoo.to_onnx(graph), providers=["CPUExecutionProvider"]).run(None, {"input": x})
        fp32, fp16 = to_tflite(graph), to_tflite(graph, fp16_weights=True)
        assert 0.45 < len(fp16) / len(fp32) < 0.55, name  # weights really stored as float16
        it = Interpreter(model_content=fp32, num_threads=1)
        it.allocate_tensors()
        it.set_tensor(it.get_input_details()[0]["index"], x.transpose(0, 2, 3, 1).copy())
        it.invoke()
        y = it.get_tensor(it.get_output_details()[0]["index"])
        assert y.shape == ref.shape and float(np.abs(y - ref).max()) < 1e-4, name


@pytest.fixture(scope="module")
def engine_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One run of every engine × fp32/fp16/bf16/int8 on SqueezeNet in a fresh data folder, then the same
    suite again: the second run must convert and quantize nothing."""
    import os

    base = tmp_path_factory.mktemp("engines")
    env = {**os.environ, "DEVICELAB_DATA": str(base / "data"), "DEVICELAB_DB": str(base / "db.sqlite"),
           "HOME": str(base / "home"), "COLUMNS": "200"}
    suite = write_suite(base / "s.yaml", engines=ENGINES, precisions=list(PRECISIONS), seed=3)
    code, first, err = run_json("run", "--suite", str(suite), env=env)
    assert code == 0, err
    converted = base / "data" / "converted"
    before = {p: p.stat().st_mtime_ns for p in converted.rglob("*") if p.is_file()}
    code, second, err = run_json("run", "--suite", str(suite), env=env)
    assert code == 0, err
    after = {p: p.stat().st_mtime_ns for p in converted.rglob("*") if p.is_file()}
    return {"first": first["results"], "second": second["results"], "before": before, "after": after}


def _by(results: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["engine"], r["precision"]): r for r in results}


@pytest.mark.slow
def test_fp32_of_every_engine_agrees_with_the_reference(engine_runs: dict[str, Any]) -> None:
    results = _by(engine_runs["first"])
    for name in ENGINES:
        r = results[(name, "fp32")]
        assert r["status"] == "ok", (name, r["reason"], r["stderr_tail"])
        acc = r["accuracy"]
        assert acc["inputs"] == 4 and acc["top1_agreement"] == 1.0, name
        assert acc["max_abs_diff"] < FP32_MAX_ABS_DIFF and acc["cosine"] > FP32_MIN_COSINE, (name, acc)


@pytest.mark.slow
def test_precision_variants(engine_runs: dict[str, Any]) -> None:
    results = _by(engine_runs["first"])
    for name in ("onnxruntime", "litert", "openvino", "mnn", "ncnn"):  # static int8 of each
        r = results[(name, "int8")]
        assert r["status"] == "ok", (name, r["reason"], r["stderr_tail"])
        assert 0.99 < r["accuracy"]["cosine"] < 1.0 and r["accuracy"]["max_abs_diff"] > 1e-3, name
    assert results[("onnxruntime", "bf16")]["status"] == "unsupported"
    assert results[("litert", "bf16")]["reason"] == "LiteRT's CPU kernels have no bf16 mode"
    for key in [("ncnn", "fp16"), ("ncnn", "bf16"), ("litert", "fp16"), ("onnxruntime", "fp16")]:
        r = results[key]
        assert r["status"] == "ok" and r["accuracy"]["cosine"] > 0.999, key
    # A variant that runs but changes nothing is said to, not passed off as faster fp16/bf16.
    for r in engine_runs["first"]:
        if r["status"] == "ok" and r["precision"] in ("fp16", "bf16") and r["accuracy"]["max_abs_diff"] < 1e-4:
            assert any("changed no arithmetic" in n for n in r["notes"]), (r["engine"], r["precision"])


@pytest.mark.slow
def test_second_run_converts_nothing(engine_runs: dict[str, Any]) -> None:
    assert engine_runs["before"], "the first run converted models"
    assert engine_runs["after"] == engine_runs["before"]
    ok_first = {k for k, r in _by(engine_runs["first"]).items() if r["status"] == "ok"}
    ok_second = {k for k, r in _by(engine_runs["second"]).items() if r["status"] == "ok"}
    assert ok_first == ok_second and len(ok_first) >= 13


@pytest.mark.slow
def test_user_onnx_model_cannot_reach_litert(env: dict[str, str], tmp_path: Path) -> None:
    from devicelab import zoo

    mine = tmp_path / "mine.onnx"
    mine.write_bytes(zoo.build_bytes("squeezenet1_1"))
    code, out, err = run_json("run", "--suite", str(write_suite(tmp_path / "s.yaml", models=[str(mine)],
                                                                   engines=["litert", "onnxruntime"])), env=env)
    assert code == 0, err
    r = _by(out["results"])[("litert", "fp32")]
    assert r["status"] == "unsupported" and "writes TFLite for zoo models only" in r["reason"]


@pytest.mark.slow
def test_gpu_backends_run_for_real_or_are_refused_with_the_engines_reason(env: dict[str, str], tmp_path: Path) -> None:
    """With Debian's software drivers installed (scripts/test: mesa-vulkan-drivers, pocl-opencl-icd), ncnn's Vulkan
    backend really runs (on lavapipe, labelled software); the pip MNN wheel has no GPU backends: MNN would run on its
    CPU and say "Can't Find type=N backend", so those configs are unsupported with MNN's words, never CPU runs filed
    as GPU ones; the report's Backends section is drawn from the real rows."""
    report = tmp_path / "r.html"
    code, out, err = run_json("run", "--quick", "--engine", "ncnn,mnn", "--model", "squeezenet1_1", "--threads", "1",
                              "--precision", "fp32", "--backend", "cpu,vulkan,opencl", "--report", str(report),
                              env=env)
    assert code == 0, err
    rows = {(r["engine"], r["backend"]): r for r in out["results"]}
    assert rows[("ncnn", "cpu")]["status"] == rows[("mnn", "cpu")]["status"] == "ok"
    vk = rows[("ncnn", "vulkan")]
    assert vk["status"] == "ok", vk["reason"]
    assert vk["ext"]["gpu_device"]["software"] is True and "llvmpipe" in vk["ext"]["gpu_device"]["name"]
    assert any("software rasterizer" in n and "not GPU timings" in n for n in vk["notes"])
    assert rows[("ncnn", "opencl")]["status"] == "unsupported"
    for backend, kind in (("vulkan", 7), ("opencl", 3)):
        r = rows[("mnn", backend)]
        assert r["status"] == "unsupported" and f"Can't Find type={kind} backend" in r["reason"], r["reason"]
    html = report.read_text()
    assert "Backends" in html and "ncnn fp32 vulkan (software: llvmpipe" in html


@pytest.mark.slow
def test_engine_failures_are_rows_with_the_engines_message(env: dict[str, str], tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Det", ["x"], ["y"])], "det",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "det.onnx"))
    suite = write_suite(tmp_path / "s.yaml", models=[str(tmp_path / "det.onnx")],
                        engines=["onnxruntime", "ncnn", "openvino"])
    code, out, err = run_json("run", "--suite", str(suite), env=env)
    assert code == 1, err  # finished, but something failed
    rows = {r["engine"]: r for r in out["results"]}
    assert rows["onnxruntime"]["status"] == "ok"
    for engine in ("ncnn", "openvino"):
        assert rows[engine]["status"] == "failed" and rows[engine]["reason"], engine
    assert "Det" in rows["openvino"]["reason"] + (rows["openvino"]["stderr_tail"] or "")


def test_a_file_that_is_not_onnx_is_bad_input(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "junk.onnx").write_bytes(b"\x00not a model")
    p = devicelab("run", "--quick", "--model", str(tmp_path / "junk.onnx"), env=env)
    assert p.returncode == 2 and "models[0].path" in p.stderr and "not a valid ONNX model" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
