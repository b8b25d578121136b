"""Plan expansion as specs: pure data in, configs and unsupported rows out."""

from __future__ import annotations

from pathlib import Path


from devicelab.config import parse_suite
from devicelab.facts import Cluster, DeviceFacts, parse_cpu_list
from devicelab.engines.base import EngineInfo
from devicelab.plan import affinity_set, expand, resolve_cpus
from devicelab.zoo import ModelFile

HOST = DeviceFacts("host", "host", "cpu", "Linux", "x86_64", (0, 1), (Cluster((0, 1), 1024),))
PHONE = DeviceFacts("phone", "host", "soc", "Linux", "arm64", tuple(range(8)),
                    (Cluster((0, 1, 2, 3), 400, 1800000), Cluster((4, 5, 6), 870, 2400000), Cluster((7,), 1024, 3000000)))
ORT = EngineInfo("onnxruntime", "1.0", True, None, ("onnx",), ("fp32",), ("cpu",), ("host",))
MISSING = EngineInfo("onnxruntime", None, False, "not installed", ("onnx",), ("fp32",), ("cpu",), ("host",))
MODELS = {n: ModelFile(n, Path(f"/zoo/{n}.onnx"), n * 4, 100, "zoo") for n in ("mobilenet_v2", "resnet18")}


def suite(**raw: object):
    base = {"models": ["mobilenet_v2", "resnet18"], "engines": ["onnxruntime"], "threads": [1, "all"]}
    base.update(raw)
    return parse_suite(base, "test")


def test_expands_the_cross_product() -> None:
    rows = expand(suite(), [HOST], {("onnxruntime", ""): ORT}, MODELS, seed=1)
    assert len(rows) == 4 and all(r.runnable for r in rows)
    assert sorted((r.config.model, r.config.threads, r.config.cpus) for r in rows) == [
        ("mobilenet_v2", 1, (1,)), ("mobilenet_v2", 2, (0, 1)), ("resnet18", 1, (1,)), ("resnet18", 2, (0, 1))]


def test_impossible_combinations_become_unsupported_rows_with_reasons() -> None:
    rows = expand(suite(precisions=["fp32", "int8"], threads=[1, 4]), [HOST], {("onnxruntime", ""): ORT}, MODELS, 1)
    assert len(rows) == 8
    unsupported = [r for r in rows if not r.runnable]
    assert len(unsupported) == 6 and rows[:6] == unsupported  # unsupported rows come first
    reasons = {r.unsupported for r in unsupported}
    assert "onnxruntime supports precisions fp32, not int8" in reasons
    assert any("4 threads > 2 CPUs" in r for r in reasons)


def test_missing_engine_is_unsupported_not_an_error() -> None:
    rows = expand(suite(), [HOST], {("onnxruntime", ""): MISSING}, MODELS, 1)
    assert all(r.unsupported and "not installed" in r.unsupported for r in rows)


def test_threads_all_and_duplicates_collapse() -> None:
    one_cpu = DeviceFacts("tiny", "host", "cpu", "Linux", "x86_64", (0,), (Cluster((0,), None),))
    rows = expand(suite(threads=[1, "all"]), [one_cpu], {("onnxruntime", ""): ORT}, MODELS, 1)
    assert len(rows) == 2 and {r.config.threads for r in rows} == {1}


def test_seeded_order_is_recorded_and_reproducible() -> None:
    s = suite(models=["mobilenet_v2", "resnet18"], threads=[1, 2])
    order = lambda seed: [r.config.identity_key() for r in expand(s, [HOST], {("onnxruntime", ""): ORT}, MODELS, seed)]
    assert order(5) == order(5)
    assert len({tuple(order(seed)) for seed in range(10)}) > 1


def test_affinity_on_big_little() -> None:
    assert affinity_set(PHONE, "big") == (7,)
    assert affinity_set(PHONE, "little") == (0, 1, 2, 3)
    assert affinity_set(PHONE, "all") == tuple(range(8))
    assert resolve_cpus(PHONE, "little", 2) == (2, (2, 3))  # the highest-numbered cores of the set
    assert resolve_cpus(PHONE, "little", "all") == (4, (0, 1, 2, 3))
    assert resolve_cpus(PHONE, "4-6", 2) == (2, (4, 5, 6))  # explicit lists are used as given
    assert "oversubscribe" in resolve_cpus(PHONE, "big", 2)
    assert "no little cores" in affinity_set(HOST, "little")
    assert "CPU 9 does not exist" in affinity_set(PHONE, "8,9".replace("8,", ""))
    assert parse_cpu_list("0,2-4,2") == (0, 2, 3, 4)


def test_identity_and_series_keys() -> None:
    a = expand(suite(threads=[1]), [HOST], {("onnxruntime", ""): ORT}, MODELS, 1)[0].config
    newer = EngineInfo("onnxruntime", "2.0", True, None, ("onnx",), ("fp32",), ("cpu",), ("host",))
    b = expand(suite(threads=[1]), [HOST], {("onnxruntime", ""): newer}, MODELS, 1)[0].config
    assert a.model == b.model and a.identity_key() != b.identity_key()  # a new build is a new config...
    assert a.series_key() == b.series_key()  # ...continuing the same series


# ---- Core ML: backends and a format that exist on iPhones only (dlbench's declarations, as `devicelab engines` reads
# them), planned on an iPhone's facts next to the host's and an Android phone's.

IPHONE = DeviceFacts("iphone", "ios", "iPhone14,2", "iOS 16.7.2", "arm64", tuple(range(6)),
                     (Cluster((0, 1, 2, 3), None), Cluster((4, 5), None)))
ANDROID = DeviceFacts("pixel", "android", "Pixel 7", "Android 14", "arm64-v8a", tuple(range(8)), PHONE.clusters)
COREML = ["coreml", "coreml-cpu", "coreml-gpu", "coreml-ane"]


def dlbench_info(**changes: object) -> EngineInfo:
    """The dlbench engine's real declarations, as if it were built (availability is this machine's, not the plan's)."""
    import dataclasses

    from devicelab.engines.dlbench import ENGINE

    return dataclasses.replace(ENGINE.info(), **{"version": "1", "available": True, "reason": None, "kind_reasons": {},
                                                 "backend_reasons": {}, **changes})


def coreml_rows(info: EngineInfo, models: dict[str, ModelFile] = MODELS, **raw: object
                ) -> dict[tuple[str, str, str], str | None]:
    named = [m.name if m.source == "zoo" else {"path": str(m.path), "name": m.name} for m in models.values()]
    s = suite(engines=["dlbench"], models=named, threads=[1], backends=["cpu", *COREML], **raw)
    rows = expand(s, [HOST, ANDROID, IPHONE], {("dlbench", ""): info}, models, seed=1)
    return {(r.config.device, r.config.precision, r.config.backend): r.unsupported for r in rows
            if r.config.model == next(iter(models))}


def test_core_ml_runs_only_on_iphones_with_the_reason_elsewhere() -> None:
    from devicelab.engines.dlbench import IOS_ONLY

    assert IOS_ONLY == "Core ML runs only on iPhones/iPads (the ios device kind)"
    rows = coreml_rows(dlbench_info(), precisions=["fp32", "fp16", "int8"])
    for precision in ("fp32", "fp16", "int8"):
        for backend in COREML:
            assert rows[("host", precision, backend)] == IOS_ONLY
            assert rows[("pixel", precision, backend)] == IOS_ONLY
            assert rows[("iphone", precision, backend)] is None  # a zoo model: devicelab writes it as Core ML
        assert rows[("host", precision, "cpu")] is None and rows[("iphone", precision, "cpu")] is None


def test_core_ml_has_no_bf16_but_ncnn_on_the_iphone_does() -> None:
    rows = coreml_rows(dlbench_info(), precisions=["bf16"])
    assert {rows[("iphone", "bf16", b)] for b in COREML} == {"Core ML computes in fp32 or fp16 (no bf16)"}
    assert rows[("iphone", "bf16", "cpu")] is None
    # Elsewhere the kind is the reason: no bf16 advice for a device that has no Core ML at all.
    assert rows[("host", "bf16", "coreml-ane")] == "Core ML runs only on iPhones/iPads (the ios device kind)"


def test_a_users_onnx_model_reaches_ncnn_on_the_iphone_but_not_core_ml(tmp_path: Path) -> None:
    from devicelab import zoo

    (tmp_path / "mine.onnx").write_bytes(zoo.build_bytes("digits_cnn"))  # the suite reads it: a real ONNX file
    user = {"mine": ModelFile("mine", tmp_path / "mine.onnx", "ef" * 32, 4, "user")}
    rows = coreml_rows(dlbench_info(), models=user)
    assert rows[("iphone", "fp32", "coreml-ane")] == (
        "dlbench coreml-ane reads coreml; this model is onnx (devicelab writes Core ML for zoo models only)")
    assert rows[("iphone", "fp32", "cpu")] is None


def test_a_missing_converter_is_the_reason_on_iphones() -> None:
    why = "writing Core ML models needs coremltools (pip install 'devicelab[coreml]')"
    rows = coreml_rows(dlbench_info(backend_reasons={b: why for b in COREML}))
    assert {rows[("iphone", "fp32", b)] for b in COREML} == {why}
    assert rows[("iphone", "fp32", "cpu")] is None and rows[("host", "fp32", "coreml")].startswith("Core ML runs only")


def test_the_engine_says_when_coremltools_is_missing(monkeypatch: object) -> None:
    import importlib.util

    import pytest

    from devicelab.engines import dlbench

    assert dlbench.ENGINE.backend_reason("coreml-gpu") is None  # the test extra installs coremltools
    assert dlbench.ENGINE.availability() == (True, None)  # an iPhone needs no build here: kinds say what they lack
    assert dlbench.ENGINE.kind_reason("ios") is None
    real = importlib.util.find_spec
    mp: pytest.MonkeyPatch = monkeypatch  # type: ignore[assignment]
    mp.setattr(dlbench.importlib.util, "find_spec", lambda name, *a: None if name == "coremltools" else real(name, *a))
    assert dlbench.ENGINE.backend_reason("coreml-gpu") == (
        "writing Core ML models needs coremltools (pip install 'devicelab[coreml]')")
    assert dlbench.ENGINE.backend_reason("cpu") is None  # pnnx, not coremltools, is what ncnn's backend needs
    info = dlbench.ENGINE.info().to_dict()
    assert info["only_on"]["coreml-ane"] == {"kinds": ["ios"], "reason": dlbench.IOS_ONLY}
    assert info["only_on"]["coreml"]["kinds"] == ["ios"] and info["backend_formats"]["coreml-cpu"] == ["coreml"]


def test_mnns_tool_never_files_nnapi_as_core_ml(tmp_path: Path) -> None:
    """benchmark.out's MNN_FORWARD_NN is NNAPI on Android and Core ML only on Apple systems, which the tool adapters do
    not drive: its `coreml` backend gets the Core ML reason on every device it runs on, its nnapi stays."""
    import dataclasses

    from devicelab.engines.base import IOS_ONLY
    from devicelab.engines.tool_mnn_benchmark import ENGINE

    info = dataclasses.replace(ENGINE.info(), version="1", available=True, reason=None, kind_reasons={})
    binary = tmp_path / "benchmark.out"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)  # the suite checks the user's build exists; the plan runs nothing
    s = suite(engines=[{"name": "tool:mnn-benchmark", "options": {"binary": str(binary)}}], threads=[1],
              backends=["coreml", "nnapi"])
    rows = expand(s, [HOST, ANDROID], {("tool:mnn-benchmark", ""): info}, MODELS, seed=1)
    assert {r.unsupported for r in rows if r.config.backend == "coreml"} == {IOS_ONLY}
    assert any(r.runnable for r in rows if r.config.backend == "nnapi" and r.config.device == "pixel")
