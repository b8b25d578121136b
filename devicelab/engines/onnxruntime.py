"""ONNX Runtime (pip onnxruntime), CPU execution provider, reading the zoo's ONNX files as they are."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from devicelab.engines.base import Engine, PreparedModel, Session, SourceModel


class OnnxRuntimeEngine(Engine):
    name = "onnxruntime"
    package = "onnxruntime"
    module = "onnxruntime"
    formats = ("onnx",)
    precisions = ("fp32",)
    backends = ("cpu",)
    device_kinds = ("host",)

    def prepare(self, model: SourceModel, precision: str, cache_dir: Path) -> PreparedModel:
        # fp32 ONNX runs as is; ORT's CPU provider has no lower-precision switch that fp32 must turn off.
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
        sess = ort.InferenceSession(config["model"], so, providers=["CPUExecutionProvider"])
        return _OrtSession(sess)


class _OrtSession:
    def __init__(self, sess: Any) -> None:
        self._sess = sess

    def run(self, feeds: dict[str, Any]) -> list[Any]:
        return self._sess.run(None, feeds)


ENGINE = OnnxRuntimeEngine()
