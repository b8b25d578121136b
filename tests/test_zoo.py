"""The zoo matches the published parameter and MAC counts, is deterministic, cached, and runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from devicelab import zoo


@pytest.fixture(scope="module")
def built() -> dict[str, bytes]:
    return {name: zoo.build_bytes(name) for name in zoo.ZOO}


@pytest.mark.parametrize("name", list(zoo.ZOO))
def test_params_and_macs_match_published_figures(built: dict[str, bytes], name: str) -> None:
    entry = zoo.ZOO[name]
    params, macs = zoo.count_params(built[name]), zoo.count_macs(built[name])
    # The references quote 3-4 significant figures; BN folding changes the count by < 0.1 %.
    assert params == pytest.approx(entry.params, rel=0.005)
    assert macs == pytest.approx(entry.macs, rel=0.005)


@pytest.mark.parametrize("name", list(zoo.ZOO))
def test_models_are_valid_and_run_on_onnxruntime(built: dict[str, bytes], name: str) -> None:
    import onnxruntime as ort

    model = onnx.load_from_string(built[name])
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == zoo.OPSET and model.ir_version == zoo.IR_VERSION
    sess = ort.InferenceSession(built[name], providers=["CPUExecutionProvider"])
    entry = zoo.ZOO[name]
    x = np.random.default_rng(0).standard_normal(entry.input_shape, dtype=np.float32)
    (y,) = sess.run(None, {zoo.INPUT_NAME: x})
    assert y.shape == (1, entry.classes)
    # Seeded weights keep activations O(1): logits neither vanish nor blow up (fp16/int8 stay meaningful).
    # (A trained model's logits on noise say nothing: tests/test_digits.py runs it on its data.)
    assert np.isfinite(y).all() and (entry.dataset is not None or 0.1 < float(y.std()) < 10)


def test_build_is_deterministic() -> None:
    assert zoo.build_bytes("squeezenet1_1") == zoo.build_bytes("squeezenet1_1")
    assert zoo.build_bytes("squeezenet1_1") != zoo.build_bytes("squeezenet1_1", seed=1)


def test_cache_builds_once_and_names_files_by_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = zoo.zoo_model("shufflenet_v2_x1_0", tmp_path)
    assert first.sha256 == zoo.sha256_file(first.path)
    assert first.sha256[:16] in first.path.name

    def no_build(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(zoo, "build_bytes", no_build)
    again = zoo.zoo_model("shufflenet_v2_x1_0", tmp_path)
    assert again == first


def test_user_model_and_inputs(tmp_path: Path) -> None:
    path = tmp_path / "mine.onnx"
    path.write_bytes(zoo.build_bytes("squeezenet1_1"))
    m = zoo.user_model(path)
    assert m.name == "mine" and m.source == "user" and m.bytes == path.stat().st_size
    assert zoo.onnx_inputs(path) == [{"name": "input", "shape": [1, 3, 224, 224], "dtype": "float32"}]
    assert zoo.onnx_inputs(path, {"input": (2, 3, 224, 224)})[0]["shape"] == [2, 3, 224, 224]
    with pytest.raises(zoo.DevicelabError, match="not among the inputs"):
        zoo.onnx_inputs(path, {"image": (1, 3, 8, 8)})
