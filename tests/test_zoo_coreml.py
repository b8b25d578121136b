"""The zoo written as Core ML (devicelab.zoo_coreml) with the real coremltools: every zoo model at every precision
converts to an ML program package that validates — read back from disk, its MIL program rebuilt and type-checked by
coremltools — with the ONNX model's input and output names and shapes, the ONNX model's convolutions, and the very
weights of the ONNX model, read from the package's weight file and compared with the ONNX initializers. Then the
package cache and dlbench's Core ML preparation and staging. A prediction needs Core ML itself (macOS or an iPhone):
nothing here predicts."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from devicelab import zoo, zoo_coreml
from devicelab.engines.base import SourceModel

logging.getLogger("coremltools").setLevel(logging.ERROR)  # on Linux it warns at import that Core ML is absent
ct = pytest.importorskip("coremltools")  # the test extra installs it; without it nothing here can run

PRECISIONS = ("fp32", "fp16", "int8")
ONNX_TYPES = {1: "FLOAT32"}  # TensorProto.FLOAT
IOS16_SPEC_VERSION = 7


class _Packages(dict[tuple[str, str], Path]):
    """Zoo packages written on first use and kept for the module (all 18 take ~35 s on one core)."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder

    def __missing__(self, key: tuple[str, str]) -> Path:
        name, precision = key
        self[key] = zoo_coreml.write_package(zoo.build_graph(name), precision,
                                             self.folder / f"{name}-{precision}.mlpackage")
        return self[key]


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    return _Packages(tmp_path_factory.mktemp("coreml"))


def onnx_model(name: str) -> Any:
    import onnx

    return onnx.load_from_string(zoo.build_bytes(name))


def operations(spec: Any) -> list[Any]:
    (block,) = spec.mlProgram.functions["main"].block_specializations.values()
    return list(block.operations)


def attribute(op: Any, key: str) -> Any:
    return op.attributes[key]


def blob(reader: Any, value: Any) -> np.ndarray:
    """A tensor stored in the package's weight file, read by coremltools' own blob reader at the spec's offset."""
    t = value.type.tensorType
    shape = [d.constant.size for d in t.dimensions]
    read = {"FLOAT32": reader.read_float_data, "FLOAT16": reader.read_fp16_data, "INT8": reader.read_int8_data}
    kind = ct.proto.MIL_pb2.DataType.Name(t.dataType)
    data = np.asarray(read[kind](value.blobFileValue.offset))
    if kind == "FLOAT16":
        data = data.view(np.float16)
    return data.reshape(shape)


def stored_weights(package: Path) -> tuple[dict[str, np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray, int]], Any]:
    """Const tensors of the package by their original name (without coremltools' `_to_fp16` / `_quantized` suffixes):
    an array, or (int8 data, zero point, scale, axis) for a quantized weight."""
    from coremltools import libmilstoragepython

    model = ct.models.MLModel(str(package), skip_model_load=True)
    spec = model.get_spec()
    reader = libmilstoragepython._BlobStorageReader(str(Path(model.weights_dir) / "weight.bin"))
    out: dict[str, Any] = {}
    for op in operations(spec):
        name = op.outputs[0].name.removesuffix("_to_fp16").removesuffix("_quantized")
        if op.type == "const" and attribute(op, "val").HasField("blobFileValue"):
            out[name] = blob(reader, attribute(op, "val"))
        elif op.type == "constexpr_affine_dequantize":
            axis = attribute(op, "axis").immediateValue.tensor.ints.values[0]
            out[name] = (blob(reader, attribute(op, "quantized_data")), blob(reader, attribute(op, "zero_point")),
                         blob(reader, attribute(op, "scale")), axis)
    return out, spec


def onnx_weights(model: Any) -> dict[str, np.ndarray]:
    """The ONNX initializers of convolutions and fully connected layers by name, without the ':N' suffix
    (`conv_3.weight:7` → `conv_3_weight`, as MIL spells `conv_3.weight`)."""
    from onnx import numpy_helper

    weighted = {i for n in model.graph.node if n.op_type in ("Conv", "Gemm") for i in n.input[1:]}
    return {t.name.split(":")[0].replace(".", "_"): numpy_helper.to_array(t)
            for t in model.graph.initializer if t.name in weighted}


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("name", list(zoo.ZOO))
def test_every_zoo_model_converts_and_validates(packages: dict[tuple[str, str], Path], name: str,
                                                precision: str) -> None:
    from coremltools.converters.mil.frontend.milproto.load import load as milproto_load

    package = packages[(name, precision)]
    model = ct.models.MLModel(str(package), skip_model_load=True)  # the package as saved: manifest, spec, weights
    spec = model.get_spec()
    assert spec.WhichOneof("Type") == "mlProgram" and spec.specificationVersion == IOS16_SPEC_VERSION
    # The MIL program rebuilt from the saved spec and weights, every op type-checked, then the program validated.
    program = milproto_load(spec, spec.specificationVersion, model.weights_dir)
    program.validate()
    (output,) = program.functions["main"].outputs
    assert (output.name, tuple(output.shape)) == (zoo.OUTPUT_NAME, (1, zoo.ZOO[name].classes))

    # Inputs and outputs named, typed and shaped as the zoo's ONNX model's (fp16 computes inside, float32 outside).
    onnx = onnx_model(name)

    def described(features: Any) -> list[tuple[str, str, list[int]]]:
        return [(f.name, ct.proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(f.type.multiArrayType.dataType),
                 list(f.type.multiArrayType.shape)) for f in features]

    def onnx_described(values: Any) -> list[tuple[str, str, list[int]]]:
        return [(v.name, ONNX_TYPES[v.type.tensor_type.elem_type], [d.dim_value for d in v.type.tensor_type.shape.dim])
                for v in values]

    assert described(spec.description.input) == onnx_described(onnx.graph.input)
    assert described(spec.description.output) == onnx_described(onnx.graph.output)

    # The ONNX model's convolutions, one for one, with its strides, padding and groups.
    def ints(op: Any, key: str) -> list[int]:
        return list(attribute(op, key).immediateValue.tensor.ints.values) if key in op.attributes else []

    consts = {op.outputs[0].name: op for op in operations(spec) if op.type == "const"}
    convs = {op.outputs[0].name.removesuffix("_cast_fp16"): op for op in operations(spec) if op.type == "conv"}
    onnx_convs = {n.name: {a.name: list(a.ints) if a.ints else a.i for a in n.attribute}
                  for n in onnx.graph.node if n.op_type == "Conv"}
    assert len(convs) == len(onnx_convs) > 0
    for onnx_name, attrs in onnx_convs.items():
        op = convs[onnx_name]  # the ONNX Conv's output is `conv_N_pre` where an activation follows, as in MIL
        args = {key: ints(consts[op.inputs[key].arguments[0].name], "val") or
                list(attribute(consts[op.inputs[key].arguments[0].name], "val").immediateValue.tensor.ints.values)
                for key in ("strides", "pad", "groups")}
        assert args["strides"] == attrs["strides"] and args["pad"] == attrs["pads"], onnx_name
        assert args["groups"] == [attrs["group"]], onnx_name

    # Every weight and bias of the ONNX model is in the package's weight file: equal in fp32, the same values rounded
    # to float16 in fp16, within half a quantization step in int8 (whose scales are per output channel, symmetric).
    stored, _ = stored_weights(package)
    expected = onnx_weights(onnx)
    assert set(expected) <= set(stored) and expected
    for key, want in expected.items():
        got = stored[key]
        if precision == "fp32":
            assert isinstance(got, np.ndarray) and got.dtype == np.float32 and np.array_equal(got, want), key
        elif precision == "fp16":
            assert isinstance(got, np.ndarray) and got.dtype == np.float16, key
            assert np.array_equal(got, want.astype(np.float16)), key
        elif key.endswith("_bias"):  # linear_quantize_weights leaves biases in float
            assert isinstance(got, np.ndarray) and np.array_equal(got, want), key
        else:
            data, zero, scale, axis = got
            assert data.dtype == np.int8 and axis == 0 and not zero.any(), key
            per_channel = scale.reshape((-1,) + (1,) * (want.ndim - 1))
            assert np.all(np.abs(data.astype(np.float32) * per_channel - want) <= per_channel / 2 + 1e-7), key
            # Symmetric per-channel: each output channel's largest weight lands on ±127.
            assert np.all(np.abs(data.reshape(len(data), -1)).max(axis=1) == 127), key


def test_fp16_and_int8_packages_are_smaller(packages: dict[tuple[str, str], Path]) -> None:
    """What the precisions are for: fp16 halves the weights, int8 weights quarter them (the scales cost a little)."""
    def size(path: Path) -> int:
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())

    for name in ("mobilenet_v2", "resnet18"):
        fp32, fp16, int8 = (size(packages[(name, p)]) for p in PRECISIONS)
        assert 0.45 < fp16 / fp32 < 0.55 and 0.2 < int8 / fp32 < 0.3, (name, fp32, fp16, int8)


def test_unknown_precision_names_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match="precision: 'bf16' is not one of fp32, fp16, int8"):
        zoo_coreml.to_mlmodel(zoo.build_graph("digits_cnn"), "bf16")


def test_package_cache_builds_once_and_never_leaves_half_a_package(tmp_path: Path) -> None:
    graph = zoo.build_graph("digits_cnn")
    built: list[Path] = []

    def build(out: Path) -> None:
        built.append(out)
        zoo_coreml.write_package(graph, "fp16", out)

    key = zoo_coreml.package_name("ab" * 32, "fp16")
    first = zoo_coreml.cached_package(tmp_path, key, build)
    again = zoo_coreml.cached_package(tmp_path, key, build)
    assert first == again == tmp_path / key and len(built) == 1 and (first / "Manifest.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [key]  # no build folder left behind

    def broken(out: Path) -> None:
        out.mkdir()
        (out / "Data").mkdir()  # half a package: no manifest
        raise OSError("disk full")

    other = zoo_coreml.package_name("cd" * 32, "fp16")
    with pytest.raises(OSError, match="disk full"):
        zoo_coreml.cached_package(tmp_path, other, broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == [key]


def _source(name: str, data_dir: Path) -> SourceModel:
    model = zoo.zoo_model(name, data_dir / "zoo")
    return SourceModel(name, model.path, model.sha256, tuple(zoo.onnx_inputs(model.path)), zoo=True)


def test_dlbench_prepares_one_package_for_every_compute_unit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Core ML's compute units are chosen when the app loads the model: coreml-gpu reuses coreml-ane's package (cached
    by the source model's content and precision), and each config carries its compute units to the runner app."""
    from devicelab.engines.dlbench import ENGINE

    monkeypatch.setenv("DEVICELAB_DATA", str(tmp_path))
    source = _source("squeezenet1_1", tmp_path)
    cache = tmp_path / "converted" / "dlbench"
    ane = ENGINE.prepare_for(source, "fp16", "coreml-ane", cache)
    stamp = (ane.path / "Manifest.json").stat().st_mtime_ns
    gpu = ENGINE.prepare_for(source, "fp16", "coreml-gpu", cache)
    assert ane.path == gpu.path == tmp_path / "converted" / "coreml" / f"{source.sha256[:16]}-fp16-w1.mlpackage"
    assert (gpu.path / "Manifest.json").stat().st_mtime_ns == stamp  # not written again
    assert ane.options == {"library": "coreml", "compute_units": "cpuAndNeuralEngine"}
    assert gpu.options["compute_units"] == "cpuAndGPU" and any("float16" in n for n in gpu.notes)
    fp32_ane = ENGINE.prepare_for(source, "fp32", "coreml-ane", cache)
    assert any("Neural Engine computes in fp16 only" in n for n in fp32_ane.notes)

    # The runner's folder: seeded inputs as files and the package linked in file by file at its place.
    folder = tmp_path / "stage"
    folder.mkdir()
    config = ENGINE.stage({"model": str(ane.path), "inputs": list(source.inputs), "options": dict(ane.options),
                           "seed": 1, "backend": "coreml-ane"}, folder)
    assert config["model"] == "model.mlpackage" and config["options"]["compute_units"] == "cpuAndNeuralEngine"
    staged = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert staged == sorted(["input0.f32", "model.mlpackage/Manifest.json",
                             "model.mlpackage/Data/com.apple.CoreML/model.mlmodel",
                             "model.mlpackage/Data/com.apple.CoreML/weights/weight.bin"])
    linked = ct.models.MLModel(str(folder / "model.mlpackage"), skip_model_load=True)
    assert linked.get_spec() == ct.models.MLModel(str(ane.path), skip_model_load=True).get_spec()


def test_dlbench_cpu_keeps_ncnn_and_user_models_get_no_core_ml(tmp_path: Path) -> None:
    from devicelab.engines.dlbench import ENGINE

    user = SourceModel("mine", tmp_path / "mine.onnx", "ef" * 32, ({"name": "x", "shape": [1, 3], "dtype": "float32"},))
    with pytest.raises(RuntimeError, match="devicelab writes Core ML for zoo models only"):
        ENGINE.prepare_for(user, "fp32", "coreml", tmp_path / "converted" / "dlbench")
    assert not (tmp_path / "converted" / "coreml").exists()


def test_package_files_are_relative_and_stable(packages: dict[tuple[str, str], Path]) -> None:
    package = packages[("digits_cnn", "int8")]
    files = zoo_coreml.package_files(package)
    assert [name for name, _ in files] == [f"{package.name}/Data/com.apple.CoreML/model.mlmodel",
                                          f"{package.name}/Data/com.apple.CoreML/weights/weight.bin",
                                          f"{package.name}/Manifest.json"]
    copy = package.parent / "copy" / package.name
    for name, path in files:
        (copy.parent / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, copy.parent / name)
    assert ct.models.MLModel(str(copy), skip_model_load=True).get_spec() == \
        ct.models.MLModel(str(package), skip_model_load=True).get_spec()


def test_a_package_has_one_content_hash(packages: dict[tuple[str, str], Path], tmp_path: Path) -> None:
    """What identifies a converted model (the accuracy record's variant, content-addressed pushes) works on a package
    folder: the same files give the same hash wherever they are, other weights another one."""
    from devicelab.paths import sha256_file

    package = packages[("digits_cnn", "fp32")]
    copy = shutil.copytree(package, tmp_path / "elsewhere.mlpackage")
    assert sha256_file(copy) == sha256_file(package) != sha256_file(packages[("digits_cnn", "fp16")])
    weights = copy / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert sha256_file(copy) != sha256_file(package)


def test_core_ml_on_the_host_is_an_unsupported_row_through_the_cli(env: dict[str, str], tmp_path: Path) -> None:
    """End to end through `devicelab run`: Core ML backends on this Linux host are stored as unsupported rows with the
    reason (nothing is converted, nothing runs)."""
    from helpers import run_json

    env = dict(env, DEVICELAB_DATA=str(tmp_path / "data"))  # its own data folder: nothing converted shows there
    code, out, err = run_json("run", "--engine", "dlbench", "--model", "squeezenet1_1", "--threads", "1",
                              "--precision", "fp16", "--backend", "coreml-ane", "--backend", "coreml-gpu", env=env)
    assert code == 0, err
    # The Core ML reason, not what the host lacks besides (a dlbench build): there is nothing to build for it here.
    assert sorted((r["backend"], r["precision"], r["status"], r["reason"]) for r in out["results"]) == [
        ("coreml-ane", "fp16", "unsupported", "Core ML runs only on iPhones/iPads (the ios device kind)"),
        ("coreml-gpu", "fp16", "unsupported", "Core ML runs only on iPhones/iPads (the ios device kind)")]
    assert not (Path(env["DEVICELAB_DATA"]) / "converted" / "coreml").exists()
