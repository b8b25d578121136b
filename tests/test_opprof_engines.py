"""Per-op profiles from the engines themselves: each test runs the real CLI (`devicelab run --profile`) on a zoo
model, so every profile here is an engine's own (ONNX Runtime's enable_profiling JSON, OpenVINO's PERF_COUNT, MNN's
Session API callbacks, ncnn's per-layer times, dlbench's op events), never a hand-written one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from devicelab import opprof
from tests.helpers import run_json, write_suite

# The goal: at least this fraction of each config's op time mapped to a shared type other than Other.
MAPPED_GOAL = 0.95


def _profiled(tmp_path: Path, env: dict[str, str], engine: str, models: list[str] | None = None,
              precisions: tuple[str, ...] = ("fp32", "int8"), flag: bool = True, **suite: Any) -> list[dict[str, Any]]:
    path = write_suite(tmp_path / "s.yaml", engines=[engine], models=models or ["mobilenet_v2"],
                       precisions=list(precisions), **({} if flag else {"profile": {"iterations": 3}}), **suite)
    code, data, stderr = run_json("run", "--suite", str(path), *(["--profile"] if flag else []), env=env)
    assert code == 0, stderr[-3000:]
    return data["results"]


def _check(result: dict[str, Any]) -> dict[str, Any]:
    """What every real profile must satisfy: valid, the goal met, and the overhead against the row's own median."""
    assert result["status"] == "ok", result["reason"]
    p = result["ext"]["profile"]
    assert opprof.problems(p) == [], opprof.problems(p)
    assert p["ops"], "no ops"
    assert p["mapped"] >= MAPPED_GOAL, (result["precision"], {o["engine_type"] for o in p["ops"] if o["type"] == "Other"})
    assert p["median_s"] == result["median_s"]
    assert p["overhead"] == pytest.approx(p["total_s"] / result["median_s"] - 1)
    assert p["total_s"] == pytest.approx(sum(o["s"] for o in p["ops"]))
    # the profiling pass is not in the samples: exactly the iterations the stopping rule asked for
    assert len(result["samples_s"]) <= result["protocol"]["settings"]["max_iterations"]
    return p


def test_onnxruntime_profiles_map_and_attribute_fused_nodes(tmp_path: Path, env: dict[str, str]) -> None:
    fp32, int8 = sorted(_profiled(tmp_path, env, "onnxruntime"), key=lambda r: r["precision"])
    p = _check(fp32)
    assert p["engine_source"].startswith("onnxruntime enable_profiling") and p["node_link"] == "exact"
    # MobileNet-v2's Conv+Clip pairs: ONNX Runtime runs each as one kernel, and the profile lists both model nodes
    conv1 = next(o for o in p["ops"] if o["node"] == "conv_1")
    assert conv1["type"] == "Conv" and conv1["fused"] == ["conv_1", "conv_1_pre"]
    assert p["by_type"]["DepthwiseConv"] > 0  # groups == channels, read from the model
    q = _check(int8)
    assert {"Conv", "DepthwiseConv", "Quantize"} <= set(q["by_type"])
    qconv = next(o for o in q["ops"] if o["engine_type"] == "QLinearConv")
    assert any(n.endswith("_DequantizeLinear") for n in qconv["fused"])  # the QDQ nodes the int8 kernel absorbed
    assert fp32["ext"]["profile"]["iterations"] == 20  # the default, from --profile


def test_profile_key_in_the_suite_and_iterations(tmp_path: Path, env: dict[str, str]) -> None:
    (r,) = _profiled(tmp_path, env, "onnxruntime", models=["squeezenet1_1"], precisions=("fp32",), flag=False)
    p = _check(r)
    assert p["iterations"] == 3 and r["protocol"]["settings"]["profile_iterations"] == 3


def test_no_profile_without_the_flag(tmp_path: Path, env: dict[str, str]) -> None:
    path = write_suite(tmp_path / "s.yaml", precisions=["fp32"])
    code, data, stderr = run_json("run", "--suite", str(path), env=env)
    assert code == 0, stderr[-2000:]
    assert "profile" not in data["results"][0]["ext"]
