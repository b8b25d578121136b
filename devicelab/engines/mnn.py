"""MNN (pip MNN), CPU; OpenCL/Vulkan where the MNN build has those backends (the pip wheel does not: MNN then runs on
its CPU and says so, and devicelab makes that config `unsupported` with MNN's words).

Conversion and quantization go through MNN's C extension `_tools` in a subprocess, NEVER through the
`mnn`/`mnnconvert`/`mnnquant` console scripts: those import a module that pip-installs a package and uploads
usage logs with /etc/machine-id. PIP_NO_INDEX=1 is set as a guard all the same.

MNN's quantizer calibrates from image files only, so the calibration set is written as binary PPM images
(which its stb_image loader reads) with mean/normal chosen so the decoded pixels reproduce the seeded
N(0, 1) inputs, clipped at ±3σ.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from devicelab.engines.base import (Engine, PreparedModel, Session, SourceModel, UnsupportedError, calibration_inputs,
                                    calibration_key, has_library, with_native_output)
from devicelab.paths import cached_file

_PIXEL_SCALE = 42.5  # 255 / 6: ±3σ of a standard normal spans the 8-bit range

# The entry points of MNN's C extension (_tools.mnnconvert, _tools.mnnquant), never the console scripts.
_TOOLS_CONVERT, _TOOLS_QUANT = "mnnconvert", "mnnquant"  # names of _tools functions

# The child runs only MNN's C entry points; its return value is not an exit status, so success is judged
# by the output file and the converter's own message.
_TOOL = "import sys, _tools\nfn = getattr(_tools, sys.argv[1])\nfn(sys.argv[1:])\n"


def _run_tool(args: list[str], cwd: str) -> str:
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    p = subprocess.run([sys.executable, "-c", _TOOL, *args], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=900)
    return (p.stdout or "") + (p.stderr or "")


def _check(out: Path, log: str) -> None:
    if not out.is_file() or out.stat().st_size == 0:
        lines = [line for line in log.strip().splitlines() if line.strip()][-3:]
        raise RuntimeError("MNN converter produced no model: " + " | ".join(lines))


def convert(model: SourceModel, cache_dir: Path, fp16_weights: bool = False) -> Path:
    def build(out: Path) -> None:
        args = [_TOOLS_CONVERT, "-f", "ONNX", "--modelFile", str(model.path.resolve()), "--MNNModel", str(out),
                "--bizCode", "devicelab"]
        with tempfile.TemporaryDirectory() as tmp:
            _check(out, _run_tool(args + (["--fp16"] if fp16_weights else []), tmp))

    return cached_file(cache_dir, f"{model.sha256[:16]}{'-fp16w' if fp16_weights else ''}.mnn", build)


def quantize(model: SourceModel, cache_dir: Path) -> Path:
    import numpy as np

    if len(model.inputs) != 1 or len(model.shapes[0]) != 4 or model.shapes[0][1] not in (1, 3):
        raise RuntimeError("MNN's quantizer calibrates from images: it needs one NCHW input with 1 or 3 channels")
    float_model = convert(model, cache_dir)
    _, channels, height, width = model.shapes[0]

    def build(out: Path) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            _check(out, calibrate(out, tmp))

    def calibrate(out: Path, tmp: str) -> str:
        images = Path(tmp) / "calibration"
        images.mkdir()
        name = model.inputs[0]["name"]
        for i, sample in enumerate(calibration_inputs(model)):
            chw = sample[name][0]
            pixels = np.clip(np.rint(chw * _PIXEL_SCALE + 127.5), 0, 255).astype(np.uint8).transpose(1, 2, 0)
            if channels == 1:
                pixels = np.repeat(pixels, 3, axis=2)
            (images / f"{i:04d}.ppm").write_bytes(f"P6\n{width} {height}\n255\n".encode() + pixels.tobytes())
        config = {"format": "RGB" if channels == 3 else "GRAY", "mean": [127.5] * 3,
                  "normal": [1.0 / _PIXEL_SCALE] * 3, "width": width, "height": height, "path": str(images),
                  "used_image_num": len(list(images.iterdir())), "feature_quantize_method": "KL",
                  "weight_quantize_method": "MAX_ABS"}
        (Path(tmp) / "quant.json").write_text(json.dumps(config))
        return _run_tool([_TOOLS_QUANT, str(float_model), str(out), str(Path(tmp) / "quant.json")], tmp)

    return cached_file(cache_dir, f"{model.sha256[:16]}-int8-{calibration_key(model)}.mnn", build)


# MNN's precision modes, as its Python runtime manager spells them.
_PRECISION = {"fp32": "high", "fp16": "low", "bf16": "Low_BF16", "int8": "high"}
_BACKEND = {"cpu": "CPU", "opencl": "OPENCL", "vulkan": "VULKAN"}


def _fallback_line(text: str) -> str | None:
    """MNN's own word that a backend is missing: "Can't Find type=7 backend, use 0 instead"."""
    return next((line.strip() for line in text.splitlines() if "Can't Find type=" in line), None)


@functools.cache
def _backend_missing(backend: str) -> str | None:
    """Why this MNN build cannot run `backend`, asked of MNN itself in a subprocess (the pip wheel carries the backend
    names but not the GPU backends: it falls back to the CPU and says so), or None."""
    script = ("import MNN, sys; MNN.nn.create_runtime_manager(({'backend': sys.argv[1], 'numThread': 1, "
              "'precision': 'normal'},))")
    try:
        p = subprocess.run([sys.executable, "-c", script, _BACKEND[backend]], capture_output=True, text=True,
                           timeout=60, env={**os.environ, "PIP_NO_INDEX": "1"})
    except (OSError, subprocess.SubprocessError) as e:
        return f"MNN could not be asked about its {backend} backend: {e}"
    line = _fallback_line(p.stdout + p.stderr)
    return f"this MNN build has no {backend} backend (MNN: {line})" if line else None


class MnnEngine(Engine):
    name = "mnn"
    package = "MNN"
    module = "MNN"
    formats = ("onnx",)
    precisions = ("fp32", "fp16", "bf16", "int8")
    backends = ("cpu", "opencl", "vulkan")
    device_kinds = ("host",)

    def probe_host(self, precision: str, backend: str) -> str | None:
        if backend == "opencl" and not has_library("OpenCL"):
            return "no OpenCL ICD loader (libOpenCL) on this host"
        if backend == "vulkan" and not has_library("vulkan"):
            return "no Vulkan loader (libvulkan) on this host"
        if backend != "cpu":
            return _backend_missing(backend)
        return None

    def prepare(self, model: SourceModel, precision: str, cache_dir: Path) -> PreparedModel:
        if precision == "int8":
            return PreparedModel(quantize(model, cache_dir), ("MNN quantizer: KL activations, MAX_ABS weights",))
        notes = {"fp16": ("precision 'low': fp16 arithmetic where the CPU has it",),
                 "bf16": ("precision 'Low_BF16': bf16 where this MNN build and CPU support it",)}.get(precision, ())
        return PreparedModel(convert(model, cache_dir), notes)

    def open_session(self, config: dict[str, Any]) -> Session:
        import MNN

        rt, said = with_native_output(lambda: MNN.nn.create_runtime_manager((
            {"backend": _BACKEND[config["backend"]], "numThread": int(config["threads"]),
             "precision": _PRECISION[config["precision"]]},)))
        fallback = _fallback_line(said)
        if config["backend"] != "cpu" and fallback:
            # MNN runs on its CPU backend instead and says so; that is not a GPU result.
            raise UnsupportedError(f"this MNN build has no {config['backend']} backend (MNN: {fallback})")
        names = [i["name"] for i in config["inputs"]]
        module = MNN.nn.load_module_from_file(config["model"], names, [], runtime_manager=rt)
        if module is None:
            raise RuntimeError(f"MNN could not load {config['model']}")
        return _MnnSession(MNN, module, config["inputs"], rt)


# Runs of the profiled session before the profiled ones (its first runs allocate).
PROFILE_WARMUP = 3
# MNN's Interpreter session modes (Interpreter.hpp): Debug calls the callbacks around every op.
_SESSION_DEBUG = 0


class _MnnSession:
    def __init__(self, mnn: Any, module: Any, inputs: list[dict[str, Any]], runtime: Any = None) -> None:
        self._mnn, self._module, self._inputs = mnn, module, inputs
        self._runtime = runtime  # the runtime manager the module runs on: kept alive as long as the module

    def profile(self, prepared: Any, iterations: int, config: dict[str, Any]) -> dict[str, Any]:
        """MNN's op callbacks exist only in its Interpreter/Session API (runSessionWithCallBackInfo), while the timed
        iterations ran through the Module API: the profiling pass opens a Session of the same .mnn file, same
        backend, threads and precision, in Debug mode, and times each op between its begin and end callbacks."""
        import statistics
        import time

        import numpy as np

        mnn = self._mnn
        for spec in self._inputs:  # the Session's inputs are copied in as float32 tensors: say so, never convert
            if str(spec.get("dtype", "float32")) != "float32":
                raise UnsupportedError(f"MNN's profiling pass feeds float32 inputs; input {spec['name']!r} is "
                                       f"{spec['dtype']}")
        interpreter = mnn.Interpreter(config["model"])
        interpreter.setSessionMode(_SESSION_DEBUG)
        session = interpreter.createSession({"backend": _BACKEND[config["backend"]], "numThread": int(config["threads"]),
                                             "precision": _PRECISION[config["precision"]]})
        for spec, value in zip(self._inputs, prepared):
            array = np.ascontiguousarray(np.asarray(value.read(), dtype=np.float32).reshape(spec["shape"]))
            interpreter.getSessionInput(session, spec["name"]).copyFrom(
                mnn.Tensor(tuple(spec["shape"]), mnn.Halide_Type_Float, array, mnn.Tensor_DimensionType_Caffe))
        for _ in range(PROFILE_WARMUP):
            interpreter.runSession(session)
        totals: dict[tuple[int, str, str], float] = {}
        clock = time.perf_counter
        started = [0.0]
        seq = [0]

        def begin(tensors: Any, info: Any) -> bool:
            started[0] = clock()
            return True

        def end(tensors: Any, info: Any) -> bool:
            elapsed = clock() - started[0]
            key = (seq[0], info.getName(), info.getType())
            totals[key] = totals.get(key, 0.0) + elapsed
            seq[0] += 1
            return True

        walls = []
        for _ in range(iterations):
            seq[0] = 0
            t0 = clock()
            interpreter.runSessionWithCallBackInfo(session, begin, end)
            walls.append(clock() - t0)
        counted = [(name, kind, total / iterations) for (_, name, kind), total in sorted(totals.items())]
        return {"ops": profile_ops(counted), "iterations": iterations, "wall_s": statistics.median(walls),
                "source": "MNN Session API runSessionWithCallBackInfo (the timed pass used the Module API)",
                "node_link": "exact",
                "notes": ["MNN's op callbacks exist only in its Session API: the profiled pass ran a Session of the "
                          "same .mnn file (Debug mode, same backend, threads and precision), while the timed "
                          "iterations ran through the Module API",
                          "each op's time is measured between MNN's begin and end callbacks (Python), which adds a "
                          "little per op",
                          *(["on a GPU backend the callbacks do not wait for the device: an op's time is its "
                             "submission's"] if config["backend"] != "cpu" else [])]}

    def prepare(self, feeds: dict[str, Any]) -> Any:
        F = self._mnn.expr
        return [F.const(feeds[i["name"]], list(i["shape"]), F.NCHW) for i in self._inputs]

    def run(self, prepared: Any) -> Any:
        outs = self._module.onForward(prepared)
        for o in outs:
            o.read()  # MNN evaluates lazily: reading the output is what runs the graph
        return outs

    def outputs(self, raw: Any) -> list[Any]:
        import numpy as np

        return [np.array(o.read()).reshape(o.shape) for o in raw]


def profile_ops(counted: list[tuple[str, str, float]]) -> list[dict[str, Any]]:
    """MNN's ops — (name, type, seconds per iteration) — as profile ops. MNN keeps the ONNX node names (an int8 op's
    type carries ` [ DT_INT8 ] `; ops MNN adds are named `<node>_raster_<k>`): the controller links them to the ONNX
    model (devicelab.opprof.onnxgraph.link), which this process does not have."""
    return [{"name": name, "type": kind.split("[")[0].strip(), "s": s,
             **({"extra": {"int8": True}} if "INT8" in kind else {})} for name, kind, s in counted]


ENGINE = MnnEngine()
