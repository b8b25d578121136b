"""Engine registry. Each engine is one module exposing ENGINE; modules load lazily so that listing
engines (or running one in a runner) never imports the others."""

from __future__ import annotations

import importlib

from devicelab.engines.base import Engine, EngineInfo, InputSpec, PreparedModel, SourceModel, make_inputs
from devicelab.errors import UnknownNameError

# name -> module; registered explicitly (docs/architecture.md): a new engine is one file and one line here.
ENGINE_MODULES: dict[str, str] = {
    "onnxruntime": "devicelab.engines.onnxruntime",
    "ncnn": "devicelab.engines.ncnn",
    "mnn": "devicelab.engines.mnn",
    "litert": "devicelab.engines.litert",
    "openvino": "devicelab.engines.openvino",
    "dlbench": "devicelab.engines.dlbench",
    "protocol": "devicelab.engines.protocol",
    "llamacpp": "devicelab.engines.llamacpp",
    "ortgenai": "devicelab.engines.ortgenai",
    # the engines' own benchmark binaries, driven as they are (the suite names the binary: options.binary)
    "tool:benchncnn": "devicelab.engines.tool_benchncnn",
    "tool:benchmark_model": "devicelab.engines.tool_benchmark_model",
    "tool:mnn-benchmark": "devicelab.engines.tool_mnn_benchmark",
    "tool:onnxruntime_perf_test": "devicelab.engines.tool_onnxruntime_perf_test",
    "tool:llama-bench": "devicelab.engines.tool_llama_bench",
}


def engine_names() -> list[str]:
    return list(ENGINE_MODULES)


def get_engine(name: str) -> Engine:
    if name not in ENGINE_MODULES:
        raise UnknownNameError("engine", name, ENGINE_MODULES)
    return importlib.import_module(ENGINE_MODULES[name]).ENGINE


__all__ = ["Engine", "EngineInfo", "InputSpec", "PreparedModel", "SourceModel", "make_inputs", "ENGINE_MODULES",
           "engine_names", "get_engine"]
