"""LiteRT (pip ai-edge-litert: TFLite's runtime, no TensorFlow), CPU with its default XNNPACK delegate.

LiteRT reads .tflite only and ships no ONNX converter, so the zoo's models are written as TFLite directly
from the zoo's graph (devicelab/zoo_tflite.py); a user's own ONNX file cannot reach it (unsupported).
fp16 = float16 weights + DEQUANTIZE (TFLite's fp16 format); int8 = full-integer post-training quantization.
Inputs are NHWC: the session transposes once, outside the timed loop.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from devicelab.engines.base import (Engine, PreparedModel, Session, SourceModel, UnsupportedError, calibration_inputs,
                                    calibration_key)
from devicelab.paths import cached_file


class LiteRtEngine(Engine):
    name = "litert"
    package = "ai-edge-litert"
    module = "ai_edge_litert"
    runtime_imports = ("ai_edge_litert.interpreter",)
    formats = ("tflite",)
    precisions = ("fp32", "fp16", "int8")
    backends = ("cpu",)
    device_kinds = ("host",)
    unsupported = {"bf16": "LiteRT's CPU kernels have no bf16 mode"}

    def prepare(self, model: SourceModel, precision: str, cache_dir: Path) -> PreparedModel:
        from devicelab import zoo
        from devicelab.zoo_tflite import quantize_int8, to_tflite

        if not model.zoo:
            raise RuntimeError("LiteRT needs a .tflite model; devicelab writes TFLite for zoo models only")
        key = {"fp32": "fp32", "fp16": "fp16w", "int8": f"int8-{calibration_key(model)}"}[precision]

        def build(out: Path) -> None:
            # Only when the file is not cached: building a trained zoo model's graph trains it.
            graph = zoo.build_graph(model.name)
            if hashlib.sha256(zoo.to_onnx(graph)).hexdigest() != model.sha256:
                raise RuntimeError(f"zoo model {model.name} changed under its cache; rebuild the zoo")
            if precision == "int8":
                nhwc = [[s[i["name"]].transpose(0, 2, 3, 1).copy() for i in model.inputs]
                        for s in calibration_inputs(model)]
                out.write_bytes(quantize_int8(to_tflite(graph), nhwc))
            else:
                out.write_bytes(to_tflite(graph, fp16_weights=precision == "fp16"))

        final = cached_file(cache_dir, f"{model.sha256[:16]}-{key}.tflite", build)
        notes = {"fp16": ("float16 weights dequantized to float32 at load; arithmetic stays fp32 on this CPU",),
                 "int8": ("full-integer int8 (weights and activations), float32 interface",)}.get(precision, ())
        return PreparedModel(final, notes)

    def open_session(self, config: dict[str, Any]) -> Session:
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=config["model"], num_threads=int(config["threads"]))
        interpreter.allocate_tensors()
        return _LiteRtSession(interpreter)


class _LiteRtSession:
    def __init__(self, interpreter: Any) -> None:
        self._it = interpreter
        self._inputs = interpreter.get_input_details()
        self._outputs = interpreter.get_output_details()

    def prepare(self, feeds: dict[str, Any]) -> Any:
        import numpy as np

        # The zoo's TFLite inputs keep the ONNX names; fall back to graph order.
        by_name = {d["name"]: d for d in self._inputs}
        prepared = []
        for i, (name, array) in enumerate(feeds.items()):
            detail = by_name.get(name, self._inputs[i])
            value = array.transpose(0, 2, 3, 1) if array.ndim == 4 else array
            prepared.append((detail["index"], np.ascontiguousarray(value, dtype=detail["dtype"])))
        return prepared

    def run(self, prepared: Any) -> Any:
        for index, value in prepared:
            self._it.set_tensor(index, value)
        self._it.invoke()
        return None

    def outputs(self, raw: Any) -> list[Any]:
        return [self._it.get_tensor(d["index"]).copy() for d in self._outputs]

    def profile(self, prepared: Any, iterations: int, config: dict[str, Any]) -> dict[str, Any]:
        raise UnsupportedError(NO_PROFILER)


# Why a host LiteRT config has no per-op profile (the README names it too).
NO_PROFILER = ("LiteRT's Python API (ai_edge_litert Interpreter) has no op profiler; per-op times come from "
               "tool:benchmark_model --enable_op_profiling=true (phones)")


ENGINE = LiteRtEngine()
