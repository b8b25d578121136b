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
    # the overhead from the pass's own wall time per iteration; coverage and the op sum vs the median apart
    assert p["wall_s"] > 0, p["notes"]
    assert p["overhead"] == pytest.approx(p["wall_s"] / result["median_s"] - 1)
    assert p["coverage"] == pytest.approx(p["total_s"] / p["wall_s"])
    assert p["op_sum_vs_median"] == pytest.approx(p["total_s"] / result["median_s"] - 1)
    assert p["total_s"] == pytest.approx(sum(o["s"] for o in p["ops"]))
    # the profiling pass is not in the samples: exactly the iterations of the timed batches
    runs = [m for m in result["ext"]["timeline"]["marks"] if m["kind"] in ("batch", "slice")]
    assert len(result["samples_s"]) == sum(m["iterations"] for m in runs) <= \
        result["protocol"]["settings"]["max_iterations"]
    return p


def test_onnxruntime_profiles_map_and_attribute_fused_nodes(tmp_path: Path, env: dict[str, str]) -> None:
    fp32, int8 = sorted(_profiled(tmp_path, env, "onnxruntime"), key=lambda r: r["precision"])
    p = _check(fp32)
    assert p["engine_source"].startswith("onnxruntime enable_profiling") and p["node_link"] == "exact"
    # MobileNet-v2's Conv+Clip pairs: ONNX Runtime runs each as one kernel, and the profile lists both model nodes
    conv1 = next(o for o in p["ops"] if o["node"] == "conv_1")
    assert conv1["type"] == "Conv" and conv1["fused"] == ["conv_1", "conv_1_pre"]
    assert p["by_type"]["DepthwiseConv"] > 0  # groups == channels, read from the model
    # the residual Add ran inside the convolution that computes its last input
    assert "add_10" in next(o for o in p["ops"] if o["node"] == "conv_9")["fused"]
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


def test_openvino_profiles_from_perf_counts(tmp_path: Path, env: dict[str, str]) -> None:
    fp32, int8 = sorted(_profiled(tmp_path, env, "openvino"), key=lambda r: r["precision"])
    p = _check(fp32)
    assert p["engine_source"].startswith("openvino PERF_COUNT")
    conv = next(o for o in p["ops"] if o["node"] == "conv_2_pre")
    # OpenVINO's runtime model says it ran the Clip inside the (depthwise) convolution: originalLayersNames
    assert conv["engine_type"] == "GroupConvolution" and conv["type"] == "DepthwiseConv"
    assert conv["fused"] == ["conv_2_pre", "conv_2"] and conv["extra"]["exec_type"]
    assert "add_10" in next(o for o in p["ops"] if o["node"] == "conv_9")["fused"]
    q = _check(int8)
    assert any(o["engine_type"] == "Subgraph" and o["type"] == "Quantize" for o in q["ops"])  # typed by its node


def test_mnn_profiles_through_the_session_api(tmp_path: Path, env: dict[str, str]) -> None:
    fp32, int8 = sorted(_profiled(tmp_path, env, "mnn"), key=lambda r: r["precision"])
    p = _check(fp32)
    assert p["engine_source"] == "MNN Session API runSessionWithCallBackInfo (the timed pass used the Module API)"
    assert any("Module API" in n for n in p["notes"])
    conv = next(o for o in p["ops"] if o["node"] == "conv_2_pre")
    assert conv["type"] == "DepthwiseConv" and conv["fused"] == ["conv_2_pre", "conv_2"]
    assert any(o["engine_type"] == "BinaryOp" and o["type"] == "Add" for o in p["ops"])  # the model's Add
    q = _check(int8)
    assert q["by_type"].get("Quantize", 0) > 0 and any((o.get("extra") or {}).get("int8") for o in q["ops"])


def test_ncnn_wheel_profiles_layer_by_layer_best_effort_nodes(tmp_path: Path, env: dict[str, str]) -> None:
    fp32, int8 = sorted(_profiled(tmp_path, env, "ncnn"), key=lambda r: r["precision"])
    for r in (fp32, int8):
        p = _check(r)
        assert p["node_link"] == "best-effort" and any("pnnx" in n for n in p["notes"])
        # pnnx's convclip_0 is the model's first Conv with its Clip
        first = next(o for o in p["ops"] if o["name"] == "convclip_0")
        assert first["node"] == "conv_1_pre" and first["fused"] == ["conv_1_pre", "conv_1"]


def test_litert_on_the_host_is_unsupported_with_the_reason(tmp_path: Path, env: dict[str, str]) -> None:
    (r,) = _profiled(tmp_path, env, "litert", precisions=("fp32",))
    assert r["status"] == "ok" and r["samples_s"]  # the timing stands
    assert r["ext"]["profile"] == {"version": 1, "unsupported": (
        "LiteRT's Python API (ai_edge_litert Interpreter) has no op profiler; per-op times come from "
        "tool:benchmark_model --enable_op_profiling=true (phones)")}


def test_dlbench_layer_times_become_the_profile(native_host: dict[str, Any], tmp_path: Path,
                                                env: dict[str, str]) -> None:
    (r,) = _profiled(tmp_path, env, "dlbench", precisions=("fp32",))
    p = _check(r)
    assert p["engine_source"].startswith("dlbench op events (ncnn") and p["iterations"] == 20
    assert p["node_link"] == "best-effort"
    first = next(o for o in p["ops"] if o["name"] == "convclip_0")
    assert first["node"] == "conv_1_pre" and first["fused"] == ["conv_1_pre", "conv_1"]
    # the layer passes ran after timing, outside the samples; the row's own op events are kept as before
    assert len(r["protocol"]["ops"]) == len(p["ops"])


@pytest.mark.parametrize("value, says", [
    (3, "profile: 3 is not allowed; allowed: true, false, or {iterations: N}"),
    ({"iterations": 0}, "profile.iterations: 0 is not a positive integer"),
    ({"passes": 2}, "profile.passes: unknown key; allowed: iterations"),
    (None, "profile: null is not allowed; allowed: true, false, or {iterations: N}"),
    ("both", "profile: given beside protocol.profile_iterations; say it once"),
])
def test_a_bad_profile_key_is_one_line_and_exit_2(tmp_path: Path, env: dict[str, str], value: Any, says: str) -> None:
    from tests.helpers import devicelab

    path = write_suite(tmp_path / "s.yaml", **({"profile": True, "protocol": {"profile_iterations": 3}}
                                                if value == "both" else {"profile": value}))
    p = devicelab("run", "--suite", str(path), env=env)
    assert p.returncode == 2 and says in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert p.stdout == ""


def test_a_runner_without_the_profile_command_is_never_sent_it(tmp_path: Path, env: dict[str, str]) -> None:
    """The README's example runner (protocol v1, no `profile` in its ready line, no op events): timed as always,
    its profile says why there is none — it would have failed on a command it does not know."""
    import shutil
    import subprocess

    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("needs a C compiler for the example runner")
    runner = tmp_path / "protocol_runner"
    example = Path(__file__).resolve().parent.parent / "examples" / "protocol_runner.c"
    subprocess.run([cc, "-O2", "-o", str(runner), str(example)], check=True, capture_output=True)
    (r,) = _profiled(tmp_path, env, {"name": "protocol", "options": {"binary": str(runner)}},  # type: ignore[arg-type]
                     models=["squeezenet1_1"], precisions=("fp32",))
    assert r["status"] == "ok", r["reason"]
    assert r["ext"]["profile"] == {"version": 1, "unsupported": (
        "the runner (protocol 1) does not offer the 'profile' command (no \"profile\": true in its ready line) and "
        "sent no op events")}


def test_resume_takes_no_profile_flag(env: dict[str, str]) -> None:
    from tests.helpers import devicelab

    p = devicelab("run", "--resume", "20261206-000000-abcd", "--profile", env=env)
    assert p.returncode == 2 and "--profile" in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
