"""ncnn int8 models without ncnn's tools: what `ncnn2table` (calibration) and `ncnn2int8` (rewrite) do, in numpy.

Neither the ncnn wheel nor its sdist ships those two programs, yet the runtime in both (and dlbench's C++
backend) runs their output. This module writes the same files from a pnnx-converted fp32 .param/.bin pair.
Read from Tencent/ncnn at a4d2ea1 (2026-07): tools/quantize/ncnn2table.cpp, tools/quantize/ncnn2int8.cpp,
tools/modelwriter.h; the loaders the files must satisfy from the 1.0.20261020 sdist that the engines run:
src/modelbin.cpp and src/layer/{convolution,convolutiondepthwise,innerproduct}.cpp (`load_model`).

1. Weight scales (ncnn2table): per output channel 127 / max|w| (per group for ConvolutionDepthWise), but
   31 / max|w| for 3x3 stride-1 dilation-1 Convolution ("int8 winograd F43 needs weight data to use 6bit
   quantization", says ncnn2table: its transforms grow values and multiply them in 16-bit lanes). Kept though
   8-bit weights measured closer to fp32 on this x86 host: the same files run on arm64 phones.
2. Activation scales (ncnn2table's default method, `kl`): run the fp32 model in pip ncnn over the calibration
   set, histogram |x| of every quantized layer's input into 2048 bins up to the largest |x| seen, and pick
   the clipping threshold whose 128-level quantization loses the least KL divergence.
3. Rewrite (ncnn2int8): Convolution and InnerProduct get int8_scale_term 2, ConvolutionDepthWise 1; their
   weights become int8 blobs (tag 0x000D4B38, padded to 4 bytes), the fp32 bias stays, and the scales follow:
   weight scales (one per output channel, per group for depthwise), then the input scale, then -- for a
   convolution whose output feeds only int8 convolutions ("requantize", int8_scale_term + 100) -- the next
   layer's input scale, so ncnn hands int8 straight from one convolution to the next.

The scales are carried as ncnn2table's text table carries them (printf "%f"), so the files match the tools'.
Deliberate differences: layers that stay float keep their fp32 bytes (ncnn2int8 rewrites them as fp16), so an
int8 run differs from fp32 only where int8 arithmetic was asked for; an all-zero weight row gets scale 1, not
127/0. The KL search runs in float64 where ncnn2table uses float32: a near-tie may pick a neighbouring bin.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devicelab.engines.base import SourceModel, calibration_inputs, calibration_key
from devicelab.paths import cached_file

# Bump when anything here changes the files it writes: cached int8 models are keyed by it.
QUANTIZER_VERSION = 1

# ModelBin::load(w, 0) reads one of these flag words before the data (src/modelbin.cpp).
TAG_FP32 = 0x00000000
TAG_FP16 = 0x01306B47
TAG_BF16 = 0x01348B83
TAG_INT8 = 0x000D4B38
TAG_FP32_SCALED = 0x0002C056

# What the engines record with an int8 Result.
INT8_NOTE = ("int8 written by devicelab's port of ncnn2table (KL, per-channel weight scales) and ncnn2int8; "
             "Convolution, ConvolutionDepthWise and InnerProduct run int8")

QUANTIZED_TYPES = ("Convolution", "ConvolutionDepthWise", "InnerProduct")
HISTOGRAM_BINS = 2048  # ncnn2table's num_histogram_bins
TARGET_BINS = 128  # the int8 levels on one side of zero
KL_EPS = 0.0001  # ncnn2table adds this to every bin of both distributions before comparing them

# Layer types whose load_model reads nothing (every src/layer/*.cpp of the 1.0.20261020 sdist without one):
# their layers own no bytes of the .bin.
WEIGHTLESS_TYPES = frozenset({
    "AbsVal", "ArgMax", "BNLL", "Concat", "Crop", "Dropout", "Eltwise", "ELU", "Exp", "Flatten", "Input", "Log",
    "LRN", "MVN", "Pooling", "Power", "Proposal", "Reduction", "ReLU", "Reshape", "ROIPooling", "Sigmoid", "Slice",
    "Softmax", "Split", "SPP", "TanH", "Threshold", "Tile", "BinaryOp", "UnaryOp", "Squeeze", "ExpandDims",
    "Permute", "PriorBox", "DetectionOutput", "Interp", "ShuffleChannel", "Clip", "Reorg", "YoloDetectionOutput",
    "Yolov3DetectionOutput", "PSROIPooling", "ROIAlign", "Packing", "Cast", "HardSigmoid", "SELU", "HardSwish",
    "Noop", "PixelShuffle", "DeepCopy", "Mish", "StatisticsPooling", "Swish", "Softplus", "GELU", "Pooling1D",
    "Pooling3D", "MatMul", "Einsum", "GLU", "Fold", "Unfold", "GridSample", "CumulativeSum", "CopyTo", "Erf", "Diag",
    "CELU", "Shrink", "Spectrogram", "InverseSpectrogram", "Flip", "SDPA", "RotaryEmbed",
})


class NcnnInt8Error(ValueError):
    """The model cannot be quantized here (a layer whose weights this module cannot walk, a malformed pair)."""


@dataclass(frozen=True)
class ParamLayer:
    """One layer line of a .param file, with its parameters as written (arrays keep ncnn's -233xx keys)."""

    type: str
    name: str
    bottoms: tuple[str, ...]
    tops: tuple[str, ...]
    params: dict[int, str]
    line: str

    def get(self, key: int, default: int = 0) -> int:
        """An integer parameter, as ncnn's ParamDict::get reads it."""
        value = self.params.get(key)
        return default if value is None else int(value)


@dataclass(frozen=True)
class Segment:
    """One ModelBin::load of a layer: where its bytes are in the .bin and how they are stored."""

    offset: int
    size: int  # bytes, the flag word and padding included
    count: int  # values
    tag: int | None  # None: an untagged load (type 1, raw float32)


@dataclass
class CalibrationTable:
    """What ncnn2table writes: per quantized layer, its weight scales and the scale of its input blob."""

    weight_scales: dict[str, Any] = field(default_factory=dict)  # layer name -> float32 array
    input_scales: dict[str, float] = field(default_factory=dict)  # layer name -> scale

    def to_text(self) -> str:
        """ncnn2table's table format (`NAME_param_0 s s s`, then `NAME s`), which ncnn2int8 reads."""
        lines = [f"{name}_param_0 " + "".join(f"{s:f} " for s in scales) for name, scales in self.weight_scales.items()]
        lines += [f"{name} {scale:f} " for name, scale in self.input_scales.items()]
        return "\n".join(lines) + "\n"


# ---- reading .param and .bin ----

def parse_param(text: str) -> list[ParamLayer]:
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or lines[0].strip() != "7767517":
        raise NcnnInt8Error("not an ncnn .param file (the first line is not the magic 7767517)")
    layers: list[ParamLayer] = []
    for line in lines[2:]:
        tokens = line.split()
        nb, nt = int(tokens[2]), int(tokens[3])
        bottoms, tops = tuple(tokens[4:4 + nb]), tuple(tokens[4 + nb:4 + nb + nt])
        params: dict[int, str] = {}
        for token in tokens[4 + nb + nt:]:
            key, _, value = token.partition("=")
            params[int(key)] = value
        layers.append(ParamLayer(tokens[0], tokens[1], bottoms, tops, params, line))
    return layers


def _align4(n: int) -> int:
    return (n + 3) // 4 * 4


def _tagged(data: bytes, offset: int, count: int) -> Segment:
    """A load(w, 0): the flag word says how the values are stored, and so how many bytes follow."""
    if offset + 4 > len(data):
        raise NcnnInt8Error("the .bin ends before its .param's layers do")
    tag = struct.unpack_from("<I", data, offset)[0]
    if tag in (TAG_FP16, TAG_BF16):
        body = _align4(2 * count)
    elif tag == TAG_INT8:
        body = _align4(count)
    elif tag in (TAG_FP32, TAG_FP32_SCALED):
        body = 4 * count
    else:  # any other non-zero flag: a 256-entry float table then one index byte per value
        body = 256 * 4 + _align4(count)
    return Segment(offset, 4 + body, count, tag)


def layer_segments(layer: ParamLayer, data: bytes, offset: int) -> list[Segment]:
    """The loads `layer`'s load_model makes, in order, starting at `offset` of the .bin."""
    def raw(n: int) -> Segment:
        nonlocal offset
        seg = Segment(offset, 4 * n, n, None)
        offset += seg.size
        return seg

    def tagged(n: int) -> Segment:
        nonlocal offset
        seg = _tagged(data, offset, n)
        offset += seg.size
        return seg

    t = layer.type
    if t in WEIGHTLESS_TYPES:
        return []
    if t in ("Convolution", "ConvolutionDepthWise", "InnerProduct"):
        if layer.get(8):
            raise NcnnInt8Error(f"{t} {layer.name} is already int8 (int8_scale_term={layer.get(8)})")
        if t != "InnerProduct" and layer.get(19):  # dynamic weights come from a blob, not the file
            return []
        segs = [tagged(layer.get(6 if t != "InnerProduct" else 2))]
        if layer.get(5 if t != "InnerProduct" else 1):
            segs.append(raw(layer.get(0)))
        return segs
    if t == "BatchNorm":
        return [raw(layer.get(0)) for _ in range(4)]  # slope, mean, variance, bias
    if t == "Scale":
        size = layer.get(0)
        if size == -233:  # the scale comes from a second input blob
            return []
        return [raw(size)] + ([raw(size)] if layer.get(1) else [])
    if t in ("PReLU", "Bias"):
        return [raw(layer.get(0))]
    if t == "MemoryData":
        dims = [layer.get(0), layer.get(1), layer.get(11), layer.get(2)]
        count = math.prod(d for d in dims if d) if dims[0] else 0
        if not count:
            return []
        return [tagged(count) if layer.get(21, 1) == 0 else raw(count)]
    raise NcnnInt8Error(f"devicelab's ncnn int8 quantizer cannot walk the weights of a {t} layer ({layer.name}); "
                        f"it knows {', '.join(QUANTIZED_TYPES)}, BatchNorm, Scale, PReLU, Bias, MemoryData and "
                        "weightless layers")


def read_model(param_text: str, weights: bytes) -> tuple[list[ParamLayer], list[list[Segment]]]:
    """The layers and, per layer, where its loads sit in the .bin; the walk must end exactly at the file's end."""
    layers = parse_param(param_text)
    segments: list[list[Segment]] = []
    offset = 0
    for layer in layers:
        segs = layer_segments(layer, weights, offset)
        if segs:
            offset = segs[-1].offset + segs[-1].size
        segments.append(segs)
    if offset != len(weights):
        raise NcnnInt8Error(f"the .param describes {offset} bytes of weights but the .bin holds {len(weights)}")
    return layers, segments


def decode(segment: Segment, data: bytes) -> Any:
    """A segment's values as float32, whichever way they are stored."""
    import numpy as np

    body = data[segment.offset + (4 if segment.tag is not None else 0):segment.offset + segment.size]
    n = segment.count
    if segment.tag in (None, TAG_FP32, TAG_FP32_SCALED):
        return np.frombuffer(body, "<f4", n).astype(np.float32)
    if segment.tag == TAG_FP16:
        return np.frombuffer(body, "<f2", n).astype(np.float32)
    if segment.tag == TAG_BF16:
        return (np.frombuffer(body, "<u2", n).astype(np.uint32) << 16).view(np.float32)
    if segment.tag == TAG_INT8:
        raise NcnnInt8Error("the weights are int8 already")
    table = np.frombuffer(body, "<f4", 256)
    return table[np.frombuffer(body, np.uint8, n, offset=1024)].astype(np.float32)


# ---- scales (ncnn2table) ----

def _table_value(x: Any) -> Any:
    """A scale as it survives ncnn2table's "%f" and ncnn2int8's "%f" read: rounded to 6 decimals, float32."""
    import numpy as np

    return np.float32(np.round(np.asarray(x, np.float64), 6))


def six_bit(layer: ParamLayer) -> bool:
    """ncnn2table's condition for 6-bit weights: the int8 Winograd F(4,3) candidates (3x3, stride 1, dilation 1)."""
    kw = layer.get(1)
    return (layer.type == "Convolution" and kw == 3 and layer.get(11, kw) == 3
            and layer.get(2, 1) == 1 and layer.get(12, layer.get(2, 1)) == 1
            and layer.get(3, 1) == 1 and layer.get(13, layer.get(3, 1)) == 1)


def weight_scales(weights: Any, rows: int, levels: int = 127) -> Any:
    """Per-row (output channel, or group) scales levels / max|w|; an all-zero row gets 1 (ncnn would divide by
    zero; any scale quantizes zeros to zeros)."""
    import numpy as np

    absmax = np.abs(np.asarray(weights, np.float32).reshape(rows, -1)).max(axis=1)
    return np.where(absmax > 0, np.float32(levels) / np.where(absmax > 0, absmax, 1), 1).astype(np.float32)


def kl_divergences(histogram: Any) -> Any:
    """ncnn2table's KL search, every candidate at once: for each bin count t from 128 to len-1, the divergence of
    the clipped histogram from its 128-level quantization spread back over t bins.

    ncnn spreads each of the 128 levels uniformly over the (fractional) bins it covers, empty bins included,
    and folds the clipped tail into the last bin of the reference only; both get KL_EPS per bin, unnormalised.
    Seen as a piecewise-constant density, a level's value is the histogram mass over its interval divided by
    the interval's width, and a bin's expanded value is the integral of the levels' density over the bin: two
    cumulative sums per threshold instead of ncnn's per-bin loops, same numbers up to float rounding.
    """
    import numpy as np

    counts = np.asarray(histogram, np.float64)
    h = counts / counts.sum()
    cum = np.concatenate(([0.0], np.cumsum(h)))
    levels = np.arange(TARGET_BINS + 1, dtype=np.float64)
    out = np.empty(max(len(h) - TARGET_BINS, 0))
    for n, t in enumerate(range(TARGET_BINS, len(h))):
        width = t / TARGET_BINS
        edges = levels * width
        edges[-1] = t
        k = np.minimum(np.floor(edges).astype(np.int64), t - 1)
        mass_at = cum[k] + (edges - k) * h[k]  # histogram mass on [0, edge)
        density = np.diff(mass_at) / width
        x = np.arange(t + 1, dtype=np.float64)
        j = np.minimum((x / width).astype(np.int64), TARGET_BINS - 1)
        expanded = np.diff(mass_at[j] + (x - edges[j]) * density[j]) + KL_EPS  # spread mass per bin
        clipped = h[:t] + KL_EPS
        clipped[-1] += 1.0 - cum[t]
        out[n] = np.sum(clipped * np.log(clipped / expanded))
    return out


def kl_threshold_bin(histogram: Any) -> int:
    """The bin count ncnn2table clips at: the first with the least divergence (it keeps a strict minimum)."""
    import numpy as np

    return TARGET_BINS + int(np.argmin(kl_divergences(histogram)))


def kl_scale(histogram: Any, absmax: float) -> float:
    """The input scale for one blob: 127 over the threshold at the centre of the chosen bin."""
    import numpy as np

    if absmax <= 0 or not np.any(histogram):
        return 1.0  # an all-zero input: any scale maps it to zeros
    t = kl_threshold_bin(histogram)
    threshold = np.float32((t + 0.5) * np.float32(absmax) / HISTOGRAM_BINS)
    return float(np.float32(127) / threshold)


def histogram(values: Any, absmax: float) -> Any:
    """ncnn2table's histogram of |x| over [0, absmax] in 2048 bins, in float32 like ncnn; exact zeros (the
    ReLU-clipped half) are not counted."""
    import numpy as np

    v = np.abs(np.asarray(values, np.float32).ravel())
    v = v[v != 0]
    index = np.minimum((v / np.float32(absmax) * np.float32(HISTOGRAM_BINS)).astype(np.int64), HISTOGRAM_BINS - 1)
    return np.bincount(index, minlength=HISTOGRAM_BINS)


def _fp32_net(param: Path, weights: Path, threads: int) -> Any:
    try:
        import ncnn
    except ImportError:  # dlbench's controller may lack it: its runner is C++
        raise NcnnInt8Error("int8 calibration runs the fp32 model in pip ncnn, which is not installed "
                            "(pip install ncnn)") from None

    net = ncnn.Net()
    opt = net.opt
    opt.num_threads = threads
    opt.use_vulkan_compute = False
    # Calibration measures the fp32 model: every low-precision switch off (ncnn enables some by default).
    opt.use_fp16_storage = opt.use_fp16_packed = opt.use_fp16_arithmetic = False
    opt.use_bf16_storage = opt.use_bf16_packed = False
    opt.use_int8_inference = opt.use_int8_storage = opt.use_int8_packed = opt.use_int8_arithmetic = False
    if net.load_param(str(param)) != 0 or net.load_model(str(weights)) != 0:
        raise NcnnInt8Error(f"pip ncnn could not load {param} / {weights}")
    return net


def _activations(net: Any, sample: Sequence[Any], blobs: Sequence[str]) -> Iterator[tuple[str, Any]]:
    """(blob, values) for one calibration input; light mode off so one forward serves every blob."""
    import ncnn
    import numpy as np

    ex = net.create_extractor()
    ex.set_light_mode(False)
    arrays = [np.ascontiguousarray(a, np.float32) for a in sample]  # kept alive: the Mats borrow them
    for i, a in enumerate(arrays):
        ex.input(f"in{i}", ncnn.Mat(a))
    for blob in blobs:
        ret, out = ex.extract(blob)
        if ret != 0:
            raise NcnnInt8Error(f"ncnn could not compute blob {blob} (extract returned {ret})")
        yield blob, np.array(out)


def calibrate(param: Path, weights: Path, samples: Sequence[Sequence[Any]], threads: int = 1) -> CalibrationTable:
    """ncnn2table's `method=kl`: weight scales from the weights, input scales from the fp32 activations.

    `samples`: per calibration input, one array per model input (in0, in1, … in pnnx's order), without the batch
    dimension. One thread by default so the same inputs always give the same table (the cache relies on it).
    """
    import numpy as np

    data = weights.read_bytes()
    layers, segments = read_model(param.read_text(), data)
    table = CalibrationTable()
    quantized = [(layer, segs) for layer, segs in zip(layers, segments) if layer.type in QUANTIZED_TYPES and segs]
    for layer, segs in quantized:
        w = decode(segs[0], data)
        rows = layer.get(7, 1) if layer.type == "ConvolutionDepthWise" else layer.get(0)
        scales = weight_scales(w, rows, 31 if six_bit(layer) else 127)
        table.weight_scales[layer.name] = _table_value(scales)
    if not quantized:
        return table
    inputs = {layer.name: layer.bottoms[0] for layer, _ in quantized}
    blobs = list(dict.fromkeys(inputs.values()))
    net = _fp32_net(param, weights, threads)
    # Two passes like ncnn2table: the bins span [0, the largest |x| over the whole set], known only after one.
    absmax = dict.fromkeys(blobs, 0.0)
    for sample in samples:
        for blob, values in _activations(net, sample, blobs):
            absmax[blob] = max(absmax[blob], float(np.abs(values).max(initial=0.0)))
    counts = {b: np.zeros(HISTOGRAM_BINS, np.int64) for b in blobs}
    for sample in samples:
        for blob, values in _activations(net, sample, blobs):
            if absmax[blob] > 0:
                counts[blob] += histogram(values, absmax[blob])
    scale_of = {b: kl_scale(counts[b], absmax[b]) for b in blobs}
    table.input_scales = {name: float(_table_value(scale_of[blob])) for name, blob in inputs.items()}
    return table


# ---- rewriting (ncnn2int8) ----

def quantize_weights(weights: Any, scales: Any) -> Any:
    """ncnn's float2int8 per row: round half away from zero, clamp to ±127 (the SIMD form: add ±0.5, truncate)."""
    import numpy as np

    w = np.asarray(weights, np.float32).reshape(len(scales), -1)
    v = w * np.asarray(scales, np.float32)[:, None]
    return np.clip(np.trunc(v + np.copysign(np.float32(0.5), v)), -127, 127).astype(np.int8).ravel()


def scale_terms(layers: Sequence[ParamLayer], quantized: set[str], requantize: bool = True
                ) -> tuple[dict[str, int], dict[str, str]]:
    """int8_scale_term per quantized layer, and for fused ones the layer whose input scale becomes its output
    scale. ncnn2int8: 2 for Convolution and InnerProduct, 1 for ConvolutionDepthWise (per-group weight scales);
    +100 ("requantize") for a convolution whose output goes straight, or through one Split whose every branch
    goes straight, into int8 convolutions -- ncnn then writes int8 and the next layer skips quantizing."""
    terms = {layer.name: (1 if layer.type == "ConvolutionDepthWise" else 2) for layer in layers
             if layer.name in quantized}
    fused: dict[str, str] = {}
    if not requantize:
        return terms, fused
    conv = ("Convolution", "ConvolutionDepthWise")

    def next_conv(start: int, blob: str) -> ParamLayer | None:
        # ncnn2int8 takes the first later convolution reading the blob as its only input
        for later in layers[start:]:
            if later.type in conv and len(later.bottoms) == 1 and later.bottoms[0] == blob:
                return later
        return None

    for i, layer in enumerate(layers):
        if layer.type not in conv or layer.name not in quantized:
            continue
        target = next_conv(i + 1, layer.tops[0])
        if target is None:
            split_at = next((k for k in range(i + 1, len(layers)) if layers[k].type == "Split"
                             and len(layers[k].bottoms) == 1 and layers[k].bottoms[0] == layer.tops[0]), None)
            if split_at is None:
                continue
            branches = [next_conv(split_at + 1, top) for top in layers[split_at].tops]
            if any(b is None or b.name not in quantized for b in branches):
                continue
            target = branches[0]
        if target is not None and target.name in quantized:
            terms[layer.name] += 100
            fused[layer.name] = target.name
    return terms, fused


def _with_param(line: str, key: int, value: int) -> str:
    tokens = line.split()
    nb, nt = int(tokens[2]), int(tokens[3])
    head, params = tokens[:4 + nb + nt], tokens[4 + nb + nt:]
    params = [p for p in params if p.partition("=")[0] != str(key)] + [f"{key}={value}"]
    return " ".join(head + params)


def quantize(param_text: str, weights: bytes, table: CalibrationTable, requantize: bool = True) -> tuple[str, bytes]:
    """ncnn2int8 on one model: the layers the table names become int8, the rest is copied byte for byte."""
    import numpy as np

    layers, segments = read_model(param_text, weights)
    quantized = {layer.name for layer, segs in zip(layers, segments)
                 if layer.type in QUANTIZED_TYPES and segs and layer.name in table.input_scales}
    missing = sorted(n for n in quantized if n not in table.weight_scales)
    if missing:
        raise NcnnInt8Error(f"the calibration table has no weight scales for {', '.join(missing)}")
    terms, fused = scale_terms(layers, quantized, requantize)
    f32 = np.dtype("<f4")
    out = bytearray()
    lines = param_text.splitlines()
    header, body = lines[:2], [line for line in lines[2:] if line.strip()]
    for n, (layer, segs) in enumerate(zip(layers, segments)):
        if layer.name not in quantized:
            for seg in segs:
                out += weights[seg.offset:seg.offset + seg.size]
            continue
        scales = np.asarray(table.weight_scales[layer.name], np.float32)
        q = quantize_weights(decode(segs[0], weights), scales)
        out += struct.pack("<I", TAG_INT8) + q.tobytes() + b"\0" * (_align4(len(q)) - len(q))
        for seg in segs[1:]:  # the bias, untouched: ncnn adds it in float after dequantizing
            out += weights[seg.offset:seg.offset + seg.size]
        out += scales.astype(f32).tobytes()
        out += np.asarray([table.input_scales[layer.name]], f32).tobytes()
        if layer.name in fused:
            out += np.asarray([table.input_scales[fused[layer.name]]], f32).tobytes()
        body[n] = _with_param(layer.line, 8, terms[layer.name])
    return "\n".join(header + body) + "\n", bytes(out)


# ---- the cached pair the engines load ----

def int8_model(model: SourceModel, param: Path, weights: Path) -> tuple[Path, Path]:
    """The int8 .param/.bin for a converted fp32 pair, calibrated on `calibration_inputs(model)` and cached next
    to the fp32 files (whose folder is keyed by the source's content hash and input shapes) under a name that
    carries the calibration set and QUANTIZER_VERSION. Both engines (pip ncnn, dlbench) load the same files."""
    names = [i["name"] for i in model.inputs]
    stem = f"model.int8-kl-{calibration_key(model)}-q{QUANTIZER_VERSION}.ncnn"
    built: dict[str, bytes] = {}

    def build() -> dict[str, bytes]:
        # Deterministic (one thread, fixed inputs), so a crash between the two files and a rebuild of the missing
        # one still gives a matching pair; the .param depends only on the graph anyway.
        if not built:
            samples = [[s[n][0] if s[n].ndim == 4 else s[n] for n in names] for s in calibration_inputs(model)]
            text, data = quantize(param.read_text(), weights.read_bytes(), calibrate(param, weights, samples))
            built.update(param=text.encode(), bin=data)
        return built

    out_bin = cached_file(param.parent, stem + ".bin", lambda tmp: tmp.write_bytes(build()["bin"]))
    out_param = cached_file(param.parent, stem + ".param", lambda tmp: tmp.write_bytes(build()["param"]))
    return out_param, out_bin

