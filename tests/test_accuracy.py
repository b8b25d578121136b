"""Accuracy drift computation (pure) as specs."""

from __future__ import annotations

import numpy as np
import pytest

from devicelab.analysis.accuracy import agreement, label_accuracy, label_text, top1_text


def test_identical_outputs_agree_fully() -> None:
    ref = [np.random.default_rng(0).standard_normal((8, 1, 10)).astype(np.float32)]
    a = agreement(ref, [ref[0].copy()])
    assert a == {"cosine": pytest.approx(1.0), "max_abs_diff": 0.0, "top1_agreement": 1.0, "top1_inputs": 8,
                 "top1_min_margin": 0.0, "inputs": 8, "reference": "onnxruntime fp32"}


def test_drift_is_measured() -> None:
    ref = np.zeros((4, 1, 3), np.float32)
    ref[:, 0, 0] = 1.0  # every input's top-1 is class 0, by a margin of 1
    got = ref.copy()
    got[0, 0] = [0.4, 0.6, 0.0]  # input 0 flips to class 1 although each logit moved by less than the margin
    got[1, 0, 2] = 0.5  # input 1 keeps class 0, with some drift
    a = agreement([ref], [got])
    assert a["top1_min_margin"] == pytest.approx(0.6) and a["top1_inputs"] == 4
    assert a["top1_agreement"] == 0.75
    assert a["max_abs_diff"] == pytest.approx(0.6)
    cos0 = 0.4 / np.sqrt(0.52)
    assert a["cosine"] == pytest.approx((cos0 + 1 / np.sqrt(1.25) + 1 + 1) / 4)


def test_top1_counts_only_inputs_whose_margin_exceeds_the_variants_error() -> None:
    ref = np.zeros((4, 5), np.float32)
    ref[:2, 0] = 2.0  # clear decisions: margin 2
    ref[2:, 0] = 0.05  # near ties: margin 0.05
    got = ref.copy()
    got[2] = [0.0, 0.3, 0.0, 0.0, 0.0]  # a near tie flips: below the variant's error, so it is not counted
    got[3, 4] = 0.3
    a = agreement([ref], [got])
    assert a["top1_min_margin"] == pytest.approx(0.3)
    assert a["top1_inputs"] == 2 and a["top1_agreement"] == 1.0
    # One large error anywhere raises the bar for every input: the damaged input does not drop out alone.
    got[0, 0] = -1.0
    a = agreement([ref], [got])
    assert a["top1_inputs"] == 0 and a["top1_agreement"] is None


def test_readers_never_show_an_unqualified_top1() -> None:
    assert top1_text({"top1_agreement": 0.5, "top1_inputs": 4, "inputs": 16}) == "50% over 4/16"
    assert top1_text({"top1_agreement": None, "top1_inputs": 0, "inputs": 16}) == "— over 0/16"
    # A row stored before top1_inputs existed counted every input, tied logits too: not shown as a number.
    assert top1_text({"top1_agreement": 0.19, "cosine": 0.9986, "inputs": 16}) == "—"
    assert top1_text(None) == "—"
    assert label_text({"label_accuracy": 0.98125, "label_inputs": 360}) == "98.1% of 360"
    assert label_text({"top1_agreement": 1.0}) == "—"


def test_label_accuracy() -> None:
    outputs = np.eye(4, dtype=np.float32)[[0, 1, 2, 2]][:, None, :]
    assert label_accuracy([outputs], np.array([0, 1, 2, 3])) == 0.75
    with pytest.raises(ValueError, match="labels"):
        label_accuracy([outputs], np.array([0, 1]))


def test_mismatched_outputs_are_refused() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        agreement([np.zeros((2, 10))], [np.zeros((2, 12))])
    with pytest.raises(ValueError, match="outputs"):
        agreement([np.zeros((2, 10))], [np.zeros((2, 10)), np.zeros((2, 1))])


def test_level_logits_give_no_top1_agreement() -> None:
    # Seeded weights leave the logits almost level: the fp32 top-1 margin (~1e-4) is far below int8's error (~1e-2),
    # so whether the arg-max flips is noise. That must not be shown as an agreement fraction.
    rng = np.random.default_rng(3)
    ref = (0.5 + 1e-4 * rng.standard_normal((16, 1, 1000))).astype(np.float32)
    got = (ref + 1e-2 * rng.standard_normal(ref.shape)).astype(np.float32)
    a = agreement([ref], [got])
    assert a["top1_agreement"] is None
    assert a.get("top1_inputs") == 0
    assert a["cosine"] > 0.999 and a["inputs"] == 16
