"""ONNX Runtime (pip onnxruntime), CPU execution provider.

fp32 runs the ONNX file as is; fp16 converts weights and arithmetic to float16 (float32 at the model's inputs
and outputs); int8 is static QDQ quantization, per-channel, calibrated on a deterministic set. Not
quantize_dynamic: on CNNs it makes ConvInteger graphs several times slower than fp32.
"""

from __future__ import annotations

import platform
import tempfile
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
    fork_caveat = ("peak memory: ONNX Runtime's peak RSS depends on the heap's history (glibc's dynamic mmap "
                   "threshold), so a zygote's child, whose imports ran in another order, can peak a few % away from a "
                   "fresh process (the fork itself moves it < 0.1 %); for memory series across runs before the "
                   "zygote, run it with options: {process: exec}")
    package = "onnxruntime"
    module = "onnxruntime"
    formats = ("onnx",)
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
        return _OrtSession(ort.InferenceSession(config["model"], so, providers=["CPUExecutionProvider"]))


class _OrtSession(SimpleSession):
    def __init__(self, sess: Any) -> None:
        self._sess = sess

    def run(self, prepared: Any) -> Any:
        return self._sess.run(None, prepared)


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
