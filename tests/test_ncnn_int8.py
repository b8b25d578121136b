"""ncnn int8 without ncnn's tools (devicelab.engines.ncnn_int8): the pure parts against ncnn2table/ncnn2int8's
rules, then quantized zoo models in real pip ncnn with int8 inference on, `devicelab run`, and dlbench."""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from devicelab import zoo
from devicelab.analysis.accuracy import agreement
from devicelab.engines import get_engine
from devicelab.engines import ncnn_int8 as q
from devicelab.engines.base import SourceModel, calibration_inputs, make_inputs
from devicelab.engines.dlbench import write_inputs
from devicelab.engines.ncnn import convert_onnx
from helpers import run_json, write_suite

SEED = 1234
ACCURACY_INPUTS = 8  # inputs 1..8 of the seeded stream, as the harness's accuracy pass draws them

# ---- pure parts ------------------------------------------------------------------------------------------


def _ncnn2table_kl(h: np.ndarray, t: int) -> float:
    """A literal port of ncnn2table's per-threshold loops (quantize_KL), as the spec for the vectorised search."""
    eps, target = 0.0001, 128
    clip = [eps + h[j] for j in range(t)]
    clip[t - 1] += sum(h[t:])
    npb = t / target
    quant = [0.0] * target
    for j in range(target):
        last = j == target - 1  # ncnn's last level starts at t - npb and has no right part
        start, end = (t - npb, t) if last else (j * npb, (j + 1) * npb)
        left_upper, right_lower = math.ceil(start), (t if last else math.floor(end))
        left_scale, right_scale = left_upper - start, end - right_lower
        if left_scale > 0:
            quant[j] += left_scale * h[left_upper - 1]
        if right_scale > 0:
            quant[j] += right_scale * h[right_lower]
        quant[j] += sum(h[left_upper:right_lower])
        quant[j] /= right_lower - left_upper + left_scale + right_scale
    expand = [eps] * t
    for j in range(target):
        last = j == target - 1  # ncnn's last level starts at t - npb and has no right part
        start, end = (t - npb, t) if last else (j * npb, (j + 1) * npb)
        left_upper, right_lower = math.ceil(start), (t if last else math.floor(end))
        left_scale, right_scale = left_upper - start, end - right_lower
        if left_scale > 0:
            expand[left_upper - 1] += left_scale * quant[j]
        if right_scale > 0:
            expand[right_lower] += right_scale * quant[j]
        for k in range(left_upper, right_lower):
            expand[k] += quant[j]
    return sum(a * math.log(a / b) for a, b in zip(clip, expand))


def test_kl_search_is_ncnn2tables() -> None:
    rng = np.random.default_rng(5)
    for counts in (rng.integers(0, 1000, 300), np.r_[rng.exponential(1.0, 250) * 1e4, np.zeros(50)].astype(int),
                   np.r_[np.zeros(140), rng.integers(1, 9, 160)]):
        h = counts / counts.sum()
        got = q.kl_divergences(counts)
        want = [_ncnn2table_kl(h, t) for t in range(128, len(counts))]
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
        assert q.kl_threshold_bin(counts) == 128 + int(np.argmin(want))
    # Everything inside the first 128 bins: quantizing at 128 levels is exact, so 128 it is (KL 0).
    inside = np.r_[rng.integers(1, 50, 100), np.zeros(1948, int)]
    assert q.kl_threshold_bin(inside) == 128
    # The scale is 127 over the centre of the chosen bin, in units of absmax / 2048.
    assert q.kl_scale(inside, 2048.0) == pytest.approx(127 / 128.5)
    assert q.kl_scale(np.zeros(2048, int), 0.0) == 1.0


def test_histogram_skips_zeros_and_clamps_to_the_last_bin() -> None:
    counts = q.histogram(np.array([0.0, 0.0, -1.0, 0.5, 1.0, 0.00049], np.float32), 1.0)
    assert counts.sum() == 4 and counts[2047] == 2 and counts[1024] == 1 and counts[1] == 1


def test_weight_scales_and_rounding_follow_ncnn() -> None:
    np.testing.assert_allclose(q.weight_scales(np.array([[0.5, -2.0], [0.0, 0.0]]), 2), [63.5, 1.0])
    np.testing.assert_allclose(q.weight_scales(np.array([[0.5, -2.0]]), 1, levels=31), [15.5])
    # float2int8: round half away from zero (not numpy's half-to-even), clamp to ±127 (never -128)
    got = q.quantize_weights(np.array([[0.5, -0.5, 1.5, 2.5, -2.5, 200.0, -200.0, 0.49]]), np.array([1.0]))
    assert got.tolist() == [1, -1, 2, 3, -3, 127, -127, 0]


_PARAM = """7767517
10 11
Input            in0   0 1 in0
Convolution      c3s1  1 1 in0 a 0=8 1=3 4=1 5=1 6=216 9=1
Convolution      c1    1 1 a b 0=8 1=1 5=1 6=64
Split            sp    1 2 b b0 b1
ConvolutionDepthWise dw 1 1 b0 c 0=8 1=3 3=2 4=1 5=1 6=72 7=8 9=3 -23310=2,0.0,6.0
Convolution      c3s2  1 1 b1 d 0=8 1=3 3=2 4=1 5=0 6=576
BinaryOp         add   2 1 c d e 0=0
Convolution      c2    1 1 e f 0=4 1=1 5=1 6=32
Pooling          gap   1 1 f g 0=1 4=1
InnerProduct     fc    1 1 g out0 0=3 1=1 2=12
"""


def _bin(param: str, rng: np.random.Generator) -> bytes:
    out = bytearray()
    for layer in q.parse_param(param):
        if layer.type in q.QUANTIZED_TYPES:
            size = layer.get(6 if layer.type != "InnerProduct" else 2)
            out += b"\0\0\0\0" + rng.standard_normal(size).astype("<f4").tobytes()
            if layer.get(5 if layer.type != "InnerProduct" else 1):
                out += rng.standard_normal(layer.get(0)).astype("<f4").tobytes()
    return bytes(out)


def test_rewrite_follows_ncnn2int8_layout_and_scale_terms() -> None:
    weights = _bin(_PARAM, np.random.default_rng(1))
    layers = q.parse_param(_PARAM)
    assert [q.six_bit(x) for x in layers if x.type in q.QUANTIZED_TYPES] == [True, False, False, False, False, False]
    table = q.CalibrationTable()
    for layer, segs in zip(*q.read_model(_PARAM, weights)):
        if layer.type in q.QUANTIZED_TYPES:
            rows = layer.get(7) if layer.type == "ConvolutionDepthWise" else layer.get(0)
            table.weight_scales[layer.name] = q.weight_scales(q.decode(segs[0], weights), rows)
            table.input_scales[layer.name] = 10.0 + len(table.input_scales)
    param, out = q.quantize(_PARAM, weights, table)
    terms = {x.name: x.get(8) for x in q.parse_param(param)}
    # c3s1 → c1: both int8, requantize; c1 → Split whose branches are all int8 convolutions: requantize (ncnn takes
    # the first branch's input scale); dw and c3s2 feed a BinaryOp, c2 a Pooling: float out. Depthwise: term 1.
    assert terms == {"in0": 0, "c3s1": 102, "c1": 102, "sp": 0, "dw": 1, "c3s2": 2, "add": 0, "c2": 2, "gap": 0,
                     "fc": 2}
    # Walk the new .bin the way ModelBin reads it: int8 tag, int8 weights padded to 4, fp32 bias, weight scales
    # (per output channel; per group for depthwise), the input scale, and the next layer's for requantize.
    offset = 0
    for layer, scale_term in ((x, terms[x.name]) for x in layers if x.type in q.QUANTIZED_TYPES):
        size = layer.get(6 if layer.type != "InnerProduct" else 2)
        assert int.from_bytes(out[offset:offset + 4], "little") == q.TAG_INT8
        offset += 4 + (size + 3) // 4 * 4
        offset += 4 * layer.get(0) if layer.get(5 if layer.type != "InnerProduct" else 1) else 0
        n_scales = layer.get(7) if layer.type == "ConvolutionDepthWise" else layer.get(0)
        scales = np.frombuffer(out, "<f4", n_scales + 1 + (scale_term > 100), offset)
        np.testing.assert_array_equal(scales[:n_scales], table.weight_scales[layer.name])
        assert scales[n_scales] == table.input_scales[layer.name]
        if scale_term > 100:  # the output scale: the input scale of the convolution it feeds
            assert scales[-1] == table.input_scales[{"c3s1": "c1", "c1": "dw"}[layer.name]]
        offset += 4 * len(scales)
    assert offset == len(out)
    assert q.CalibrationTable({"c1": np.array([1.5, 2.0])}, {"c1": 0.25}).to_text() == \
        "c1_param_0 1.500000 2.000000 \nc1 0.250000 \n"


@pytest.mark.slow
def test_every_rewritten_layer_kind_loads_and_runs_in_ncnn(tmp_path: Path) -> None:
    """The small graph above (requantize directly and through a Split, depthwise term 1 with ReLU6, a BinaryOp
    fed by int8 layers, InnerProduct), calibrated for real, loads in pip ncnn and tracks fp32."""
    (tmp_path / "f.param").write_text(_PARAM)
    (tmp_path / "f.bin").write_bytes(_bin(_PARAM, np.random.default_rng(2)))
    spec = [{"name": "x", "shape": [1, 3, 16, 16]}]
    table = q.calibrate(tmp_path / "f.param", tmp_path / "f.bin", [[make_inputs(spec, 7, i)["x"][0]] for i in range(4)])
    param, weights = q.quantize(_PARAM, (tmp_path / "f.bin").read_bytes(), table)
    (tmp_path / "q.param").write_text(param)
    (tmp_path / "q.bin").write_bytes(weights)
    m = {"inputs": spec}
    fp32 = _outputs(m, "fp32", tmp_path / "f.param", tmp_path / "f.bin", indices=range(4))
    int8 = _outputs(m, "int8", tmp_path / "q.param", tmp_path / "q.bin", indices=range(4))
    assert fp32.shape == int8.shape == (4, 3)
    acc = agreement([fp32], [int8])
    assert acc["cosine"] > 0.99 and acc["max_abs_diff"] > 1e-4, acc  # measured: 0.9995


def test_layers_it_cannot_walk_are_refused_by_name() -> None:
    param = "7767517\n2 2\nInput in0 0 1 in0\nDeconvolution up 1 1 in0 out0 0=4 1=2 5=0 6=64\n"
    with pytest.raises(q.NcnnInt8Error, match="Deconvolution layer \\(up\\)"):
        q.read_model(param, b"\0" * 260)
    with pytest.raises(q.NcnnInt8Error, match="describes"):
        q.read_model(_PARAM, _bin(_PARAM, np.random.default_rng(1)) + b"\0\0\0\0")


# ---- zoo models in pip ncnn ------------------------------------------------------------------------------

MODELS = ("squeezenet1_1", "mobilenet_v2")


@pytest.fixture(scope="module")
def models(data_dir: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for name in MODELS:
        mf = zoo.zoo_model(name, data_dir / "zoo")
        inputs = zoo.onnx_inputs(mf.path, {})
        source = SourceModel(name, mf.path, mf.sha256, tuple(inputs), zoo=True)
        param, weights = convert_onnx(mf.path, mf.sha256, source.shapes, data_dir / "converted" / "ncnn")
        int8_param, int8_weights = q.int8_model(source, param, weights)
        out[name] = {"source": source, "param": param, "weights": weights, "int8_param": int8_param,
                     "int8_weights": int8_weights, "inputs": list(inputs)}
    return out


def _outputs(m: dict[str, Any], precision: str, param: Path, weights: Path, threads: int = 1,
             indices: range = range(1, ACCURACY_INPUTS + 1)) -> np.ndarray:
    session = get_engine("ncnn").open_session({"threads": threads, "precision": precision, "model": str(param),
                                               "options": {"weights": str(weights)}, "inputs": m["inputs"]})
    return np.stack([session.outputs(session.run(session.prepare(make_inputs(m["inputs"], SEED, i))))[0][0]
                     for i in indices])


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_int8_model_runs_int8_in_pip_ncnn_close_to_fp32(models: dict[str, dict[str, Any]], name: str) -> None:
    m = models[name]
    fp32 = _outputs(m, "fp32", m["param"], m["weights"])
    noise = np.abs(fp32 - _outputs(m, "fp32", m["param"], m["weights"], threads=2)).max()
    int8 = _outputs(m, "int8", m["int8_param"], m["int8_weights"])
    acc = agreement([fp32], [int8])
    # Measured on this x86 host: squeezenet1_1 cosine 0.9986, max|Δ| 0.44, top-1 1/8 (its seeded logits are
    # 0.04 apart); mobilenet_v2 cosine 0.9988, max|Δ| 0.17, top-1 7/8. fp32 1-vs-2 threads: 0.
    assert acc["cosine"] > 0.99, acc
    # int8 arithmetic, not fp32 again: far outside fp32's own run-to-run and thread-count noise
    assert acc["max_abs_diff"] > max(100 * noise, 1e-3) and acc["cosine"] < 0.99999, (acc, noise)
    # The conv/fc weights are int8 now: a quarter of the fp32 file, plus fp32 biases and scales.
    ratio = m["int8_weights"].stat().st_size / m["weights"].stat().st_size
    assert 0.25 < ratio < 0.27, ratio
    layers = q.parse_param(m["int8_param"].read_text())
    assert {x.type for x in layers if x.get(8)} == ({"Convolution"} if name == "squeezenet1_1" else
                                                   {"Convolution", "ConvolutionDepthWise", "InnerProduct"})
    assert all(x.get(8) for x in layers if x.type in q.QUANTIZED_TYPES)


def _broken(m: dict[str, Any], tmp: Path, table: q.CalibrationTable) -> np.ndarray:
    param, weights = q.quantize(m["param"].read_text(), m["weights"].read_bytes(), table)
    (tmp / "x.param").write_text(param)
    (tmp / "x.bin").write_bytes(weights)
    return _outputs(m, "int8", tmp / "x.param", tmp / "x.bin", indices=range(1, 4))


@pytest.mark.slow
def test_ncnn_reads_the_int8_data(models: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    """The files are what int8_model caches (deterministic calibration), and ncnn uses both kinds of scale: with
    every weight scale ×100 (weights saturate) or every input scale ×100 (activations saturate) the output is
    ruined, which could not happen if ncnn ran the layers in float."""
    m = models["squeezenet1_1"]
    samples = [[s[i["name"]][0] for i in m["inputs"]] for s in calibration_inputs(m["source"])]
    table = q.calibrate(m["param"], m["weights"], samples)
    param, weights = q.quantize(m["param"].read_text(), m["weights"].read_bytes(), table)
    assert param == m["int8_param"].read_text() and weights == m["int8_weights"].read_bytes()
    fp32 = _outputs(m, "fp32", m["param"], m["weights"], indices=range(1, 4))
    assert agreement([fp32], [_outputs(m, "int8", m["int8_param"], m["int8_weights"], indices=range(1, 4))])[
        "cosine"] > 0.99
    for broken in (q.CalibrationTable({k: v * 100 for k, v in table.weight_scales.items()}, table.input_scales),
                   q.CalibrationTable(table.weight_scales, {k: v * 100 for k, v in table.input_scales.items()})):
        assert agreement([fp32], [_broken(m, tmp_path, broken)])["cosine"] < 0.9


@pytest.mark.slow
def test_int8_files_are_cached_by_calibration_set(models: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    m = models["squeezenet1_1"]
    before = m["int8_weights"].stat().st_mtime_ns
    assert q.int8_model(m["source"], m["param"], m["weights"]) == (m["int8_param"], m["int8_weights"])
    assert m["int8_weights"].stat().st_mtime_ns == before
    assert "seeded16" in m["int8_weights"].name and m["int8_weights"].parent == m["param"].parent
    folder = tmp_path / "calib"
    folder.mkdir()
    for i in range(2):
        np.save(folder / f"{i}.npy", make_inputs(m["inputs"], 99, i)[m["inputs"][0]["name"]])
    user = SourceModel(m["source"].name, m["source"].path, m["source"].sha256, m["source"].inputs, calibration=folder)
    param, weights = q.int8_model(user, m["param"], m["weights"])
    assert "user" in weights.name and weights != m["int8_weights"]
    assert weights.read_bytes() != m["int8_weights"].read_bytes()


def test_engines_declare_int8() -> None:
    for name in ("ncnn", "dlbench"):
        engine = get_engine(name)
        assert "int8" in engine.precisions and "int8" not in engine.unsupported, name


@pytest.mark.slow
def test_engine_prepare_gives_the_int8_pair(models: dict[str, dict[str, Any]], data_dir: Path) -> None:
    m = models["squeezenet1_1"]
    for name in ("ncnn", "dlbench"):
        prepared = get_engine(name).prepare(m["source"], "int8", data_dir / "converted" / name)
        assert (prepared.path, Path(prepared.options["weights"])) == (m["int8_param"], m["int8_weights"]), name
        assert any("ncnn2int8" in n for n in prepared.notes)


# ---- end to end ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_devicelab_run_ncnn_int8(env: dict[str, str], tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "s.yaml", models=["squeezenet1_1"], engines=["ncnn"], precisions=["int8"])
    code, out, err = run_json("run", "--suite", str(suite), env=env)
    assert code == 0, err
    (r,) = out["results"]
    assert r["status"] == "ok" and r["precision"] == "int8", (r["reason"], r["stderr_tail"])
    assert 0.99 < r["accuracy"]["cosine"] < 0.99999 and r["accuracy"]["inputs"] == 4, r["accuracy"]
    code, engines, err = run_json("engines", env=env)
    ncnn = next(e for e in engines if e["name"] == "ncnn")
    assert "int8" in ncnn["precisions"] and "int8" not in ncnn["unsupported"]


@pytest.mark.slow
def test_dlbench_int8_matches_pip_ncnn_int8(native_host: dict[str, Any], models: dict[str, dict[str, Any]],
                                            tmp_path: Path) -> None:
    m = models["squeezenet1_1"]
    cfg = {"engine": "dlbench", "model": str(m["int8_param"]), "threads": 1, "cpus": [max(os.sched_getaffinity(0))],
           "precision": "int8", "backend": "cpu", "seed": SEED, "inputs": write_inputs(m["inputs"], SEED, tmp_path),
           "options": {"weights": str(m["int8_weights"])}, "warmup": {"min_iterations": 1, "min_seconds": 0},
           "iterations": 2, "outputs_file": "outputs.npz"}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    p = subprocess.run([native_host["artifacts"]["dlbench"]["path"], str(tmp_path / "config.json")],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    done = json.loads(p.stdout.splitlines()[-1])
    with np.load(done["outputs_file"]) as npz:
        native = npz["arr_0"].reshape(1, -1)
    pip_int8 = _outputs(m, "int8", m["int8_param"], m["int8_weights"], indices=range(0, 1))
    fp32 = _outputs(m, "fp32", m["param"], m["weights"], indices=range(0, 1))
    # the same library version on the same int8 files: the same numbers, and int8's own distance from fp32
    np.testing.assert_allclose(native, pip_int8, rtol=1e-5, atol=1e-5)
    assert np.abs(native - fp32).max() > 1e-3


@pytest.mark.slow
def test_devicelab_run_dlbench_int8(native_host: dict[str, Any], env: dict[str, str], tmp_path: Path) -> None:
    """`devicelab run --engine dlbench --precision int8` runs the pip engine's quantized files. (dlbench writes the
    outputs of one input, not of the accuracy inputs, so its rows carry no accuracy: the numbers are compared
    with pip ncnn's directly, above.)"""
    suite = write_suite(tmp_path / "s.yaml", models=["squeezenet1_1"], engines=["dlbench"], precisions=["int8"])
    code, out, err = run_json("run", "--suite", str(suite), env=env)
    assert code == 0, err
    (r,) = out["results"]
    assert r["status"] == "ok" and r["precision"] == "int8", (r["reason"], r["stderr_tail"])
    assert any("ncnn2int8" in n for n in r["notes"]) and r["engine_version"] == native_host["dlbench_version"]
