"""Per-op profiles: the record (devicelab.opprof) and the shared vocabulary, pure parts. The engines' real profiles
are checked in tests/test_opprof_engines.py."""

from __future__ import annotations

from typing import Any

import pytest

from devicelab import opprof
from devicelab.opprof import vocab
from devicelab.result import OK, Config, Result


def _profile(**over: Any) -> dict[str, Any]:
    ops = [{"name": "Conv_0", "engine_type": "FusedConv", "s": 0.003, "node": "Conv_0", "fused": ["Conv_0", "Relu_1"]},
           {"name": "Conv_2", "engine_type": "Conv", "s": 0.001, "hint": {"depthwise": True}},
           {"name": "weird", "engine_type": "SomethingNew", "s": 0.001}]
    kw: dict[str, Any] = {"engine": "onnxruntime", "engine_source": "test", "iterations": 3, "median_s": 0.004,
                          "node_link": "exact"}
    kw.update(over)
    return opprof.build(ops, **kw)


def test_build_maps_sums_and_sets_against_the_median() -> None:
    p = _profile()
    assert opprof.problems(p) == []
    assert [o["type"] for o in p["ops"]] == ["Conv", "DepthwiseConv", "Other"]
    assert p["by_type"] == pytest.approx({"Conv": 0.003, "DepthwiseConv": 0.001, "Other": 0.001})
    assert p["total_s"] == pytest.approx(0.005)
    assert p["overhead"] == pytest.approx(0.25)
    assert p["mapped"] == pytest.approx(0.8)
    assert p["ops"][0]["fused"] == ["Conv_0", "Relu_1"]


def test_no_median_no_overhead_and_a_note() -> None:
    p = _profile(median_s=None)
    assert p["overhead"] is None and any("overhead" in n for n in p["notes"])
    assert opprof.problems(p) == []


def test_vocabulary_covers_each_engines_spelling() -> None:
    cases = {("onnxruntime", "QLinearConv"): "Conv", ("onnxruntime", "ReorderInput"): "Reshape",
             ("mnn", "ConvolutionDepthwise"): "DepthwiseConv", ("ncnn", "ConvolutionDepthWise"): "DepthwiseConv",
             ("litert", "DEPTHWISE_CONV_2D"): "DepthwiseConv", ("litert", "FULLY_CONNECTED"): "Gemm",
             ("openvino", "FullyConnected"): "Gemm", ("ncnn", "ShuffleChannel"): "Shuffle",
             ("ncnn", "Requantize"): "Requantize", ("onnxruntime", "DequantizeLinear"): "Dequantize"}
    for (engine, name), want in cases.items():
        assert vocab.classify(engine, name) == want, (engine, name)
    assert set(vocab.SHARED_TYPES) >= {t for table in vocab.ENGINE_TABLES.values() for t in table.values()}


@pytest.mark.parametrize("bad, says", [
    ({"version": 2}, "version"),
    ({"version": 1, "unsupported": ""}, "unsupported"),
    ({"version": 1, "unsupported": "x", "ops": []}, "not allowed"),
])
def test_problems_name_the_field(bad: dict[str, Any], says: str) -> None:
    assert any(says in p for p in opprof.problems(bad))


def test_a_broken_profile_is_refused_by_the_result() -> None:
    cfg = Config("host", "onnxruntime", "onnxruntime", "1", "m", "0" * 64, 1, "fp32", "cpu", 1, (0,), "big")
    good = _profile()
    Result.for_config("r", cfg, OK, samples_s=(0.004,), ext={"profile": good})
    Result.for_config("r", cfg, OK, samples_s=(0.004,), ext={"profile": opprof.unsupported("no profiler")})
    bad = {**good, "ops": [{**good["ops"][0], "type": "Convolution"}]}
    assert any("ops[0].type" in p for p in opprof.problems(bad))
    with pytest.raises(ValueError):
        Result.for_config("r", cfg, OK, samples_s=(0.004,), ext={"profile": bad})
