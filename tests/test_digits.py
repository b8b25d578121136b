"""digits_cnn: the zoo's model with trained weights and labels (scikit-learn's handwritten digits, trained in numpy
when the zoo is built)."""

from __future__ import annotations

import numpy as np
import pytest

from devicelab import datasets, zoo, zoo_digits


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
