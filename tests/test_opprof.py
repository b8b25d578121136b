"""Per-op profiles: the record (devicelab.opprof) and the shared vocabulary, pure parts. The engines' real profiles
are checked in tests/test_opprof_engines.py."""

from __future__ import annotations

from pathlib import Path
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
                          "node_link": "exact", "wall_s": 0.0055}
    kw.update(over)
    return opprof.build(ops, **kw)


def test_build_maps_sums_and_sets_against_the_median() -> None:
    p = _profile()
    assert opprof.problems(p) == []
    assert [o["type"] for o in p["ops"]] == ["Conv", "DepthwiseConv", "Other"]
    assert p["by_type"] == pytest.approx({"Conv": 0.003, "DepthwiseConv": 0.001, "Other": 0.001})
    assert p["total_s"] == pytest.approx(0.005)
    # the profiling overhead is the profiled iteration's wall time against the timed median, not the op sum's
    assert p["overhead"] == pytest.approx(0.0055 / 0.004 - 1)
    assert p["coverage"] == pytest.approx(0.005 / 0.0055)
    assert p["op_sum_vs_median"] == pytest.approx(0.25)
    assert p["mapped"] == pytest.approx(0.8)
    assert p["ops"][0]["fused"] == ["Conv_0", "Relu_1"]


def test_no_median_no_overhead_and_a_note() -> None:
    p = _profile(median_s=None)
    assert p["overhead"] is None and any("overhead" in n for n in p["notes"])
    assert p["coverage"] == pytest.approx(0.005 / 0.0055)
    assert opprof.problems(p) == []
    q = _profile(wall_s=None)  # a pass that did not time its iterations: no overhead, no coverage, said so
    assert q["overhead"] is None and q["coverage"] is None and q["op_sum_vs_median"] == pytest.approx(0.25)
    assert any("wall time" in n for n in q["notes"])


def test_dropped_op_times_are_counted_in_a_note() -> None:
    p = opprof.build([{"name": "a", "type": "Conv", "s": 0.001}, {"name": "b", "type": "Conv", "s": float("nan")},
                      {"name": "c", "type": "Conv", "s": -1.0}], engine="ncnn", engine_source="t", iterations=1,
                     median_s=0.001, node_link="none", wall_s=0.001)
    assert len(p["ops"]) == 1 and "2 op time(s) dropped" in " ".join(p["notes"])


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


# benchmark_model's op tables: the parser's golden outputs of the real tool (tests/golden/tools/benchmark_model).
GOLDEN = Path(__file__).parent / "golden" / "tools" / "benchmark_model"


def _tool_run(variant: str) -> Any:
    from devicelab.engines.tool_benchmark_model import ENGINE

    def read(ext: str) -> str:
        path = GOLDEN / f"{variant}.{ext}"
        return path.read_text() if path.exists() else ""

    return ENGINE.parse(read("stdout"), read("stderr"), 0, None)


def test_benchmark_model_op_tables_become_profiles() -> None:
    from devicelab.engines.tool_benchmark_model import op_profile

    p = op_profile(_tool_run("op_profiling_xnnpack").ops, 5, 0.0060)
    assert opprof.problems(p) == []
    # XNNPACK's own rows, not the delegate row that holds them all (no time counted twice)
    assert [o["type"] for o in p["ops"]] == ["Conv", "DepthwiseConv", "Conv", "Pool", "Gemm"]
    assert p["total_s"] == pytest.approx(0.001187 + 0.000531 + 0.000840 + 0.000044 + 0.000203)
    assert p["mapped"] == 1.0 and p["node_link"] == "none" and p["engine_source"].startswith("benchmark_model")
    for variant in ("op_profiling_start_column", "op_profiling_csv"):
        q = op_profile(_tool_run(variant).ops, 5, 0.0033)
        assert [o["type"] for o in q["ops"]] == ["Conv", "DepthwiseConv", "Conv", "Pool", "Gemm", "Softmax"]
        assert q["mapped"] == 1.0 and q["op_sum_vs_median"] == pytest.approx(q["total_s"] / 0.0033 - 1)


def test_absorbed_nodes_go_where_engines_fuse_them(tmp_path: Path) -> None:
    """The attribution rules on a small graph: x → Conv a → Relu b → Conv c → Add d(b, c) → Clip e → Conv f."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from devicelab.opprof import onnxgraph

    w = numpy_helper.from_array(np.zeros((4, 4, 1, 1), np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], "a"), helper.make_node("Relu", ["a"], ["b"], "b"),
             helper.make_node("Conv", ["b", "w"], ["c"], "c"), helper.make_node("Add", ["b", "c"], ["d"], "d"),
             helper.make_node("Clip", ["d"], ["e"], "e"), helper.make_node("Conv", ["e", "w"], ["f"], "f")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("f", TensorProto.FLOAT, [1, 4, 8, 8])], [w])
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph), str(path))
    read = onnxgraph.read(path)
    # Relu after a: into a; the Add into c (the latest producer of its inputs); the Clip into the Add's owner
    assert onnxgraph.absorbed(read, {"a", "c", "f"}) == {"a": ["a", "b"], "c": ["c", "d", "e"]}
    # an engine that names the fused kernel after the activation (ONNX Runtime's Conv+Clip): the Conv goes into it;
    # an Add before a kept Clip still goes to its convolution
    assert onnxgraph.absorbed(read, {"b", "c", "e", "f"}) == {"b": ["b", "a"], "c": ["c", "d"]}


def test_generic_and_bookkeeping_ops_are_typed_honestly(tmp_path: Path) -> None:
    """ncnn's BinaryOp is whatever model node it was paired with (a Mul stays a Mul); OpenVINO's Convert is typed by
    its model node (a DequantizeLinear) or is Other; graph inputs, shapes and identities are Other, never Reshape."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from devicelab.opprof import onnxgraph

    assert vocab.classify("openvino", "Convert") == "Other"
    assert vocab.classify("openvino", "Convert", {"original_type": "DequantizeLinear"}) == "Dequantize"
    for engine, name in (("ncnn", "Input"), ("openvino", "Input"), ("onnxruntime", "Shape"), ("mnn", "Identity"),
                         ("ncnn", "MemoryData")):
        assert vocab.classify(engine, name) == "Other", (engine, name)
    w = numpy_helper.from_array(np.zeros((4, 4, 1, 1), np.float32), "w")
    k = numpy_helper.from_array(np.ones((1, 4, 1, 1), np.float32), "k")
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], "a"), helper.make_node("Mul", ["a", "k"], ["b"], "b"),
             helper.make_node("Add", ["b", "a"], ["c"], "c")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, 4, 8, 8])], [w, k])
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph), str(path))
    ops = [{"name": "conv_0", "type": "Convolution", "s": 0.003}, {"name": "binaryop_0", "type": "BinaryOp", "s": 0.001},
           {"name": "binaryop_1", "type": "BinaryOp", "s": 0.001}]
    linked, count = onnxgraph.link_by_order(ops, path, "ncnn")
    assert count == 3 and [o["node"] for o in linked] == ["a", "b", "c"]
    p = opprof.build(linked, engine="ncnn", engine_source="t", iterations=1, median_s=0.005, node_link="best-effort",
                     wall_s=0.005)
    assert [o["type"] for o in p["ops"]] == ["Conv", "Mul", "Add"]


def test_depthwise_with_a_channel_multiplier(tmp_path: Path) -> None:
    """A depthwise convolution with channel multiplier 2 (group = C_in = 4, C_out = 8) is depthwise; a grouped one
    with two input channels per group is not."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from devicelab.opprof import onnxgraph

    inits = [numpy_helper.from_array(np.zeros((8, 1, 3, 3), np.float32), "dw"),
             numpy_helper.from_array(np.zeros((8, 2, 3, 3), np.float32), "gw")]
    nodes = [helper.make_node("Conv", ["x", "dw"], ["a"], "a", group=4),
             helper.make_node("Conv", ["x", "gw"], ["b"], "b", group=2)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, [1, 8, 6, 6]) for o in "ab"], inits)
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph), str(path))
    assert {n.name: n.depthwise for n in onnxgraph.read(path)} == {"a": True, "b": False}


def test_onnxruntime_events_are_counted_per_run_not_per_event() -> None:
    """A node that ran two kernels in each of the 2 profiled runs (after a warmup run): its time per run is the sum
    of its kernels in those runs over the runs, not the mean of its last events."""
    from devicelab.engines.onnxruntime import profile_ops

    def run(ts: float) -> dict[str, Any]:
        return {"cat": "Session", "name": "model_run", "ts": ts, "dur": 90}

    def kernel(ts: float, dur: float) -> dict[str, Any]:
        return {"cat": "Node", "name": "conv_kernel_time", "ts": ts, "dur": dur, "args": {"op_name": "Conv"}}

    events = [run(0), kernel(1, 500), kernel(2, 500), run(100), kernel(101, 10), kernel(102, 20), run(200),
              kernel(201, 30), kernel(202, 40)]
    (op,) = profile_ops(events, 2, None)
    assert op["s"] == pytest.approx((10 + 20 + 30 + 40) / 2 / 1e6) and op["extra"]["calls"] == 2
