"""What an ONNX model says about the ops an engine profiled: its node names (the node link), which convolutions are
depthwise (ONNX Runtime's profile does not say), and which model nodes an engine fused away (attributed to the op
that absorbed them). Reads the model with `onnx` only (no engine), after timing.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


# ONNX activations an engine may fuse into the op before them.
ACTIVATIONS = frozenset({"Relu", "Clip", "Sigmoid", "HardSwish", "HardSigmoid", "LeakyRelu", "Tanh", "PRelu", "Elu",
                         "Selu", "Gelu", "Mish", "Softplus"})


# Model ops an engine fuses an activation into.
FUSE_ACTIVATIONS = frozenset({"Conv", "ConvTranspose", "QLinearConv", "ConvInteger", "Gemm", "MatMul"})


@dataclass(frozen=True)
class Node:
    name: str
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    depthwise: bool = False


def read(path: str | Path) -> list[Node]:
    """The model's nodes in graph (topological) order. Unnamed nodes get ONNX Runtime's convention: the op type and
    the first output."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    shapes = {init.name: tuple(init.dims) for init in model.graph.initializer}
    # A QDQ model's weights reach Conv through DequantizeLinear: follow it to the initializer's shape.
    dq_source = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    nodes = []
    for n in model.graph.node:
        depthwise = False
        if n.op_type in ("Conv", "QLinearConv", "ConvInteger"):
            group = next((a.i for a in n.attribute if a.name == "group"), 1)
            weight = n.input[3] if n.op_type == "QLinearConv" else n.input[1]
            shape = shapes.get(dq_source.get(weight, weight))
            # one input channel per group (C_in == group), whatever the channel multiplier (C_out = k * group)
            depthwise = group > 1 and shape is not None and len(shape) >= 2 and shape[1] == 1 and shape[0] % group == 0
        nodes.append(Node(n.name or f"{n.op_type}_{n.output[0]}", n.op_type, tuple(i for i in n.input if i),
                          tuple(n.output), depthwise))
    return nodes


def node_names(path: str | Path) -> set[str]:
    return {n.name for n in read(path)}


def absorbed(nodes: Iterable[Node], present: Collection[str]) -> dict[str, list[str]]:
    """Model nodes an engine's profile does not list, attributed to the profiled op that absorbed them: {op's node:
    [that node, then every node it absorbed]} for ops that absorbed any. A missing node goes to the nearest profiled
    node upstream, through the latest-computed of its inputs (Conv+Relu fused into one kernel: the Relu goes to the
    Conv; a residual Add fused into the Conv that computes its last input: to that Conv). A DequantizeLinear goes
    downstream first (int8 kernels read the quantized tensor themselves), and so does a node with nothing profiled
    upstream (a weight's DequantizeLinear, a graph input's QuantizeLinear)."""
    nodes = list(nodes)
    order = {n.name: i for i, n in enumerate(nodes)}
    by_output = {o: n for n in nodes for o in n.outputs}
    consumers: dict[str, list[Node]] = {}
    for n in nodes:
        for i in n.inputs:
            consumers.setdefault(i, []).append(n)
    up: dict[str, str | None] = {}
    down: dict[str, str | None] = {}

    def upstream(n: Node) -> str | None:
        if n.name in present:
            return n.name
        if n.name not in up:
            up[n.name] = None  # guards against a broken file's cycle
            producers = sorted({by_output[i].name: by_output[i] for i in n.inputs if i in by_output}.values(),
                               key=lambda p: -order[p.name])
            up[n.name] = next((f for p in producers if (f := upstream(p)) is not None), None)
        return up[n.name]

    def downstream(n: Node) -> str | None:
        if n.name in present:
            return n.name
        if n.name not in down:
            down[n.name] = None
            after = sorted({c.name: c for o in n.outputs for c in consumers.get(o, ())}.values(),
                           key=lambda c: order[c.name])
            down[n.name] = next((f for c in after if (f := downstream(c)) is not None), None)
        return down[n.name]

    fused: dict[str, list[str]] = {}
    for n in nodes:
        if n.name in present:
            continue
        # A kernel may carry the name of the activation it absorbed (ONNX Runtime names Conv+Clip after the Clip):
        # then the convolution or product went into its consumer.
        into_activation = next((c.name for o in n.outputs for c in consumers.get(o, ())
                                if c.name in present and c.op_type in ACTIVATIONS), None) \
            if n.op_type in FUSE_ACTIVATIONS else None
        first, second = (downstream, upstream) if n.op_type == "DequantizeLinear" else (upstream, downstream)
        target = into_activation or first(n) or second(n)
        if target:
            fused.setdefault(target, [target]).append(n.name)
    return fused


def describe(path: str | Path) -> dict[str, Any]:
    """{node name: {"op_type", "depthwise"}} for hints."""
    return {n.name: {"op_type": n.op_type, "depthwise": n.depthwise} for n in read(path)}


def link(ops: list[dict[str, Any]], path: str | Path) -> tuple[list[dict[str, Any]], int]:
    """Ops an engine named after the model's nodes (MNN, a runner's op events), linked to the model: `node` where
    the op's name is a node (or a tensor a node computes), the model nodes it absorbed (`absorbed`), and for the
    vocabulary the node's type and whether its convolution is depthwise. Returns the ops and how many were linked."""
    nodes = read(path)
    by_name = {**{o: n for n in nodes for o in n.outputs}, **{n.name: n for n in nodes}}
    node_of = {op["name"]: by_name[op["name"]].name for op in ops if op.get("name") in by_name}
    fused = absorbed(nodes, set(node_of.values()))
    graph = {n.name: n for n in nodes}
    out = []
    for op in ops:
        node = node_of.get(op.get("name", ""))
        if node is None:
            out.append({**op, "node": None, "fused": []})
            continue
        hint = {"original_type": graph[node].op_type,
                "depthwise": any(graph[n].depthwise for n in [node, *fused.get(node, [])])}
        out.append({**op, "node": node, "fused": fused.get(node, []), "hint": {**hint, **(op.get("hint") or {})}})
    return out, len(node_of)


def link_by_order(ops: list[dict[str, Any]], path: str | Path, family: str) -> tuple[list[dict[str, Any]], int]:
    """Ops whose names are not the model's (pnnx renames ncnn's layers: `convclip_0` for a Conv+Clip), paired with
    the model's nodes best-effort: the k-th op of a shared type with the k-th node of that type, in graph order,
    where the op and node counts of that type agree (a type whose counts differ stays unlinked). The nodes the
    paired ones absorbed are attributed as in `absorbed`. Returns the ops and how many were linked."""
    from devicelab.opprof.vocab import OTHER, classify

    nodes = read(path)
    by_type: dict[str, list[Node]] = {}
    for n in nodes:
        by_type.setdefault(classify("onnx", n.op_type, {"depthwise": n.depthwise}), []).append(n)
        # ncnn's BinaryOp and UnaryOp stand for several ONNX types: they pair with any node of those, in order
        for generic, types in GENERIC_NODES.items():
            if n.op_type in types:
                by_type.setdefault(generic, []).append(n)
    op_types = []
    for op in ops:
        engine_type = str(op.get("engine_type", op.get("type", "")))
        key = engine_type.lower()
        op_types.append(key if key in GENERIC_NODES else classify(family, engine_type, op.get("hint")))
    paired: dict[int, Node] = {}
    for shared in set(op_types) - {OTHER}:
        idx = [i for i, t in enumerate(op_types) if t == shared]
        # Activations and reshapes come and go with fusion; pairing them would be a guess
        if shared in ("Activation", "Reshape") or len(idx) != len(by_type.get(shared, ())):
            continue
        paired.update(zip(idx, by_type[shared]))
    fused = absorbed(nodes, {n.name for n in paired.values()})
    out = []
    for i, op in enumerate(ops):
        node = paired.get(i)
        if node is None:
            out.append({**op, "node": None, "fused": []})
            continue
        # the paired node's type is the vocabulary's hint: a BinaryOp paired with a Mul is a Mul
        hint = {"original_type": node.op_type, "depthwise": node.depthwise, **(op.get("hint") or {})}
        out.append({**op, "node": node.name, "fused": fused.get(node.name, []), "hint": hint})
    return out, len(paired)


# ncnn's generic layers and the ONNX types pnnx turns into them.
GENERIC_NODES: dict[str, frozenset[str]] = {
    "binaryop": frozenset({"Add", "Sub", "Mul", "Div", "Max", "Min", "Pow"}),
    "unaryop": frozenset({"Abs", "Neg", "Floor", "Ceil", "Sqrt", "Exp", "Log", "Sin", "Cos", "Tan", "Reciprocal",
                          "Tanh", "Round"}),
}
