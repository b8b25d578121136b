"""The scorecard's accuracy gate and every reader of top-1 agreement (pure, over synthetic Results): gate A reads the
label accuracy relative to fp32 where a model has labels, the margin-qualified top-1 elsewhere, and nothing — no
contest score, never a noise number — where neither exists."""

from __future__ import annotations

from typing import Any

import pytest

from devicelab import report
from devicelab.analysis.tables import slides_tables
from devicelab.report import accuracy_gate, contest_score, gate_measure
from devicelab.result import OK, Config, Result, RunProtocol
from devicelab.store import RunRecord


def _result(model: str, precision: str, accuracy: dict[str, Any] | None, median_s: float, size: int) -> Result:
    cfg = Config("host", "ncnn", "", "1.0", model, "ab" * 32, size, precision, "cpu", 1, (1,), "big")
    return Result.for_config("run1", cfg, OK, samples_s=(median_s,) * 5, median_s=median_s, p90_s=median_s,
                             warmups=1, accuracy=accuracy, protocol=RunProtocol({}, artifact_bytes=size))


def _acc(top1: float | None, qualified: int, cosine: float = 0.9986, **more: Any) -> dict[str, Any]:
    return {"cosine": cosine, "max_abs_diff": 0.4, "top1_agreement": top1, "top1_inputs": qualified,
            "top1_min_margin": 0.4, "inputs": 16, "reference": "onnxruntime fp32", **more}


FP32 = _acc(1.0, 16, cosine=1.0)


def test_gate_reads_label_accuracy_relative_to_fp32_then_qualified_top1_then_nothing() -> None:
    labelled = _acc(1.0, 350, label_accuracy=0.95, label_inputs=360, reference_label_accuracy=0.98)
    value, basis = gate_measure(labelled, {**FP32, "label_accuracy": 0.98})
    assert value == pytest.approx(0.95 / 0.98) and "accuracy 95.0% / fp32 98.0%" in basis
    # top-1 agreement is 1.0 there, but the labels decide: 0.969 < 0.97
    assert accuracy_gate(value) == 0.9
    assert gate_measure(_acc(0.75, 4), FP32) == (0.75, "top-1 75% over 4/16")
    value, basis = gate_measure(_acc(None, 0), FP32)
    assert value is None and "0/16" in basis
    assert gate_measure({"cosine": 0.9986, "top1_agreement": 0.19, "inputs": 16}, FP32)[0] is None  # stored before
    assert accuracy_gate(None) is None
    assert contest_score(t=5.0, t0=10.0, s_mb=3.5, s0_mb=14.0, agreement=None) is None


def test_scorecard_shows_no_score_for_noise_and_ranks_it_last() -> None:
    results = [_result("squeezenet1_1", "fp32", FP32, 0.020, 4_900_000),
               _result("squeezenet1_1", "int8", _acc(None, 0), 0.015, 1_300_000),
               _result("squeezenet1_1", "fp16", _acc(1.0, 12), 0.019, 2_450_000)]
    (card,) = report.scorecards(results, several=False)
    contest = card["by"]["contest"]
    assert [row["name"] for row in contest] == ["ncnn fp16 1t", "ncnn int8 1t"]
    assert contest[0]["contest"] == pytest.approx((0.001 / 0.020 * 20 + (4.9 - 2.45) / 2.45 * 80))
    assert contest[1]["contest"] is None and contest[1]["gates"].startswith("A — (")
    assert "— over 0/16" in contest[1]["drift"] and "19%" not in contest[1]["drift"]
    html = report.render([RunRecord("run1", "2026-12-06T00:00:00+00:00", {"name": "t"}, 0,
                                   {"platform": "test", "python": "3.11"}, "0.1.0")], results)
    assert "— over 0/16" in html and "100% over 12/16" in html


def test_tables_show_the_qualifying_count_and_labels() -> None:
    results = [_result("digits_cnn", "fp32", {**FP32, "label_accuracy": 0.98, "label_inputs": 360}, 1e-4, 40_000),
               _result("digits_cnn", "int8", _acc(0.99, 300, label_accuracy=0.975, label_inputs=360), 1e-4, 20_000),
               _result("squeezenet1_1", "int8", _acc(None, 0), 0.015, 1_300_000)]
    digits, squeezenet = slides_tables(results)
    assert digits.columns[-1] == "accuracy (labels)"
    assert [digits.row_cells(r)[-2:] for r in digits.rows] == [["100% over 16/16 · 1.0000", "98.0% of 360"],
                                                               ["99% over 300/16 · 0.9986", "97.5% of 360"]]
    assert "accuracy (labels)" not in squeezenet.columns
    assert squeezenet.row_cells(squeezenet.rows[0])[-1] == "— over 0/16 · 0.9986"
