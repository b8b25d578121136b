"""Accuracy drift computation (pure) as specs."""

from __future__ import annotations

import numpy as np
import pytest

from devicelab.analysis.accuracy import agreement


def test_identical_outputs_agree_fully() -> None:
    ref = [np.random.default_rng(0).standard_normal((8, 1, 10)).astype(np.float32)]
    a = agreement(ref, [ref[0].copy()])
    assert a == {"cosine": pytest.approx(1.0), "max_abs_diff": 0.0, "top1_agreement": 1.0, "inputs": 8,
                 "reference": "onnxruntime fp32"}


def test_drift_is_measured() -> None:
    ref = np.zeros((4, 1, 3), np.float32)
    ref[:, 0, 0] = 1.0  # every input's top-1 is class 0
    got = ref.copy()
    got[0, 0] = [0.0, 1.0, 0.0]  # input 0 flips to class 1: orthogonal
    got[1, 0, 2] = 0.5  # input 1 keeps class 0, with some drift
    a = agreement([ref], [got])
    assert a["top1_agreement"] == 0.75
    assert a["max_abs_diff"] == 1.0
    assert a["cosine"] == pytest.approx((0.0 + 1 / np.sqrt(1.25) + 1 + 1) / 4)


def test_mismatched_outputs_are_refused() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        agreement([np.zeros((2, 10))], [np.zeros((2, 12))])
    with pytest.raises(ValueError, match="outputs"):
        agreement([np.zeros((2, 10))], [np.zeros((2, 10)), np.zeros((2, 1))])
