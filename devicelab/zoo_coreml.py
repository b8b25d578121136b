"""The zoo written as Core ML, straight from the zoo's layer graph (no ONNX converter: coremltools has no ONNX front end).

coremltools builds a model from a MIL program as readily as from PyTorch, so devicelab writes the zoo's graph with its
own weights through the MIL builder, as zoo_tflite writes TFLite: an ML program (`.mlpackage`, deployment target
iOS 16) whose input and output keep the ONNX names and NCHW shapes. Core ML's compute units (CPU, GPU, Neural Engine)
are chosen when the app loads the model, not in the file, so one package per precision serves every `coreml*` backend.

* fp32: compute precision float32 (weights and activations).
* fp16: compute precision float16 — coremltools stores the weights as float16 and casts the float32 input and output
  at the model's edges.
* int8: the fp32 program with its weights quantized by `coremltools.optimize.coreml.linear_quantize_weights`
  (symmetric, per output channel), dequantized by Core ML at load; activations stay float. Quantizing activations too
  (`linear_quantize_activations`) calibrates by running the model, which needs Core ML itself (macOS), so it is not
  done here.

Conversion and the spec's validation run on Linux; a prediction needs Core ML (macOS or the device).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devicelab.zoo import INPUT_NAME, OUTPUT_NAME, Graph

PRECISIONS = ("fp32", "fp16", "int8")
# Bump when the writer changes what it writes: cached packages are named with it, so they are written again.
WRITER_VERSION = 1
NOTES: dict[str, tuple[str, ...]] = {
    "fp16": ("Core ML fp16 compute precision: float16 weights and activations, float32 input and output",),
    "int8": ("int8 weights (symmetric, per output channel) dequantized by Core ML at load; activations stay float",),
}
# ML programs run on iOS 15+; iOS 16 adds the constexpr ops int8 weights are stored in, and one target keeps every
# precision loadable on the same phones.
DEPLOYMENT_TARGET = "iOS16"
INSTALL_HINT = "pip install 'devicelab[coreml]'"


def _ct() -> Any:
    # On Linux coremltools warns at import that Core ML itself (libcoremlpython) is missing: expected, nothing predicts here.
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    try:
        import coremltools as ct
    except ImportError as e:
        raise RuntimeError(f"writing Core ML needs coremltools ({INSTALL_HINT})") from e
    return ct


def to_program(graph: Graph) -> Any:
    """The graph as a MIL program: input named like the ONNX input (NCHW float32), one output named like the ONNX
    output, every weight a const named after its op (`conv_3.weight`, which MIL spells `conv_3_weight`; the ONNX
    initializer is `conv_3.weight:N`), so a package's weights can be matched to the ONNX model's."""
    ct = _ct()
    from coremltools.converters.mil import Builder as mb

    target = getattr(ct.target, DEPLOYMENT_TARGET)

    @mb.program(input_specs=[mb.TensorSpec(shape=tuple(graph.input_shape))], opset_version=target)
    def program(input: Any) -> Any:  # noqa: A002 - MIL names the program's input after this parameter
        values: dict[str, Any] = {INPUT_NAME: input}

        def act(x: Any, kind: str | None, name: str) -> Any:
            if kind is None:
                return x
            if kind == "relu":
                return mb.relu(x=x, name=name)
            if kind == "relu6":
                return mb.relu6(x=x, name=name)
            raise ValueError(kind)

        for op in graph.ops:
            a, out = op.attrs, op.outputs[0]
            x = values[op.inputs[0]]
            # Where an activation follows, the op itself is `<out>_pre` (as in the ONNX graph) and the activation `<out>`.
            pre = out + "_pre" if a.get("act") else out
            if op.kind == "conv":
                p, s = a["pad"], a["stride"]
                y = mb.conv(x=x, weight=mb.const(val=op.arrays["weight"], name=out + ".weight"),
                            bias=mb.const(val=op.arrays["bias"], name=out + ".bias"), strides=[s, s],
                            pad_type="custom", pad=[p, p, p, p], dilations=[1, 1], groups=a["group"], name=pre)
                values[out] = act(y, a.get("act"), out)
            elif op.kind == "add":
                values[out] = act(mb.add(x=x, y=values[op.inputs[1]], name=pre), a.get("act"), out)
            elif op.kind == "maxpool":
                p, s, k = a["pad"], a["stride"], a["k"]
                values[out] = mb.max_pool(x=x, kernel_sizes=[k, k], strides=[s, s], pad_type="custom",
                                          pad=[p, p, p, p], name=out)
            elif op.kind == "gap":
                values[out] = mb.reduce_mean(x=x, axes=[2, 3], keep_dims=False, name=out)
            elif op.kind == "flatten":
                # NCHW is kept throughout, so a reshape flattens in ONNX's C, H, W order.
                values[out] = mb.reshape(x=x, shape=[1, -1], name=out)
            elif op.kind == "gemm":
                values[out] = mb.linear(x=x, weight=mb.const(val=op.arrays["weight"], name=out + ".weight"),
                                        bias=mb.const(val=op.arrays["bias"], name=out + ".bias"), name=out)
            elif op.kind == "concat":
                values[out] = mb.concat(values=[values[i] for i in op.inputs], axis=1, name=out)
            elif op.kind == "shuffle":
                c, hw = a["channels"], a["hw"]
                r = mb.reshape(x=x, shape=[1, 2, c // 2, hw, hw], name=out + "_r")
                t = mb.transpose(x=r, perm=[0, 2, 1, 3, 4], name=out + "_t")
                values[out] = mb.reshape(x=t, shape=[1, c, hw, hw], name=out)
            elif op.kind == "split":
                first, second = mb.split(x=x, split_sizes=[a["half"], a["half"]], axis=1, name=out)
                values[op.outputs[0]], values[op.outputs[1]] = first, second
            else:
                raise ValueError(op.kind)
        return mb.identity(x=values[graph.output], name=OUTPUT_NAME)

    return program


def to_mlmodel(graph: Graph, precision: str) -> Any:
    """The graph as a Core ML ML program (`coremltools.models.MLModel`, not loaded: no Core ML on Linux)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
    ct = _ct()
    # coremltools draws progress bars on stderr for every pass; the controller's output has no place for them.
    with contextlib.redirect_stderr(io.StringIO()):
        model = ct.convert(to_program(graph), convert_to="mlprogram", skip_model_load=True,
                           minimum_deployment_target=getattr(ct.target, DEPLOYMENT_TARGET),
                           compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32)
        if precision == "int8":
            from coremltools.optimize.coreml import (OpLinearQuantizerConfig, OptimizationConfig,
                                                     linear_quantize_weights)

            # weight_threshold 0: every weight is quantized, the small ones too (coremltools skips < 2048 elements
            # by default), so an int8 package holds no float weight tensor.
            config = OptimizationConfig(global_config=OpLinearQuantizerConfig(
                mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=0))
            model = linear_quantize_weights(model, config=config)
    model.short_description = f"devicelab zoo {graph.name} ({precision})"
    return model


def write_package(graph: Graph, precision: str, path: Path) -> Path:
    """Write the graph as `path` (an .mlpackage folder)."""
    to_mlmodel(graph, precision).save(str(path))
    return path


def package_name(source_sha256: str, precision: str) -> str:
    """The cached package's name: by the source ONNX model's content, the precision and the writer's version."""
    return f"{source_sha256[:16]}-{precision}-w{WRITER_VERSION}.mlpackage"


def cached_package(cache_dir: Path, key: str, build: Callable[[Path], None]) -> Path:
    """The cache's package folder named `key`, built once by build(tmp_folder) and renamed into place, so a crash or
    a concurrent build never leaves half a package under the final name (paths.cached_file, for folders)."""
    final = cache_dir / key
    if (final / "Manifest.json").is_file():
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".build-"))
    try:
        built = tmp / final.name
        build(built)
        if not (built / "Manifest.json").is_file():
            raise RuntimeError(f"building {key} produced no package")
        try:
            os.rename(built, final)
        except OSError:
            if not (final / "Manifest.json").is_file():  # not another build finishing first: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def package_files(package: Path) -> list[tuple[str, Path]]:
    """The package's files as (name relative to the package's parent, e.g. `x.mlpackage/Manifest.json`, local path),
    in a stable order: what a transport pushes, file by file, to rebuild the folder on a device."""
    return [(f"{package.name}/{p.relative_to(package).as_posix()}", p)
            for p in sorted(package.rglob("*")) if p.is_file()]
