"""The zoo written as TFLite, straight from the zoo's layer graph (no TensorFlow, no ONNX converter).

LiteRT needs .tflite files and ships no converter without TensorFlow, but it does ship the flatbuffers
schema's object API (ai_edge_litert.schema_py_generated) and a serializer, so devicelab writes the same
graph with the same weights in TFLite's NHWC layout. Also here: the fp16 variant (float16 weights followed
by DEQUANTIZE, the layout TFLite's own fp16 quantization produces) and full-int8 post-training quantization
through LiteRT's calibration wrapper.

Padding: ONNX pads symmetrically; TFLite SAME pads the extra row at the bottom/right when stride is 2. Where
they differ an explicit PAD precedes a VALID convolution or pooling, so the numbers match the ONNX model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from devicelab.zoo import INPUT_NAME, OUTPUT_NAME, Graph


def _schema() -> Any:
    from ai_edge_litert import schema_py_generated as fb

    return fb


class _Writer:
    def __init__(self, fp16_weights: bool) -> None:
        self.fb = _schema()
        self.fp16 = fp16_weights
        self.model = self.fb.ModelT()
        self.model.version = 3
        self.model.description = "devicelab zoo"
        self.model.buffers = [self.fb.BufferT()]  # buffer 0: the empty buffer every activation points to
        self.model.operatorCodes = []
        self.sub = self.fb.SubGraphT()
        self.sub.tensors, self.sub.operators = [], []
        self.model.subgraphs = [self.sub]
        self.tensors: dict[str, int] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.nonneg: set[str] = set()  # outputs of ReLU/ReLU6: zero padding is then exact for max pooling
        self.opcodes: dict[int, int] = {}
        self.n = 0

    # ---- tensors ----

    def activation(self, name: str, shape: Sequence[int]) -> int:
        t = self.fb.TensorT()
        t.name, t.shape, t.type, t.buffer = name, list(shape), self.fb.TensorType.FLOAT32, 0
        self.sub.tensors.append(t)
        self.tensors[name] = len(self.sub.tensors) - 1
        self.shapes[name] = tuple(shape)
        return self.tensors[name]

    def constant(self, array: np.ndarray, hint: str, weight: bool = False) -> int:
        """A constant tensor; float weights become float16 + DEQUANTIZE in the fp16 variant."""
        self.n += 1
        name = f"{hint}:{self.n}"
        stored = array.astype(np.float16) if (weight and self.fp16 and array.dtype == np.float32) else array
        buf = self.fb.BufferT()
        buf.data = np.frombuffer(np.ascontiguousarray(stored).tobytes(), dtype=np.uint8)
        self.model.buffers.append(buf)
        t = self.fb.TensorT()
        t.name, t.shape, t.buffer = name, list(array.shape), len(self.model.buffers) - 1
        t.type = {np.dtype(np.float32): self.fb.TensorType.FLOAT32, np.dtype(np.float16): self.fb.TensorType.FLOAT16,
                  np.dtype(np.int32): self.fb.TensorType.INT32, np.dtype(np.int64): self.fb.TensorType.INT64}[stored.dtype]
        self.sub.tensors.append(t)
        index = len(self.sub.tensors) - 1
        if stored.dtype == np.float16:
            deq = self.activation(name + ":f32", array.shape)
            self.op(self.fb.BuiltinOperator.DEQUANTIZE, [index], [deq])
            return deq
        return index

    # ---- operators ----

    def op(self, code: int, inputs: Iterable[int], outputs: Iterable[int], options_type: int = 0,
           options: Any = None) -> None:
        if code not in self.opcodes:
            oc = self.fb.OperatorCodeT()
            oc.builtinCode = code
            oc.deprecatedBuiltinCode = min(code, 127)  # the old int8 field; 127 = "look at builtinCode"
            oc.version = 1
            self.model.operatorCodes.append(oc)
            self.opcodes[code] = len(self.model.operatorCodes) - 1
        o = self.fb.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = self.opcodes[code], list(inputs), list(outputs)
        o.builtinOptionsType, o.builtinOptions = options_type, options
        self.sub.operators.append(o)

    def act_code(self, act: str | None) -> int:
        A = self.fb.ActivationFunctionType
        return {None: A.NONE, "relu": A.RELU, "relu6": A.RELU6}[act]

    def pad_if_needed(self, x: str, k: int, stride: int, pad: int) -> tuple[str, int]:
        """Use SAME where it equals ONNX's symmetric padding, else an explicit PAD then VALID."""
        P = self.fb.Padding
        if pad == 0:
            return x, P.VALID
        _, h, w, _ = self.shapes[x]
        if stride == 1 and pad == k // 2 and k % 2 == 1:
            return x, P.SAME
        n, h, w, c = self.shapes[x]
        out = x + ":pad"
        self.activation(out, (n, h + 2 * pad, w + 2 * pad, c))
        pads = self.constant(np.array([[0, 0], [pad, pad], [pad, pad], [0, 0]], np.int32), "pads")
        self.op(self.fb.BuiltinOperator.PAD, [self.tensors[x], pads], [self.tensors[out]],
                self.fb.BuiltinOptions.PadOptions, self.fb.PadOptionsT())
        if x in self.nonneg:
            self.nonneg.add(out)
        return out, P.VALID


def _conv_out(size: int, k: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - k) // stride + 1


def to_tflite(graph: Graph, fp16_weights: bool = False) -> bytes:
    """The graph as a .tflite flatbuffer: NHWC input named like the ONNX input, (1, classes) output."""
    from ai_edge_litert.tools import flatbuffer_utils

    w = _Writer(fp16_weights)
    fb = w.fb
    B, O = fb.BuiltinOperator, fb.BuiltinOptions
    n, c, h, wd = graph.input_shape
    w.activation(INPUT_NAME, (n, h, wd, c))
    for op in graph.ops:
        a, out = op.attrs, op.outputs[0]
        x = op.inputs[0]
        if op.kind == "conv":
            weight, bias = op.arrays["weight"], op.arrays["bias"]
            cout, cin_g, k, _ = weight.shape
            _, ih, iw, cin = w.shapes[x]
            src, padding = w.pad_if_needed(x, k, a["stride"], a["pad"])
            oh, ow = _conv_out(ih, k, a["stride"], a["pad"]), _conv_out(iw, k, a["stride"], a["pad"])
            w.activation(out, (1, oh, ow, cout))
            depthwise = a["group"] == cin and cin_g == 1 and a["group"] > 1
            if depthwise:
                kernel = w.constant(weight.transpose(1, 2, 3, 0).copy(), "dw_weight", weight=True)  # 1,kh,kw,C
                opts = fb.DepthwiseConv2DOptionsT()
                opts.depthMultiplier = cout // cin
                code, otype = B.DEPTHWISE_CONV_2D, O.DepthwiseConv2DOptions
            elif a["group"] == 1:
                kernel = w.constant(weight.transpose(0, 2, 3, 1).copy(), "weight", weight=True)  # O,kh,kw,I
                opts = fb.Conv2DOptionsT()
                code, otype = B.CONV_2D, O.Conv2DOptions
            else:
                raise ValueError("grouped (non-depthwise) convolution is not in the zoo")
            opts.padding, opts.strideW, opts.strideH = padding, a["stride"], a["stride"]
            opts.fusedActivationFunction = w.act_code(a.get("act"))
            w.op(code, [w.tensors[src], kernel, w.constant(bias, "bias", weight=True)], [w.tensors[out]], otype, opts)
        elif op.kind == "add":
            w.activation(out, w.shapes[x])
            opts = fb.AddOptionsT()
            opts.fusedActivationFunction = w.act_code(a.get("act"))
            w.op(B.ADD, [w.tensors[i] for i in op.inputs], [w.tensors[out]], O.AddOptions, opts)
        elif op.kind == "maxpool":
            if a["pad"] and x not in w.nonneg:
                raise ValueError("zero padding before max pooling is exact only after a ReLU")
            _, ih, iw, ch = w.shapes[x]
            src, padding = w.pad_if_needed(x, a["k"], a["stride"], a["pad"])
            w.activation(out, (1, _conv_out(ih, a["k"], a["stride"], a["pad"]),
                               _conv_out(iw, a["k"], a["stride"], a["pad"]), ch))
            opts = fb.Pool2DOptionsT()
            opts.padding, opts.strideW, opts.strideH = padding, a["stride"], a["stride"]
            opts.filterWidth = opts.filterHeight = a["k"]
            w.op(B.MAX_POOL_2D, [w.tensors[src]], [w.tensors[out]], O.Pool2DOptions, opts)
        elif op.kind == "gap":
            ch = w.shapes[x][3]
            w.activation(out, (1, ch))
            opts = fb.ReducerOptionsT()
            opts.keepDims = False
            w.op(B.MEAN, [w.tensors[x], w.constant(np.array([1, 2], np.int32), "axes")], [w.tensors[out]],
                 O.ReducerOptions, opts)
        elif op.kind == "flatten":
            # ONNX flattens NCHW in C, H, W order; TFLite holds NHWC, so transpose back to NCHW before the reshape and
            # the fully connected weights stay as trained.
            _, fh, fw, fc = w.shapes[x]
            nchw = out + ":nchw"
            w.activation(nchw, (1, fc, fh, fw))
            w.op(B.TRANSPOSE, [w.tensors[x], w.constant(np.array([0, 3, 1, 2], np.int32), "perm")],
                 [w.tensors[nchw]], O.TransposeOptions, fb.TransposeOptionsT())
            w.activation(out, (1, fc * fh * fw))
            opts = fb.ReshapeOptionsT()
            opts.newShape = [1, fc * fh * fw]
            w.op(B.RESHAPE, [w.tensors[nchw], w.constant(np.array([1, fc * fh * fw], np.int32), "shape")],
                 [w.tensors[out]], O.ReshapeOptions, opts)
        elif op.kind == "gemm":
            weight, bias = op.arrays["weight"], op.arrays["bias"]
            w.activation(out, (1, weight.shape[0]))
            opts = fb.FullyConnectedOptionsT()
            w.op(B.FULLY_CONNECTED, [w.tensors[x], w.constant(weight, "fc_weight", weight=True),
                                     w.constant(bias, "fc_bias", weight=True)],
                 [w.tensors[out]], O.FullyConnectedOptions, opts)
        elif op.kind == "concat":
            shapes = [w.shapes[i] for i in op.inputs]
            w.activation(out, (*shapes[0][:3], sum(s[3] for s in shapes)))
            opts = fb.ConcatenationOptionsT()
            opts.axis = 3
            w.op(B.CONCATENATION, [w.tensors[i] for i in op.inputs], [w.tensors[out]], O.ConcatenationOptions, opts)
        elif op.kind == "shuffle":
            ch, hw = a["channels"], a["hw"]
            steps = [(out + ":r", (1, hw, hw, 2, ch // 2)), (out + ":t", (1, hw, hw, ch // 2, 2)), (out, (1, hw, hw, ch))]
            for name, shape in steps:
                w.activation(name, shape)
            for src, (name, shape) in zip([x, steps[0][0], steps[1][0]], steps):
                if name.endswith(":t"):
                    w.op(B.TRANSPOSE, [w.tensors[src], w.constant(np.array([0, 1, 2, 4, 3], np.int32), "perm")],
                         [w.tensors[name]], O.TransposeOptions, fb.TransposeOptionsT())
                else:
                    opts = fb.ReshapeOptionsT()
                    opts.newShape = list(shape)
                    w.op(B.RESHAPE, [w.tensors[src], w.constant(np.array(shape, np.int32), "shape")],
                         [w.tensors[name]], O.ReshapeOptions, opts)
        elif op.kind == "split":
            shape = w.shapes[x]
            for name in op.outputs:
                w.activation(name, (*shape[:3], a["half"]))
            opts = fb.SplitOptionsT()
            opts.numSplits = 2
            w.op(B.SPLIT, [w.constant(np.array(3, np.int32), "axis"), w.tensors[x]],
                 [w.tensors[name] for name in op.outputs], O.SplitOptions, opts)
        else:
            raise ValueError(op.kind)
        if a.get("act") in ("relu", "relu6"):
            w.nonneg.update(op.outputs)
    # The output keeps the ONNX name so both formats are read the same way.
    final = w.tensors[graph.output]
    w.sub.tensors[final].name = OUTPUT_NAME
    w.sub.inputs, w.sub.outputs = [w.tensors[INPUT_NAME]], [final]
    w.sub.name = graph.name
    return bytes(flatbuffer_utils.convert_object_to_bytearray(w.model))


def quantize_int8(model: bytes, calibration: Iterable[list[np.ndarray]]) -> bytes:
    """Full-integer post-training quantization (int8 weights and activations, float interface), through
    LiteRT's calibration wrapper: per-channel weights, int32 biases, no float fallback."""
    from ai_edge_litert import _pywrap_tensorflow_lite_calibration_wrapper as calibration_wrapper

    keep = bytes(model)  # the wrapper does not keep the model bytes alive: hold a reference until done
    calibrator = calibration_wrapper.CalibrationWrapper(keep, [], [])
    prepared = False
    for sample in calibration:
        if not prepared:
            calibrator.Prepare([list(s.shape) for s in sample])
            prepared = True
        calibrator.FeedTensor(sample)
    if not prepared:
        raise ValueError("calibration needs at least one sample")
    num: Callable[[Any], int] = lambda t: np.dtype(t).num
    # (input type, output type, allow float fallback, activations type, bias type, disable per-channel,
    #  disable per-channel for dense layers): the order of the wrapper's QuantizeModel overload.
    quantized = calibrator.QuantizeModel(num(np.float32), num(np.float32), False, num(np.int8), num(np.int32),
                                         False, False)
    return bytes(quantized)
