"""OpenVINO (pip openvino), CPU (GPU where the host has one).

Reads ONNX directly. Pitfall: on CPUs with bf16 support the CPU plugin *defaults* to bf16 inference, so
fp32 must set the inference precision hint to f32 explicitly (as ncnn's fp16 default must be switched off).
int8 runs ONNX Runtime's static QDQ model (OpenVINO executes QDQ graphs as u8/s8).
"""

from __future__ import annotations

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
        return _OvSession(compiled.create_infer_request(), [i["name"] for i in config["inputs"]], device_info)


class _OvSession:
    def __init__(self, request: Any, names: list[str], device: dict[str, Any] | None = None) -> None:
        self._req, self._names, self._device = request, names, device

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


ENGINE = OpenVinoEngine()
