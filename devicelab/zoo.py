"""The model zoo: classic mobile CNNs written as ONNX with onnx.helper, no downloads.

Latency does not depend on trained weights, so the classic CNNs' weights are seeded random (He-scaled so
activations stay O(1) through the network, which keeps fp16/int8 variants meaningful). BatchNorm is folded into the
convolutions' biases, as every mobile engine does at conversion time. Their accuracy drift is measured as agreement
with the fp32 reference on the same seeded inputs, never as ImageNet accuracy — and with level logits a top-1 flip
is noise (analysis.accuracy). So the zoo also has one model with trained weights and labels: `digits_cnn`, a small
CNN trained in numpy (zoo_digits) on scikit-learn's handwritten digits when the zoo is built, whose variants are
measured against the labels of the data set's test split (datasets).

Built models are cached by content hash in the data folder; an index maps each recipe (name, zoo
version, seed) to its hash so a second run builds nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from devicelab.errors import DevicelabError, UnknownNameError
from devicelab.paths import sha256_file, write_atomic

# Bump when a builder changes the graph it writes: the index then rebuilds instead of reusing files.
ZOO_VERSION = 2
OPSET = 13
IR_VERSION = 8  # what ONNX Runtime, OpenVINO, MNN and pnnx all read
SEED = 20261122
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


@dataclass(frozen=True)
class ZooEntry:
    name: str
    description: str
    # Published figures (torchvision / the papers; digits_cnn's own design), for the tests and `devicelab models`.
    params: float
    macs: float
    input_shape: tuple[int, int, int, int] = (1, 3, 224, 224)  # NCHW
    classes: int = 1000
    dataset: str | None = None  # a labelled data set (datasets): accuracy is then measured against its labels


ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in (
        ZooEntry("mobilenet_v1", "MobileNet-v1 1.0, 224x224", 4.22e6, 0.569e9),
        ZooEntry("mobilenet_v2", "MobileNet-v2 1.0, 224x224", 3.49e6, 0.301e9),
        ZooEntry("squeezenet1_1", "SqueezeNet 1.1, 224x224", 1.235e6, 0.349e9),
        ZooEntry("shufflenet_v2_x1_0", "ShuffleNet-v2 x1.0, 224x224", 2.27e6, 0.145e9),
        ZooEntry("resnet18", "ResNet-18, 224x224", 11.69e6, 1.814e9),
        # conv3x3 1->16, conv3x3/2 16->32, FC 512->10: 160 + 4640 + 5130 parameters; 9216 + 73728 + 5120 MACs.
        ZooEntry("digits_cnn", "small CNN trained on scikit-learn's digits, 8x8 grey", 9930, 88064,
                 input_shape=(1, 1, 8, 8), classes=10, dataset="digits"),
    )
}


@dataclass(frozen=True)
class ModelFile:
    """A model on disk, identified by content."""

    name: str
    path: Path
    sha256: str
    bytes: int
    source: str  # "zoo" or "user"

    @property
    def formats(self) -> tuple[str, ...]:
        """Formats devicelab can hand engines: zoo models are also written as TFLite (zoo_tflite) and Core ML
        (zoo_coreml). A GGUF file (an LLM) is handed over as it is."""
        if self.path.suffix.lower() == ".gguf":
            return ("gguf",)
        return ("onnx", "tflite", "coreml") if self.source == "zoo" else ("onnx",)


# --------------------------------------------------------------------------------------------------
# Graph building: builders record a small layer-level graph (NCHW semantics, weights as arrays); emitters
# write it as ONNX here and as TFLite in zoo_tflite.py, so every engine runs the very same weights.


@dataclass
class Op:
    kind: str  # conv, add, maxpool, gap, flatten, gemm, concat, shuffle, split
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class Graph:
    name: str
    ops: list[Op]
    input_shape: tuple[int, int, int, int]  # NCHW
    output: str
    classes: int = 1000


class _Net:
    """Records ops and tracks names so the builders read like the papers."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.ops: list[Op] = []
        self.n = 0

    def _name(self, kind: str) -> str:
        self.n += 1
        return f"{kind}_{self.n}"

    def _op(self, kind: str, inputs: list[str], n_out: int = 1, **attrs: Any) -> list[str]:
        outs = [self._name(kind) for _ in range(n_out)]
        arrays = attrs.pop("arrays", {})
        self.ops.append(Op(kind, inputs, outs, attrs, arrays))
        return outs

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int = 1, pad: int | None = None,
             group: int = 1, act: str | None = "relu", gain: float = 1.0,
             trained: tuple[np.ndarray, np.ndarray] | None = None) -> str:
        pad = k // 2 if pad is None else pad
        if trained is not None:
            w, b = trained
        else:
            fan_in = (cin // group) * k * k
            # He init for layers feeding a ReLU; plain 1/fan_in for linear outputs (bottlenecks, logits).
            std = gain * float(np.sqrt((2.0 if act else 1.0) / fan_in))
            w = self.rng.normal(0.0, std, size=(cout, cin // group, k, k)).astype(np.float32)
            b = self.rng.normal(0.0, 0.01, size=(cout,)).astype(np.float32)  # the folded BatchNorm shift
        return self._op("conv", [x], k=k, stride=stride, pad=pad, group=group, act=act,
                        arrays={"weight": w, "bias": b})[0]

    def add(self, a: str, b: str, act: str | None = None) -> str:
        return self._op("add", [a, b], act=act)[0]

    def maxpool(self, x: str, k: int, stride: int, pad: int) -> str:
        return self._op("maxpool", [x], k=k, stride=stride, pad=pad)[0]

    def gap(self, x: str) -> str:
        """Global average pooling to a (1, C) tensor."""
        return self._op("gap", [x])[0]

    def flatten(self, x: str) -> str:
        """(1, C, H, W) to (1, C·H·W) in C, H, W order (ONNX Flatten, axis 1)."""
        return self._op("flatten", [x])[0]

    def dense(self, x: str, weight: np.ndarray, bias: np.ndarray) -> str:
        return self._op("gemm", [x], arrays={"weight": weight, "bias": bias})[0]

    def head(self, x: str, cin: int, classes: int = 1000) -> str:
        w = self.rng.normal(0.0, float(np.sqrt(1.0 / cin)), size=(classes, cin)).astype(np.float32)
        b = self.rng.normal(0.0, 0.01, size=(classes,)).astype(np.float32)
        return self._op("gemm", [self.gap(x)], arrays={"weight": w, "bias": b})[0]

    def concat(self, xs: list[str]) -> str:
        return self._op("concat", xs)[0]

    def shuffle(self, x: str, channels: int, hw: int) -> str:
        """ShuffleNet's channel shuffle with 2 groups."""
        return self._op("shuffle", [x], channels=channels, hw=hw)[0]

    def split(self, x: str, half: int) -> tuple[str, str]:
        a, b = self._op("split", [x], n_out=2, half=half)
        return a, b


def to_onnx(graph: Graph) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    nodes: list[Any] = []
    inits: list[Any] = []
    counter = [0]

    def const(array: np.ndarray, hint: str) -> str:
        counter[0] += 1
        name = f"{hint}:{counter[0]}"  # ":" keeps constants apart from op outputs (op_N)
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(op: str, inputs: list[str], outputs: list[str], **attrs: Any) -> None:
        nodes.append(helper.make_node(op, inputs, outputs, name=outputs[0], **attrs))

    def act(y: str, kind: str | None, out: str) -> None:
        if kind == "relu":
            node("Relu", [y], [out])
        elif kind == "relu6":
            node("Clip", [y, const(np.array(0.0, np.float32), "min"), const(np.array(6.0, np.float32), "max")], [out])
        else:
            raise ValueError(kind)

    for op in graph.ops:
        a, (out, *_) = op.attrs, op.outputs
        pre = out + "_pre" if a.get("act") else out
        if op.kind == "conv":
            k, p = a["k"], a["pad"]
            node("Conv", [op.inputs[0], const(op.arrays["weight"], out + ".weight"), const(op.arrays["bias"], out + ".bias")],
                 [pre], kernel_shape=[k, k], strides=[a["stride"]] * 2, pads=[p] * 4, group=a["group"])
        elif op.kind == "add":
            node("Add", op.inputs, [pre])
        elif op.kind == "maxpool":
            node("MaxPool", op.inputs, [out], kernel_shape=[a["k"]] * 2, strides=[a["stride"]] * 2, pads=[a["pad"]] * 4)
        elif op.kind == "gap":
            node("GlobalAveragePool", op.inputs, [out + "_pool"])
            node("Flatten", [out + "_pool"], [out], axis=1)
        elif op.kind == "flatten":
            node("Flatten", op.inputs, [out], axis=1)
        elif op.kind == "gemm":
            node("Gemm", [op.inputs[0], const(op.arrays["weight"], out + ".weight"), const(op.arrays["bias"], out + ".bias")],
                 [out], transB=1)
        elif op.kind == "concat":
            node("Concat", op.inputs, [out], axis=1)
        elif op.kind == "shuffle":
            c, hw = a["channels"], a["hw"]
            node("Reshape", [op.inputs[0], const(np.array([1, 2, c // 2, hw, hw], np.int64), "shape")], [out + "_r"])
            node("Transpose", [out + "_r"], [out + "_t"], perm=[0, 2, 1, 3, 4])
            node("Reshape", [out + "_t", const(np.array([1, c, hw, hw], np.int64), "shape")], [out])
        elif op.kind == "split":
            node("Split", [op.inputs[0], const(np.array([a["half"]] * 2, np.int64), "split")], op.outputs, axis=1)
        else:
            raise ValueError(op.kind)
        if a.get("act"):
            act(pre, a["act"], out)
    node("Identity", [graph.output], [OUTPUT_NAME])
    onnx_graph = helper.make_graph(
        nodes, graph.name,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, list(graph.input_shape))],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [1, graph.classes])],
        initializer=inits,
    )
    model = helper.make_model(onnx_graph, producer_name="devicelab.zoo", producer_version=str(ZOO_VERSION),
                              opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    return model.SerializeToString()


def _mobilenet_v1(net: _Net) -> str:
    x = net.conv(INPUT_NAME, 3, 32, 3, stride=2)
    cin = 32
    for cout, stride in [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1),
                         (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]:
        x = net.conv(x, cin, cin, 3, stride=stride, group=cin)  # depthwise
        x = net.conv(x, cin, cout, 1)  # pointwise
        cin = cout
    return net.head(x, cin)


def _mobilenet_v2(net: _Net) -> str:
    x = net.conv(INPUT_NAME, 3, 32, 3, stride=2, act="relu6")
    cin = 32
    for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                       (6, 160, 3, 2), (6, 320, 1, 1)]:
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = cin * t
            y = x
            if t != 1:
                y = net.conv(y, cin, hidden, 1, act="relu6")
            y = net.conv(y, hidden, hidden, 3, stride=stride, group=hidden, act="relu6")
            residual = stride == 1 and cin == c
            y = net.conv(y, hidden, c, 1, act=None, gain=0.5 if residual else 1.0)  # linear bottleneck
            x = net.add(x, y) if residual else y
            cin = c
    x = net.conv(x, cin, 1280, 1, act="relu6")
    return net.head(x, 1280)


def _squeezenet1_1(net: _Net) -> str:
    def fire(x: str, cin: int, squeeze: int, e1: int, e3: int) -> tuple[str, int]:
        s = net.conv(x, cin, squeeze, 1)
        a = net.conv(s, squeeze, e1, 1)
        b = net.conv(s, squeeze, e3, 3)
        return net.concat([a, b]), e1 + e3

    x = net.conv(INPUT_NAME, 3, 64, 3, stride=2, pad=0)
    x = net.maxpool(x, 3, 2, 0)
    x, c = fire(x, 64, 16, 64, 64)
    x, c = fire(x, c, 16, 64, 64)
    x = net.maxpool(x, 3, 2, 0)
    x, c = fire(x, c, 32, 128, 128)
    x, c = fire(x, c, 32, 128, 128)
    x = net.maxpool(x, 3, 2, 0)
    for squeeze, expand in [(48, 192), (48, 192), (64, 256), (64, 256)]:
        x, c = fire(x, c, squeeze, expand, expand)
    # SqueezeNet classifies with a 1x1 conv + ReLU + global pooling, no fully connected layer.
    return net.gap(net.conv(x, c, 1000, 1))


def _shufflenet_v2_x1_0(net: _Net) -> str:
    x = net.conv(INPUT_NAME, 3, 24, 3, stride=2)
    x = net.maxpool(x, 3, 2, 1)
    cin, hw = 24, 56
    for cout, repeats in [(116, 4), (232, 8), (464, 4)]:
        half = cout // 2
        for i in range(repeats):
            if i == 0:
                hw //= 2
                b1 = net.conv(x, cin, cin, 3, stride=2, group=cin, act=None)
                b1 = net.conv(b1, cin, half, 1)
                b2 = net.conv(x, cin, half, 1)
                b2 = net.conv(b2, half, half, 3, stride=2, group=half, act=None)
                b2 = net.conv(b2, half, half, 1)
                x = net.concat([b1, b2])
            else:
                x1, x2 = net.split(x, half)
                b2 = net.conv(x2, half, half, 1)
                b2 = net.conv(b2, half, half, 3, group=half, act=None)
                b2 = net.conv(b2, half, half, 1)
                x = net.concat([x1, b2])
            x = net.shuffle(x, cout, hw)
            cin = cout
    x = net.conv(x, cin, 1024, 1)
    return net.head(x, 1024)


def _resnet18(net: _Net) -> str:
    x = net.conv(INPUT_NAME, 3, 64, 7, stride=2, pad=3)
    x = net.maxpool(x, 3, 2, 1)
    cin = 64
    for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        for i in range(2):
            s = stride if i == 0 else 1
            y = net.conv(x, cin, cout, 3, stride=s)
            # Scaled-down last conv keeps the residual stream's variance from doubling every block.
            y = net.conv(y, cout, cout, 3, act=None, gain=0.5)
            shortcut = net.conv(x, cin, cout, 1, stride=s, pad=0, act=None) if (s != 1 or cin != cout) else x
            x = net.add(shortcut, y, act="relu")
            cin = cout
    return net.head(x, cin)


def _digits_cnn(net: _Net) -> str:
    from devicelab import zoo_digits

    w = zoo_digits.train(net.seed).weights
    x = net.conv(INPUT_NAME, 1, 16, 3, trained=(w["conv1.weight"], w["conv1.bias"]))
    x = net.conv(x, 16, 32, 3, stride=2, trained=(w["conv2.weight"], w["conv2.bias"]))
    return net.dense(net.flatten(x), w["fc.weight"], w["fc.bias"])


_BUILDERS: dict[str, Callable[[_Net], str]] = {
    "mobilenet_v1": _mobilenet_v1,
    "mobilenet_v2": _mobilenet_v2,
    "squeezenet1_1": _squeezenet1_1,
    "shufflenet_v2_x1_0": _shufflenet_v2_x1_0,
    "resnet18": _resnet18,
    "digits_cnn": _digits_cnn,
}


def build_graph(name: str, seed: int = SEED) -> Graph:
    if name not in _BUILDERS:
        raise UnknownNameError("zoo model", name, _BUILDERS)
    net = _Net(seed + sum(name.encode()))  # each model draws from its own stream
    output = _BUILDERS[name](net)
    entry = ZOO[name]
    return Graph(name, net.ops, entry.input_shape, output, entry.classes)


def build_bytes(name: str, seed: int = SEED) -> bytes:
    """The serialized ONNX model. Deterministic for a given name, seed and zoo version."""
    return to_onnx(build_graph(name, seed))


# --------------------------------------------------------------------------------------------------
# Cache


def zoo_model(name: str, cache_dir: Path, seed: int = SEED) -> ModelFile:
    """The zoo model's file, built on first use and then found by its recipe in the cache index."""
    if name not in _BUILDERS:
        raise UnknownNameError("zoo model", name, _BUILDERS)
    index_path = cache_dir / "index.json"
    recipe = f"{name}@zoo{ZOO_VERSION}/seed{seed}"
    index: dict[str, str] = {}
    if index_path.exists():
        try:
            index = json.loads(index_path.read_text())
        except (OSError, ValueError):
            index = {}  # a damaged index only costs a rebuild
    digest = index.get(recipe)
    if digest:
        path = cache_dir / f"{name}-{digest[:16]}.onnx"
        # Size check only: the file name carries the hash, and the runner hashes nothing on the hot path.
        if path.exists():
            return ModelFile(name, path, digest, path.stat().st_size, "zoo")
    data = build_bytes(name, seed)
    digest = hashlib.sha256(data).hexdigest()
    path = cache_dir / f"{name}-{digest[:16]}.onnx"
    if not path.exists():
        write_atomic(path, data)
    index[recipe] = digest
    write_atomic(index_path, json.dumps(index, indent=1, sort_keys=True).encode())
    return ModelFile(name, path, digest, len(data), "zoo")


def user_model(path: Path, name: str | None = None) -> ModelFile:
    path = path.expanduser()
    if not path.is_file():
        raise DevicelabError(f"model file not found: {path}")
    return ModelFile(name or path.stem, path.resolve(), sha256_file(path), path.stat().st_size, "user")


# --------------------------------------------------------------------------------------------------
# Counting (for `devicelab models` and the tests against the published figures)


def count_params(model_bytes: bytes) -> int:
    """Weights and biases of Conv and Gemm layers (what the papers count, BatchNorm folded)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(model_bytes)
    weighted = {i for n in model.graph.node if n.op_type in ("Conv", "Gemm") for i in n.input[1:]}
    return sum(int(np.prod(numpy_helper.to_array(t).shape)) for t in model.graph.initializer if t.name in weighted)


def count_macs(model_bytes: bytes) -> int:
    """Multiply-accumulates of Conv and Gemm layers, from ONNX shape inference."""
    import onnx
    from onnx import numpy_helper, shape_inference

    model = shape_inference.infer_shapes(onnx.load_from_string(model_bytes))
    shapes: dict[str, list[int]] = {}
    for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        shapes[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    weights = {t.name: numpy_helper.to_array(t).shape for t in model.graph.initializer}
    macs = 0
    for n in model.graph.node:
        if n.op_type == "Conv":
            cout, cin_per_group, kh, kw = weights[n.input[1]]
            macs += int(np.prod(shapes[n.output[0]])) * cin_per_group * kh * kw
        elif n.op_type == "Gemm":
            out_features, in_features = weights[n.input[1]]
            macs += out_features * in_features
    return macs


def onnx_inputs(path: Path, overrides: dict[str, tuple[int, ...]] | None = None) -> list[dict[str, object]]:
    """The model's graph inputs (name, shape, dtype); symbolic dims become 1 unless the suite gives a shape.

    Kept by the file's content in the data folder (`inputs/`): reading them needs `import onnx`, whose ml_dtypes
    extension alone takes ~0.85 s here, and a run needs nothing else of onnx once its models are converted."""
    from devicelab import paths

    key = hashlib.sha256(json.dumps([sha256_file(path), sorted((overrides or {}).items())]).encode()).hexdigest()
    kept = paths.data_dir() / "inputs" / f"{key[:32]}.json"
    try:
        return list(json.loads(kept.read_text()))
    except (OSError, ValueError):
        pass
    inputs = _read_onnx_inputs(path, overrides)
    try:
        write_atomic(kept, json.dumps(inputs).encode())
    except OSError:
        pass  # a read-only data folder: read the model again next time
    return inputs


def _read_onnx_inputs(path: Path, overrides: dict[str, tuple[int, ...]] | None) -> list[dict[str, object]]:
    import onnx
    from onnx import helper

    model = onnx.load(str(path), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    overrides = overrides or {}
    inputs: list[dict[str, object]] = []
    for vi in model.graph.input:
        if vi.name in initializers:
            continue  # old exporters list weights as inputs
        ttype = vi.type.tensor_type
        shape = overrides.get(vi.name) or tuple(d.dim_value if d.dim_value > 0 else 1 for d in ttype.shape.dim)
        dtype = helper.tensor_dtype_to_np_dtype(ttype.elem_type).name
        inputs.append({"name": vi.name, "shape": list(shape), "dtype": dtype})
    unknown = sorted(set(overrides) - {i["name"] for i in inputs})
    if unknown:
        raise DevicelabError(f"input_shapes: {', '.join(unknown)} not among the inputs of {path.name} "
                             f"({', '.join(str(i['name']) for i in inputs)})")
    return inputs
