"""ONNX Runtime (pip onnxruntime), CPU execution provider.

fp32 runs the ONNX file as is; fp16 converts weights and arithmetic to float16 (float32 at the model's inputs
and outputs); int8 is static QDQ quantization, per-channel, calibrated on a deterministic set. Not
quantize_dynamic: on CNNs it makes ConvInteger graphs several times slower than fp32.
"""

from __future__ import annotations

import json
import platform
import re
import statistics
import tempfile
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

from devicelab.engines.base import (Engine, PreparedModel, Session, SimpleSession, SourceModel, calibration_inputs,
                                    calibration_key)
from devicelab.paths import cached_file


def qdq_int8(model: SourceModel, cache_dir: Path) -> Path:
    """Static QDQ int8 (u8 activations, s8 per-channel weights), shared by ONNX Runtime and OpenVINO."""
    calib = calibration_key(model)

    def build(out: Path) -> None:
        from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quant_pre_process,
                                              quantize_static)

        samples = calibration_inputs(model)

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self._it = iter(samples)

            def get_next(self) -> dict[str, Any] | None:
                return next(self._it, None)

        with tempfile.TemporaryDirectory() as tmp:
            pre = Path(tmp) / "pre.onnx"
            quant_pre_process(str(model.path), str(pre), skip_symbolic_shape=True)
            quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)

    return cached_file(cache_dir, f"{model.sha256[:16]}-int8-qdq-{calib}.onnx", build)


def fp16_model(model: SourceModel, cache_dir: Path) -> Path:
    def build(out: Path) -> None:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        converted = convert_float_to_float16(onnx.load(str(model.path)), keep_io_types=True)
        onnx.save(converted, str(out))

    return cached_file(cache_dir, f"{model.sha256[:16]}-fp16.onnx", build)


class OnnxRuntimeEngine(Engine):
    name = "onnxruntime"
    # Said on forked rows unless glibc's mmap threshold was fixed at devicelab's default or below: at the default the
    # paths' peaks agree within 0.4 % (medians of 100 rounds; docs/architecture.md, "The allocator").
    fork_caveat = ("peak memory: unless glibc's mmap threshold is fixed at 128 KiB or less (devicelab's default), "
                   "ONNX Runtime's peak RSS depends on the heap's history, so a zygote's child, whose start ran other "
                   "code, can peak a few % away from a fresh process; for memory series run it with options: "
                   "{process: exec}, or leave mmap_threshold at devicelab's default")
    package = "onnxruntime"
    module = "onnxruntime"
    formats = ("onnx",)
    zygote_any_cpus = ("1.32",)  # its import reads no CPU set and maps no OpenMP runtime (docs/architecture.md)
    precisions = ("fp32", "fp16", "int8")
    backends = ("cpu",)
    device_kinds = ("host",)
    unsupported = {"bf16": "ONNX Runtime's CPU execution provider has no bf16 inference mode"}

    def prepare(self, model: SourceModel, precision: str, cache_dir: Path) -> PreparedModel:
        if precision == "int8":
            return PreparedModel(qdq_int8(model, cache_dir), ("static QDQ int8, per-channel weights, u8 activations",))
        if precision == "fp16":
            note = "float16 graph, float32 inputs and outputs"
            if platform.machine().lower() in ("x86_64", "amd64", "i686"):
                # Seen in ORT's optimized graph: Casts back to float and fp32 NCHWc convolutions.
                note += "; on x86 ONNX Runtime has no fp16 convolution kernels and computes in fp32"
            return PreparedModel(fp16_model(model, cache_dir), (note,))
        # fp32 runs as is: ORT's CPU provider has no lower-precision switch that fp32 must turn off.
        return PreparedModel(model.path)

    def open_session(self, config: dict[str, Any]) -> Session:
        import onnxruntime as ort

        return _OrtSession(ort.InferenceSession(config["model"], _session_options(config),
                                                providers=["CPUExecutionProvider"]))


def _session_options(config: dict[str, Any]) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    # intra-op = the calling thread plus threads-1 workers; inter-op parallelism off so "threads" means
    # exactly what the other engines mean by it.
    so.intra_op_num_threads = int(config["threads"])
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    for key, value in (config.get("options") or {}).get("session_config", {}).items():
        so.add_session_config_entry(str(key), str(value))
    return so


# Runs of the profiled session before the profiled ones: a new session's first runs allocate and are slow.
PROFILE_WARMUP = 3


class _OrtSession(SimpleSession):
    def __init__(self, sess: Any) -> None:
        self._sess = sess

    def run(self, prepared: Any) -> Any:
        return self._sess.run(None, prepared)

    def profile(self, prepared: Any, iterations: int, config: dict[str, Any]) -> dict[str, Any]:
        """A second session of the same model with the same options and `enable_profiling` on (the timed one never
        profiles), PROFILE_WARMUP runs, then `iterations` runs; the node events of those runs, averaged per node."""
        import onnxruntime as ort

        with tempfile.TemporaryDirectory(prefix="devicelab-ort-profile-") as tmp:
            so = _session_options(config)
            so.enable_profiling = True
            so.profile_file_prefix = str(Path(tmp) / "ort")
            sess = ort.InferenceSession(config["model"], so, providers=["CPUExecutionProvider"])
            for _ in range(PROFILE_WARMUP):
                sess.run(None, prepared)
            walls = []  # each profiled iteration's wall time: the profiling overhead against the timed median
            for _ in range(iterations):
                t0 = time.perf_counter()
                sess.run(None, prepared)
                walls.append(time.perf_counter() - t0)
            events = json.loads(Path(sess.end_profiling()).read_text())
        return {"ops": profile_ops(events, iterations, config["model"]), "iterations": iterations,
                "wall_s": statistics.median(walls),
                "source": "onnxruntime enable_profiling (a second session, same options, after timing)",
                "node_link": "exact",
                "notes": ["ONNX Runtime's node names are the model's; ops ONNX Runtime added itself (layout reorders) "
                          "have no model node, and model nodes it fused are listed in the op that absorbed them"]}


def profile_ops(events: list[dict[str, Any]], iterations: int, model: str | Path | None) -> list[dict[str, Any]]:
    """ONNX Runtime's profile (a Chrome trace) → one op per graph node: its `_kernel_time` events of the last
    `iterations` runs, averaged (the earlier ones are the profiled session's warmup). `model`: the ONNX file the
    session ran, for the node link, depthwise convolutions and fused nodes."""
    # The profiled runs are the last `iterations` model_run spans: a node's kernel events inside them, however many
    # per run (a node may run several kernels, or none in some runs), summed and divided by the runs.
    spans = sorted((float(e.get("ts", 0)), float(e.get("ts", 0)) + float(e.get("dur", 0))) for e in events
                   if e.get("cat") == "Session" and e.get("name") == "model_run")
    since = spans[-iterations][0] if len(spans) >= iterations else None
    runs: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time") and \
                (since is None or float(e.get("ts", 0)) >= since):
            runs.setdefault(e["name"][:-len("_kernel_time")], []).append(e)
    graph: dict[str, Any] = {}
    fused: dict[str, list[str]] = {}
    node_of: dict[str, str | None] = {name: None for name in runs}
    if model is not None:
        from devicelab.opprof import onnxgraph

        nodes = onnxgraph.read(model)
        graph = {n.name: n for n in nodes}
        node_of = {name: model_node(name, graph) for name in runs}
        fused = onnxgraph.absorbed(nodes, {n for n in node_of.values() if n})
    ops = []
    for name, seen in runs.items():
        # without model_run spans (an older trace): each node's last `iterations` events, one per run assumed
        last = seen if since is not None else seen[-iterations:]
        per_run = iterations if since is not None else len(last)
        args = last[0].get("args") or {}
        node_name = node_of[name]
        node = graph.get(node_name) if node_name else None
        ops.append({"name": name, "type": str(args.get("op_name", "")),
                    "s": sum(float(e.get("dur", 0)) for e in last) / per_run / 1e6,  # µs per run → s
                    "node": node_name, "fused": fused.get(node_name, []) if node_name else [],
                    # depthwise: the model's convolution (the op's own node, or one it absorbed) says so
                    "hint": {"depthwise": any(graph[n].depthwise for n in {node_name, *fused.get(node_name, [])})
                             if node is not None else _depthwise_by_shape(args)},
                    "extra": {"provider": args.get("provider"), "calls": len(last) / per_run}})
    return ops


# Suffixes ONNX Runtime's graph transformers add to the node they rewrite: the NCHWc layout (`conv_1_nchwc`,
# `gap_63_pool_nchwc`) and QDQ → QLinear kernels (`conv_1_pre_token_1`).
_ORT_SUFFIX = re.compile(r"(_nchwc|_token_\d+)$")


def model_node(name: str, graph: Collection[str]) -> str | None:
    """The model node an ONNX Runtime kernel came from: its name, or its name without the suffixes ONNX Runtime's
    rewrites add; None for a kernel ONNX Runtime made up (a layout reorder, a Transpose)."""
    while name not in graph:
        stripped = _ORT_SUFFIX.sub("", name)
        if stripped == name:
            return None
        name = stripped
    return name


def _depthwise_by_shape(args: dict[str, Any]) -> bool:
    """An op ONNX Runtime made itself (no model node): depthwise when the weight is [C, 1, kh, kw] and the input has
    C channels."""
    shapes = [next(iter(s.values()), None) for s in args.get("input_type_shape") or () if isinstance(s, dict)]
    if len(shapes) < 2 or not all(isinstance(s, list) for s in shapes[:2]):
        return False
    x, w = shapes[0], shapes[1]
    return len(w) == 4 and len(x) >= 2 and w[1] == 1 and w[0] == x[1] and w[0] > 1


ENGINE = OnnxRuntimeEngine()


def reference_outputs(model: SourceModel, seed: int, count: int, cache_dir: Path) -> list[Any]:
    """fp32 outputs of ONNX Runtime on the accuracy inputs (`accuracy_feeds`: seeded inputs 1..count, or the model's
    data set's test split): the reference every variant is held to. Computed in the controller (one thread, between
    configs) and cached by model and inputs."""
    import numpy as np

    from devicelab.engines.base import accuracy_feeds, accuracy_key

    def build(out: Path) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.log_severity_level = 3
        sess = ort.InferenceSession(str(model.path), so, providers=["CPUExecutionProvider"])
        runs = [sess.run(None, feeds) for feeds in accuracy_feeds(model, seed, count)]
        with open(out, "wb") as f:
            np.savez(f, *[np.stack([r[k] for r in runs]).astype(np.float32) for k in range(len(runs[0]))])

    path = cached_file(cache_dir, f"{model.sha256[:16]}-{accuracy_key(model, seed, count)}.npz", build)
    with np.load(path) as data:
        return [data[f"arr_{k}"] for k in range(len(data.files))]
