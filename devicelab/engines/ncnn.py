"""ncnn (pip ncnn), CPU. ONNX reaches ncnn's .param/.bin through the pnnx binary (pip install --no-deps pnnx:
its dependencies pull a CUDA torch of several GB, and the binary needs none of them). int8 models are written
by devicelab.engines.ncnn_int8 (ncnn2table + ncnn2int8 in numpy: neither tool ships in the wheel or sdist)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from devicelab.engines.base import (Engine, PreparedModel, Session, SourceModel, UnsupportedError, has_library,
                                    is_software_gpu)


def pnnx_binary() -> Path | None:
    spec = importlib.util.find_spec("pnnx")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "pnnx"
    return path if path.is_file() else None


def convert_onnx(onnx_path: Path, sha256: str, shapes: list[list[int]], cache_dir: Path) -> tuple[Path, Path]:
    """ONNX → ncnn (.param, .bin) with fp32 weights, cached by the source's content hash and input shapes.

    pnnx writes fp16 weights unless told `fp16=0`; devicelab converts in fp32 and lets the runtime switches
    decide the precision, so one converted file serves fp32, fp16 and bf16.
    """
    key = sha256[:16] + "-" + "_".join("x".join(map(str, s)) for s in shapes)
    final = cache_dir / key
    param, weights = final / "model.ncnn.param", final / "model.ncnn.bin"
    if param.is_file() and weights.is_file():
        return param, weights
    binary = pnnx_binary()
    if binary is None:
        raise RuntimeError("the pnnx converter is not installed (pip install --no-deps pnnx)")
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".convert-") as tmp:
        src = Path(tmp) / "model.onnx"
        os.symlink(onnx_path.resolve(), src)
        shape_arg = ",".join("[" + ",".join(map(str, s)) + "]" for s in shapes)
        p = subprocess.run([str(binary), src.name, f"inputshape={shape_arg}", "fp16=0"], cwd=tmp,
                           capture_output=True, text=True, timeout=600)
        out_param, out_bin = Path(tmp) / "model.ncnn.param", Path(tmp) / "model.ncnn.bin"
        if p.returncode != 0 or not out_param.is_file():
            tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
            raise RuntimeError(f"pnnx exited with {p.returncode}: {' | '.join(tail)}")
        staged = Path(tmp) / "out"
        staged.mkdir()
        shutil.move(out_param, staged / param.name)
        shutil.move(out_bin, staged / weights.name)
        try:
            os.rename(staged, final)  # atomic: a concurrent or interrupted conversion never leaves half a model
        except OSError:
            if not param.is_file():
                raise
    return param, weights


class NcnnEngine(Engine):
    name = "ncnn"
    package = "ncnn"
    module = "ncnn"
    formats = ("onnx",)  # converted to .param/.bin on the way
    precisions = ("fp32", "fp16", "bf16", "int8")
    backends = ("cpu", "vulkan")
    device_kinds = ("host",)

    def probe_host(self, precision: str, backend: str) -> str | None:
        if backend == "vulkan" and not has_library("vulkan"):
            return "no Vulkan loader (libvulkan) on this host"
        return None

    def availability(self) -> tuple[bool, str | None]:
        ok, reason = super().availability()
        if ok and pnnx_binary() is None:
            return False, "the pnnx converter is not installed (pip install --no-deps pnnx)"
        return ok, reason

    def prepare(self, model: SourceModel, precision: str, cache_dir: Path) -> PreparedModel:
        param, weights = convert_onnx(model.path, model.sha256, model.shapes, cache_dir)
        notes: list[str] = []
        if precision == "int8":
            from devicelab.engines.ncnn_int8 import INT8_NOTE, int8_model  # the controller only, never the runner

            param, weights = int8_model(model, param, weights)
            notes.append(INT8_NOTE)
        if precision == "fp16":
            notes.append("fp16 storage and arithmetic switches on; ncnn uses fp16 arithmetic only where the CPU has it")
        return PreparedModel(param, tuple(notes), {"weights": str(weights)})

    def open_session(self, config: dict[str, Any]) -> Session:
        import ncnn

        net = ncnn.Net()
        opt = net.opt
        precision = config["precision"]
        # Set before load: ncnn turns fp16 (and int8) on by default; fp32 must mean every switch off. int8 turns on
        # int8 inference alone (fp16/bf16 stay off), so only the quantized layers differ from fp32; the other int8
        # switches are Vulkan storage options, off as in dlbench's backend.
        fp16, bf16, int8 = precision == "fp16", precision == "bf16", precision == "int8"
        opt.num_threads = int(config["threads"])
        opt.use_vulkan_compute = config.get("backend", "cpu") == "vulkan"
        opt.use_fp16_storage = opt.use_fp16_packed = opt.use_fp16_arithmetic = fp16
        opt.use_bf16_storage = opt.use_bf16_packed = bf16
        opt.use_int8_inference = int8
        opt.use_int8_storage = opt.use_int8_packed = opt.use_int8_arithmetic = False
        device = None
        if opt.use_vulkan_compute:
            # Without a Vulkan device ncnn would quietly run on its CPU path: that is not a Vulkan result.
            if ncnn.get_gpu_count() < 1:
                raise UnsupportedError("ncnn finds no Vulkan device on this host (a Vulkan loader without a driver)")
            info = ncnn.get_gpu_info(ncnn.get_default_gpu_index())
            name, kind = info.device_name(), int(info.type())
            kinds = {0: "discrete", 1: "integrated", 2: "virtual", 3: "cpu"}
            device = {"name": name, "type": kinds.get(kind, str(kind)),
                      "software": kind == 3 or is_software_gpu(name)}
        if net.load_param(config["model"]) != 0:
            raise RuntimeError(f"ncnn could not load {config['model']}")
        if net.load_model(config["options"]["weights"]) != 0:
            raise RuntimeError(f"ncnn could not load {config['options']['weights']}")
        return _NcnnSession(net, ncnn, [i["name"] for i in config["inputs"]], device)


class _NcnnSession:
    def __init__(self, net: Any, ncnn: Any, input_names: list[str], device: dict[str, Any] | None) -> None:
        self._net, self._ncnn = net, ncnn
        self._names = input_names
        self._device = device

    def device(self) -> dict[str, Any] | None:
        return self._device

    def prepare(self, feeds: dict[str, Any]) -> Any:
        import numpy as np

        # pnnx names blobs in0, in1, ... in graph order; one image of a batch is a (c, h, w) Mat. The arrays
        # are kept next to the Mats, which borrow their memory.
        arrays = [np.ascontiguousarray(feeds[n][0] if feeds[n].ndim == 4 else feeds[n]) for n in self._names]
        return arrays, [self._ncnn.Mat(a) for a in arrays]

    def run(self, prepared: Any) -> Any:
        ex = self._net.create_extractor()
        for i, mat in enumerate(prepared[1]):
            ex.input(f"in{i}", mat)
        ret, out = ex.extract("out0")
        if ret != 0:
            raise RuntimeError(f"ncnn extract failed with {ret}")
        return out

    def outputs(self, raw: Any) -> list[Any]:
        import numpy as np

        return [np.array(raw).reshape(1, -1)]

    def profile(self, prepared: Any, iterations: int, config: dict[str, Any]) -> dict[str, Any]:
        """The pip wheel has no per-layer profiler (that needs a build with NCNN_BENCHMARK, which dlbench's ncnn
        reports through its `op` events), but its Extractor computes a blob only when asked and keeps what it
        computed: asking for each layer's output in the network's order, timing each ask, gives each layer's time.
        Light mode is off for that (every intermediate blob is kept), and each layer's time includes one Python
        call; the timed iterations asked for the output alone."""
        import statistics
        import time

        layers = [layer for layer in self._net.layers() if layer.type != "Input" and len(layer.tops)]
        clock = time.perf_counter

        def once(totals: dict[int, float] | None) -> None:
            ex = self._net.create_extractor()
            ex.set_light_mode(False)
            for i, mat in enumerate(prepared[1]):
                ex.input(f"in{i}", mat)
            for k, layer in enumerate(layers):
                t0 = clock()
                ret, _ = ex.extract(int(layer.tops[0]), 1)  # 1: the blob as computed, no unpacking or conversion
                if totals is not None:
                    totals[k] = totals.get(k, 0.0) + clock() - t0
                if ret != 0:
                    raise RuntimeError(f"ncnn extract of layer {layer.name} failed with {ret}")

        for _ in range(PROFILE_WARMUP):
            once(None)
        totals: dict[int, float] = {}
        walls = []
        for _ in range(iterations):
            t0 = clock()
            once(totals)
            walls.append(clock() - t0)
        ops = [{"name": layer.name, "type": layer.type, "s": totals.get(k, 0.0) / iterations}
               for k, layer in enumerate(layers)]
        return {"ops": ops, "iterations": iterations, "wall_s": statistics.median(walls),
                "source": "ncnn pip wheel: each layer's output extracted in order, timed (a second extractor per "
                          "iteration, light mode off, after timing)",
                "node_link": "best-effort",
                "notes": ["the ncnn wheel has no per-layer profiler: each layer is timed as the extract of its output "
                          "blob in network order (light mode off, one Python call per layer); dlbench times its ncnn "
                          "layers the same way in C++",
                          "pnnx renames ncnn's layers (convclip_0 for a model's Conv+Clip): each layer is paired with "
                          "the model's nodes of the same shared type in order, best-effort"]}


# Iterations of the profiling extractor before the profiled ones.
PROFILE_WARMUP = 3


ENGINE = NcnnEngine()
