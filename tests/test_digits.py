"""digits_cnn: the zoo's model with trained weights and labels (scikit-learn's handwritten digits, trained in numpy
when the zoo is built), and accuracy against its labels measured end to end on every kind of runner."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from devicelab import datasets, zoo, zoo_digits
from devicelab.engines.base import (SourceModel, accuracy_feeds, accuracy_key, calibration_inputs, calibration_key,
                                    read_feed_files)
from devicelab.session import stage_dataset
from helpers import run_json, write_suite


def _source(tmp_path: Path) -> SourceModel:
    mf = zoo.zoo_model("digits_cnn", tmp_path)
    return SourceModel(mf.name, mf.path, mf.sha256, tuple(zoo.onnx_inputs(mf.path)), zoo=True, dataset="digits")


def test_digits_cnn_is_accurate_on_the_test_split_through_onnxruntime() -> None:
    import onnxruntime as ort

    sess = ort.InferenceSession(zoo.build_bytes("digits_cnn"), providers=["CPUExecutionProvider"])
    test = datasets.split("digits", "test")
    logits = np.concatenate([sess.run(None, {zoo.INPUT_NAME: x[None]})[0] for x in test.images])
    accuracy = float((logits.argmax(axis=1) == test.labels).mean())
    assert accuracy >= 0.9, accuracy
    # The numpy forward pass the trainer measured with is the same network.
    trained = zoo_digits.train(zoo.SEED + sum(b"digits_cnn"))
    assert trained.test_accuracy == pytest.approx(accuracy, abs=1 / len(test))


def test_split_and_weights_are_deterministic() -> None:
    train, test = datasets.split("digits", "train"), datasets.split("digits", "test")
    assert (len(train), len(test)) == (1437, 360) and test.images.shape == (360, 1, 8, 8)
    assert 0.0 <= float(train.images.min()) and float(train.images.max()) <= 1.0
    assert sorted(set(test.labels.tolist())) == list(range(10))
    first = zoo.build_bytes("digits_cnn")
    zoo_digits.train.cache_clear()  # train again, not the process's cached weights
    assert zoo.build_bytes("digits_cnn") == first
    assert zoo.build_bytes("digits_cnn", seed=1) != first


def test_the_data_set_feeds_accuracy_and_calibration_and_reaches_runners_as_files(tmp_path: Path) -> None:
    source = _source(tmp_path / "zoo")
    test, train = datasets.split("digits", "test"), datasets.split("digits", "train")
    feeds = accuracy_feeds(source, seed=1, count=4)  # the whole test split, whatever the seeded count
    assert len(feeds) == 360 and np.array_equal(feeds[7]["input"][0], test.images[7])
    assert accuracy_key(source, 1, 4) == "digits-test"
    calib = calibration_inputs(source)  # calibrated on train: never judged on the images it was calibrated on
    assert len(calib) == 16 and np.array_equal(calib[3]["input"][0], train.images[3])
    assert calibration_key(source) == "digits-train16"
    folder = tmp_path / "stage"
    folder.mkdir()
    config = {"inputs": list(source.inputs), "seed": 1, "accuracy_inputs": 4, "outputs_file": "outputs.npz"}
    staged = stage_dataset(config, source, folder)
    assert staged["accuracy_inputs"] == 360 and len(staged["accuracy_files"]) == 360
    spec = staged["accuracy_files"][41][0]
    assert spec["file"] == "accuracy42-input0.f32" and (folder / spec["file"]).stat().st_size == 64 * 4
    assert np.array_equal(read_feed_files(staged["accuracy_files"][41], folder)["input"], test.images[41][None])


def _by(results: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["engine"], r["precision"]): r for r in results}


@pytest.mark.slow
def test_run_stores_accuracy_against_labels_for_onnxruntime_and_ncnn(env: dict[str, str], tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "s.yaml", models=["digits_cnn"], engines=["onnxruntime", "ncnn"],
                        precisions=["fp32", "int8"])
    code, out, err = run_json("run", "--suite", str(suite), env=env)
    assert code == 0, err
    rows = _by(out["results"])
    assert set(rows) == {(e, p) for e in ("onnxruntime", "ncnn") for p in ("fp32", "int8")}
    assert all(r["status"] == "ok" for r in rows.values()), [r["reason"] for r in rows.values()]
    for (engine, precision), r in rows.items():
        acc = r["accuracy"]
        # the whole test split, not the suite's 4 seeded inputs
        assert acc["inputs"] == acc["label_inputs"] == 360 and acc["dataset"].startswith("digits: test split")
        assert 0.0 <= acc["label_accuracy"] <= 1.0 and acc["reference_label_accuracy"] >= 0.9
        if precision == "fp32":  # every engine's fp32 is the reference, to rounding
            assert acc["label_accuracy"] == acc["reference_label_accuracy"] and acc["top1_inputs"] >= 350
    assert rows[("onnxruntime", "int8")]["accuracy"]["label_accuracy"] >= 0.9
    html = Path(out["report"]).read_text()
    assert "accuracy (labels)" in html and "/ fp32 " in html  # gate A reads label accuracy relative to fp32


@pytest.mark.slow
def test_every_runner_kind_measures_digits_against_labels(env: dict[str, str], tmp_path: Path,
                                                          native_host: dict[str, Any]) -> None:
    # A runner written from docs/runner-protocol.md: it reads the accuracy inputs from `accuracy_files` (here by
    # handing the config to devicelab's own Python runner with ONNX Runtime as its engine).
    runner = tmp_path / "runner.py"
    runner.write_text(f"#!{sys.executable}\n" + "\n".join([
        "import json, os, sys",
        "config = json.load(open(sys.argv[1]))",
        "assert len(config['accuracy_files']) == config['accuracy_inputs']",
        "config['engine'] = 'onnxruntime'",
        "json.dump(config, open('delegated.json', 'w'))",
        "os.execv(sys.executable, [sys.executable, '-m', 'devicelab.runners.host', 'delegated.json'])", ""]))
    runner.chmod(0o755)
    suite = write_suite(tmp_path / "s.yaml", models=["digits_cnn"], precisions=["fp32", "int8"],
                        engines=["mnn", "litert", "openvino", "dlbench",
                                 {"name": "protocol", "options": {"binary": str(runner)}}])
    code, out, err = run_json("run", "--suite", str(suite), env=env)
    assert code == 0, err
    rows = _by(out["results"])
    assert all(r["status"] == "ok" for r in rows.values()), {k: r["reason"] for k, r in rows.items()}
    assert set(rows) == {(e, p) for e in ("mnn", "litert", "openvino", "dlbench", "protocol") for p in ("fp32", "int8")}
    for (engine, precision), r in rows.items():
        acc = r["accuracy"]
        assert acc["label_inputs"] == 360, (engine, precision)
        if precision == "fp32" or engine == "protocol":  # the protocol runner runs the ONNX file as it is
            assert acc["label_accuracy"] == acc["reference_label_accuracy"] >= 0.9, (engine, acc)
        elif engine != "dlbench":  # dlbench int8 runs ncnn's KL-calibrated file (README, "Engines")
            assert acc["label_accuracy"] >= 0.9, (engine, acc)
