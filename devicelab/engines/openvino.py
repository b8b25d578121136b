"""OpenVINO (pip openvino), CPU (GPU where the host has one).

Reads ONNX directly. Pitfall: on CPUs with bf16 support the CPU plugin *defaults* to bf16 inference, so
fp32 must set the inference precision hint to f32 explicitly (as ncnn's fp16 default must be switched off).
int8 runs ONNX Runtime's static QDQ model (OpenVINO executes QDQ graphs as u8/s8).
"""

from __future__ import annotations

import statistics
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from devicelab.engines.base import Engine, PreparedModel, Session, SourceModel, is_software_gpu
from devicelab.engines.onnxruntime import qdq_int8

_HINT = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}


@lru_cache(maxsize=1)
def _host_capabilities() -> tuple[tuple[str, ...], tuple[str, ...]]:
    import openvino as ov

    core = ov.Core()
    return tuple(core.available_devices), tuple(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


class OpenVinoEngine(Engine):
    name = "openvino"
    package = "openvino"
    module = "openvino"
    zygote_any_cpus = ("2026.4",)  # its import reads no CPU set; TBB's arenas come later, in the pinned child
    formats = ("onnx", "tflite")
    precisions = ("fp32", "fp16", "bf16", "int8")
    backends = ("cpu", "gpu")
    device_kinds = ("host",)

    def probe_host(self, precision: str, backend: str) -> str | None:
        if backend == "cpu" and precision in ("fp32", "int8"):
            return None  # nothing to ask OpenVINO: don't pay for importing it
        devices, caps = _host_capabilities()
        if backend == "gpu":
            return None if "GPU" in devices else f"OpenVINO finds no GPU on this host (devices: {', '.join(devices)})"
        if precision == "fp16" and "FP16" not in caps:
            return (f"this CPU has no fp16 arithmetic for OpenVINO (capabilities: {', '.join(caps)}); "
                    "its CPU plugin would silently run bf16 or fp32 instead")
        if precision == "bf16" and "BF16" not in caps:
            return f"this CPU has no bf16 support for OpenVINO (capabilities: {', '.join(caps)})"
        return None

    def prepare(self, model: SourceModel, precision: str, cache_dir: Path) -> PreparedModel:
        if precision == "int8":
            return PreparedModel(qdq_int8(model, cache_dir.parent / "onnxruntime"),
                                 ("ONNX Runtime's static QDQ int8 model, compiled by OpenVINO",))
        return PreparedModel(model.path)

    def open_session(self, config: dict[str, Any]) -> Session:
        import openvino as ov

        core = ov.Core()
        device = "GPU" if config["backend"] == "gpu" else "CPU"
        props: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
                                 "INFERENCE_PRECISION_HINT": _HINT[config["precision"]]}
        if device == "CPU":
            props["INFERENCE_NUM_THREADS"] = int(config["threads"])
        compiled = core.compile_model(config["model"], device, props)
        actual = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
        want = {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}[_HINT[config["precision"]]]
        if want not in actual:
            raise RuntimeError(f"OpenVINO compiled {config['precision']} as {actual}: refusing to mislabel the result")
        device_info = None
        if device == "GPU":  # which GPU, in OpenVINO's words (not testable here: OpenVINO finds no GPU on these VMs)
            name = str(core.get_property("GPU", "FULL_DEVICE_NAME"))
            device_info = {"name": name, "type": str(core.get_property("GPU", "DEVICE_TYPE")),
                           "software": is_software_gpu(name)}
        return _OvSession(compiled.create_infer_request(), [i["name"] for i in config["inputs"]], device_info,
                          (core, device, props))


# Runs of the profiled model before the profiled ones (its first runs are slow).
PROFILE_WARMUP = 3


class _OvSession:
    def __init__(self, request: Any, names: list[str], device: dict[str, Any] | None = None,
                 compile_args: tuple[Any, str, dict[str, Any]] | None = None) -> None:
        self._req, self._names, self._device = request, names, device
        self._compile_args = compile_args

    def profile(self, prepared: Any, iterations: int, config: dict[str, Any]) -> dict[str, Any]:
        """The model compiled a second time with the same properties and PERF_COUNT on (the timed one never counts),
        PROFILE_WARMUP runs, then `iterations` runs, each followed by get_profiling_info(); the executed nodes'
        real_time averaged. The runtime model's `originalLayersNames` says which model nodes each node absorbed."""
        assert self._compile_args is not None
        core, device, props = self._compile_args
        compiled = core.compile_model(config["model"], device, {**props, "PERF_COUNT": True})
        request = compiled.create_infer_request()
        for _ in range(PROFILE_WARMUP):
            request.infer(prepared)
        totals: dict[str, float] = {}
        first: dict[str, Any] = {}
        walls = []  # each profiled inference's wall time (get_profiling_info outside it)
        for _ in range(iterations):
            t0 = time.perf_counter()
            request.infer(prepared)
            walls.append(time.perf_counter() - t0)
            for info in request.get_profiling_info():
                if info.status == info.Status.EXECUTED:
                    totals[info.node_name] = totals.get(info.node_name, 0.0) + info.real_time.total_seconds()
                    first.setdefault(info.node_name, info)
        originals: dict[str, list[str]] = {}
        for op in compiled.get_runtime_model().get_ordered_ops():
            rt = op.get_rt_info()
            if "originalLayersNames" in rt:
                originals[op.get_friendly_name()] = [n for n in rt["originalLayersNames"].astype(str).split(",") if n]
        ops = profile_ops([(name, first[name].node_type, first[name].exec_type, total / iterations)
                           for name, total in totals.items()], originals, config["model"])
        return {"ops": ops, "iterations": iterations, "wall_s": statistics.median(walls),
                "source": "openvino PERF_COUNT get_profiling_info (a second compiled model, same properties, after "
                          "timing)",
                "node_link": "exact",
                "notes": ["the model nodes each OpenVINO node absorbed come from its runtime model's "
                          "originalLayersNames; nodes OpenVINO added (layout reorders) have no model node"]}

    def device(self) -> dict[str, Any] | None:
        return self._device

    def prepare(self, feeds: dict[str, Any]) -> Any:
        import numpy as np

        return {i: np.ascontiguousarray(feeds[n]) for i, n in enumerate(self._names)}

    def run(self, prepared: Any) -> Any:
        self._req.infer(prepared)
        return None

    def outputs(self, raw: Any) -> list[Any]:
        return [t.data.copy() for t in self._req.output_tensors]


def profile_ops(counted: list[tuple[str, str, str, float]], originals: dict[str, list[str]],
                model: str | None) -> list[dict[str, Any]]:
    """OpenVINO's executed nodes — (name, node type, exec type, seconds per iteration) — as profile ops: the model
    node (the first original layer that is one, else the name before OpenVINO's `/WithoutBiases`-style suffix),
    the model nodes it absorbed, and for the vocabulary the model node's own type (OpenVINO's `Subgraph` and `Reduce`
    say little) and whether its convolution is depthwise."""
    graph: dict[str, Any] = {}
    if model is not None and str(model).endswith(".onnx"):
        from devicelab.opprof import onnxgraph

        nodes = onnxgraph.read(model)
        # OpenVINO names a node after the model node or after the tensor it computes
        graph = {**{o: n for n in nodes for o in n.outputs}, **{n.name: n for n in nodes}}
    ops = []
    for name, node_type, exec_type, s in counted:
        in_model = list(dict.fromkeys(graph[n].name for n in originals.get(name, []) if n in graph))
        base = name.split("/")[0]
        node = in_model[0] if in_model else (graph[base].name if base in graph else None)
        fused = list(dict.fromkeys([node, *in_model])) if node and len(set(in_model) - {node}) else []
        types = [graph[n].op_type for n in in_model or ([node] if node else [])]
        # The absorbed node that names the work: a convolution or product over the activations after it.
        original = next((t for t in types if t not in ("Clip", "Relu", "QuantizeLinear", "DequantizeLinear", "Add")),
                        types[0] if types else None)
        depthwise = any(graph[n].depthwise for n in in_model) or "_dw" in exec_type
        ops.append({"name": name, "type": node_type, "s": s, "node": node, "fused": [str(n) for n in fused if n],
                    "hint": {"depthwise": depthwise, **({"original_type": original} if original else {})},
                    "extra": {"exec_type": exec_type}})
    return ops


ENGINE = OpenVinoEngine()
