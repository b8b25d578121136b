"""One op vocabulary across engines: every engine's own op name → a shared type (pure; no engine is imported).

Each engine names its ops its own way (ONNX Runtime `FusedConv`, OpenVINO `Convolution` with an exec type, MNN
`ConvolutionDepthwise`, ncnn `ConvolutionDepthWise`, LiteRT `DEPTHWISE_CONV_2D`). A profile keeps that name as
`engine_type` and adds `type`, one of SHARED_TYPES, so one config's ops can be compared with another engine's.
A name no table knows is `Other`: the profile's `mapped` fraction says how much of the time that left unnamed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

SHARED_TYPES: tuple[str, ...] = ("Conv", "DepthwiseConv", "Gemm", "Pool", "Add", "Mul", "Concat", "Reshape",
                                 "Shuffle", "Activation", "Softmax", "Quantize", "Dequantize", "Requantize", "Pad",
                                 "Resize", "Other")
OTHER = "Other"


def _norm(name: str) -> str:
    """Case and separators do not matter: `DEPTHWISE_CONV_2D`, `DepthwiseConv2d` and `depthwise-conv-2d` are one."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


# Names every engine might use (normalized). Engine tables below add or override.
_COMMON: dict[str, str] = {
    # convolutions (int8 variants included: the work is the convolution; its requantize is inside the kernel)
    "conv": "Conv", "conv2d": "Conv", "convolution": "Conv", "fusedconv": "Conv", "qlinearconv": "Conv",
    "convinteger": "Conv", "convint8": "Conv", "convolutionint8": "Conv", "conv1d": "Conv", "conv3d": "Conv",
    "convtranspose": "Conv", "deconvolution": "Conv", "transposeconv": "Conv", "groupconvolution": "Conv",
    "depthwiseconv": "DepthwiseConv", "depthwiseconv2d": "DepthwiseConv", "convolutiondepthwise": "DepthwiseConv",
    "depthwiseconvint8": "DepthwiseConv", "convolutiondepthwiseint8": "DepthwiseConv",
    "deconvolutiondepthwise": "DepthwiseConv",
    # fully connected / matrix products
    "gemm": "Gemm", "fusedgemm": "Gemm", "qgemm": "Gemm", "matmul": "Gemm", "fusedmatmul": "Gemm",
    "matmulinteger": "Gemm", "qlinearmatmul": "Gemm", "innerproduct": "Gemm", "fullyconnected": "Gemm",
    "batchmatmul": "Gemm", "gemv": "Gemm",
    # pooling
    "pool": "Pool", "pooling": "Pool", "maxpool": "Pool", "averagepool": "Pool", "avgpool": "Pool",
    "globalaveragepool": "Pool", "globalmaxpool": "Pool", "qlinearglobalaveragepool": "Pool",
    "qlinearaveragepool": "Pool", "maxpool2d": "Pool", "averagepool2d": "Pool", "mean": "Pool",
    "pooling3d": "Pool", "adaptivepooling": "Pool", "reducemean": "Pool",
    # element-wise
    "add": "Add", "sum": "Add", "qlinearadd": "Add", "eltwise": "Add", "binaryop": "Add", "binary": "Add",
    "sub": "Add", "eltwiseint8": "Add",
    "mul": "Mul", "qlinearmul": "Mul", "multiply": "Mul", "scale": "Mul", "div": "Mul",
    "concat": "Concat", "concatenation": "Concat", "qlinearconcat": "Concat",
    # data movement without arithmetic
    "reshape": "Reshape", "flatten": "Reshape", "squeeze": "Reshape", "unsqueeze": "Reshape",
    "transpose": "Reshape", "permute": "Reshape", "reorder": "Reshape", "reorderinput": "Reshape",
    "reorderoutput": "Reshape", "expanddims": "Reshape",
    "gather": "Reshape", "slice": "Reshape", "split": "Reshape", "stridedslice": "Reshape",
    "copy": "Reshape", "tile": "Reshape", "expand": "Reshape", "crop": "Reshape", "packing": "Reshape",
    "gathernd": "Reshape",
    # Bookkeeping (a graph's inputs and outputs, shapes, constants, identities) and a precision `convert` are not
    # listed: they are `Other` (a convert is typed by the model node it came from, a QuantizeLinear or a
    # DequantizeLinear, when the engine says which: see GENERIC), so they never inflate `mapped` nor hide an int8
    # model's conversions among the reshapes.
    "shufflechannel": "Shuffle", "channelshuffle": "Shuffle", "depthtospace": "Shuffle", "spacetodepth": "Shuffle",
    "pixelshuffle": "Shuffle",
    # activations
    "relu": "Activation", "relu6": "Activation", "clip": "Activation", "sigmoid": "Activation",
    "hardswish": "Activation", "hardsigmoid": "Activation", "tanh": "Activation", "prelu": "Activation",
    "leakyrelu": "Activation", "elu": "Activation", "gelu": "Activation", "swish": "Activation",
    "silu": "Activation", "mish": "Activation", "logistic": "Activation", "quickgelu": "Activation",
    "unaryop": "Activation", "exp": "Activation", "selu": "Activation", "erf": "Activation",
    "softmax": "Softmax", "logsoftmax": "Softmax",
    "quantizelinear": "Quantize", "quantize": "Quantize", "floattoint8": "Quantize", "fakequantize": "Quantize",
    "dynamicquantizelinear": "Quantize",
    "dequantizelinear": "Dequantize", "dequantize": "Dequantize", "int8tofloat": "Dequantize",
    "requantize": "Requantize",
    "pad": "Pad", "padding": "Pad", "mirrorpad": "Pad", "padv2": "Pad",
    "resize": "Resize", "interp": "Resize", "upsample": "Resize", "resizebilinear": "Resize",
    "resizenearestneighbor": "Resize", "interpolate": "Resize",
}

# Per-engine additions: names only that engine uses, or that mean something else there.
ENGINE_TABLES: dict[str, dict[str, str]] = {
    "onnxruntime": {"nhwcmaxpool": "Pool", "qlinearsoftmax": "Softmax", "qlinearleakyrelu": "Activation",
                    "qlinearsigmoid": "Activation", "nhwcconv": "Conv", "qlinearmaxpool": "Pool"},
    "openvino": {
        # OpenVINO's CPU plugin node types (ProfilingInfo.node_type)
        # `Subgraph` (a JIT-fused run of element-wise ops) and `Reduce` are typed by the model node they came from
        "fullyconnected": "Gemm", "fullyconnectedquantizedlegacy": "Gemm", "fullyconnectedquantized": "Gemm",
        "clamp": "Activation", "mvn": "Other", "interpolate": "Resize", "pooling": "Pool",
        "concatenation": "Concat", "reorder": "Reshape", "eltwise": "Add", "math": "Activation",
        "shufflechannels": "Shuffle", "softmax": "Softmax", "softmaxv1": "Softmax", "softmaxv8": "Softmax",
        "fakequantize": "Quantize",
    },
    "mnn": {"convolution": "Conv", "convolutiondepthwise": "DepthwiseConv", "convint8": "Conv",
            "depthwiseconvint8": "DepthwiseConv", "pooling": "Pool", "eltwise": "Add", "binaryop": "Add",
            "relu6": "Activation", "int8tofloat": "Dequantize", "floattoint8": "Quantize", "raster": "Reshape",
            "converttensor": "Reshape", "interp": "Resize", "concat": "Concat",
            "softmax": "Softmax", "innerproduct": "Gemm", "unaryop": "Activation"},
    "ncnn": {"convolution": "Conv", "convolutiondepthwise": "DepthwiseConv", "convolution1d": "Conv",
             "pooling": "Pool", "eltwise": "Add", "binaryop": "Add", "innerproduct": "Gemm", "split": "Reshape",
             "relu": "Activation", "clip": "Activation", "sigmoid": "Activation",
             "hardswish": "Activation", "concat": "Concat", "shufflechannel": "Shuffle", "softmax": "Softmax",
             "padding": "Pad", "interp": "Resize", "dequantize": "Dequantize", "quantize": "Quantize",
             "requantize": "Requantize", "flatten": "Reshape", "reshape": "Reshape", "permute": "Reshape"},
    "litert": {"conv2d": "Conv", "depthwiseconv2d": "DepthwiseConv", "fullyconnected": "Gemm",
               "averagepool2d": "Pool", "maxpool2d": "Pool", "mean": "Pool", "add": "Add", "mul": "Mul",
               "concatenation": "Concat", "reshape": "Reshape", "pad": "Pad", "padv2": "Pad",
               "quantize": "Quantize", "dequantize": "Dequantize", "softmax": "Softmax", "logistic": "Activation",
               "hardswish": "Activation", "relu": "Activation", "relu6": "Activation"},
}


# Engine op names that stand for several model ops: the model node's type says which.
GENERIC = frozenset({"binaryop", "eltwise", "unaryop", "binary", "raster", "convert"})


def classify(engine: str, engine_type: str, hint: Mapping[str, Any] | None = None) -> str:
    """The shared type of one op. `engine` is the family of the engine's names ("onnxruntime", "openvino", "mnn",
    "ncnn", "litert"; anything else uses the common table only). `hint` may carry what the engine knows beside the
    name: `depthwise` (bool) when a convolution's groups equal its channels (ONNX Runtime says so only through the
    weight's shape; OpenVINO through its exec type), `original_type` (the model node's type an engine kept)."""
    hint = hint or {}
    key = _norm(engine_type)
    table = {_norm(k): v for k, v in ENGINE_TABLES.get(engine, {}).items()}
    shared = table.get(key) or _COMMON.get(key)
    if key in GENERIC and hint.get("original_type"):  # "a binary op" says less than the model node's Add or Mul
        shared = _COMMON.get(_norm(str(hint["original_type"]))) or shared
    if shared is None and hint.get("original_type"):
        shared = table.get(_norm(str(hint["original_type"]))) or _COMMON.get(_norm(str(hint["original_type"])))
    if shared is None:
        return OTHER
    if shared == "Conv" and hint.get("depthwise"):
        return "DepthwiseConv"
    return shared


def engine_family(engine: str) -> str:
    """Which name table an engine's op names follow: dlbench's are its library's (ncnn, MNN, OpenVINO), a tool's its
    engine's (`tool:benchmark_model` → litert)."""
    return {"tool:benchmark_model": "litert", "tool:benchncnn": "ncnn", "tool:mnn-benchmark": "mnn",
            "tool:onnxruntime_perf_test": "onnxruntime"}.get(engine, engine)
