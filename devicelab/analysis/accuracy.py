"""Accuracy drift (pure): agreement of a variant's outputs with the fp32 reference on the same inputs, and accuracy
against a data set's labels where the model has one."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# fp32 of every engine must agree with the ONNX Runtime fp32 reference this closely (tests hold them to it):
# different kernels sum in different orders, which moves logits of O(1) by ~1e-6, never by 1e-3.
FP32_MAX_ABS_DIFF = 1e-3
FP32_MIN_COSINE = 0.99999

# A lower-precision variant whose outputs stay this close to fp32 did not compute in lower precision.
NO_EFFECT_MAX_ABS_DIFF = 1e-4


def agreement(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]) -> dict[str, Any]:
    """Compare outputs of N inputs: each sequence holds one array per model output, stacked over inputs.

    cosine: mean over inputs of the cosine similarity of the flattened outputs; max_abs_diff: the largest
    element-wise difference. top1_agreement: over the inputs whose fp32 top-1 margin (top logit minus the runner-up,
    of the first output) is larger than the variant's largest |Δ| on the first output over all inputs
    (`top1_min_margin`), the fraction whose arg-max agrees; `top1_inputs` says how many qualified, and
    top1_agreement is None when none did.

    Why a margin at all: with seeded weights the logits sit almost level, and an arg-max flip between two logits
    closer than the variant's error is noise, not drift. Why the overall max |Δ| and not each input's own: the
    threshold is then a property of the variant (its error scale), so which inputs count depends only on how clear
    the fp32 decision was. With each input's own |Δ| an input the variant damaged badly would drop out of the count
    by that very damage, and a flip it caused would never be seen; with one threshold a large error anywhere shows
    as fewer qualifying inputs, for every input alike.
    """
    if len(reference) != len(candidate):
        raise ValueError(f"{len(candidate)} outputs, the reference has {len(reference)}")
    n = int(reference[0].shape[0])
    for r, c in zip(reference, candidate):
        if r.shape[0] != n or c.shape[0] != n or r[0].size != c[0].size:
            raise ValueError(f"output shapes differ: {c.shape} vs reference {r.shape}")
    ref = np.concatenate([r.reshape(n, -1) for r in reference], axis=1).astype(np.float64)
    got = np.concatenate([c.reshape(n, -1) for c in candidate], axis=1).astype(np.float64)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1)
    cos = np.where(norms > 0, (ref * got).sum(axis=1) / np.where(norms > 0, norms, 1), 1.0)
    first_ref = reference[0].reshape(n, -1).astype(np.float64)
    first_got = candidate[0].reshape(n, -1).astype(np.float64)
    threshold = float(np.abs(first_ref - first_got).max()) if n else 0.0
    if first_ref.shape[1] < 2:  # a single value has no runner-up: there is no class decision to agree on
        qualified = np.zeros(n, dtype=bool)
    else:
        top2 = np.sort(first_ref, axis=1)[:, -2:]
        qualified = (top2[:, 1] - top2[:, 0]) > threshold
    agrees = first_ref.argmax(axis=1) == first_got.argmax(axis=1)
    k = int(qualified.sum())
    return {"cosine": float(cos.mean()), "max_abs_diff": float(np.abs(ref - got).max()),
            "top1_agreement": float(agrees[qualified].mean()) if k else None, "top1_inputs": k,
            "top1_min_margin": threshold, "inputs": n, "reference": "onnxruntime fp32"}


def label_accuracy(outputs: Sequence[np.ndarray], labels: np.ndarray) -> float:
    """The fraction of inputs whose arg-max (of the first output) is the label."""
    n = int(labels.shape[0])
    first = outputs[0].reshape(outputs[0].shape[0], -1)
    if first.shape[0] != n:
        raise ValueError(f"{first.shape[0]} outputs for {n} labels")
    return float((first.argmax(axis=1) == labels).mean())


def top1(acc: Mapping[str, Any] | None) -> tuple[float | None, int, int] | None:
    """(agreement or None, qualifying inputs, inputs) when `acc` carries a margin-qualified top-1; None otherwise —
    including rows stored before `top1_inputs` existed, whose top1_agreement counted every input (noise on seeded
    weights), so no reader shows it."""
    if not acc or "top1_inputs" not in acc:
        return None
    value = acc.get("top1_agreement")
    return (float(value) if value is not None else None), int(acc["top1_inputs"]), int(acc.get("inputs") or 0)


def top1_text(acc: Mapping[str, Any] | None) -> str:
    """"100% over 12/16" (agreement over the 12 of 16 inputs that qualified), "— over 0/16", or "—"."""
    t = top1(acc)
    if t is None:
        return "—"
    value, k, n = t
    return f"{'—' if value is None else f'{value:.0%}'} over {k}/{n}"


def label_text(acc: Mapping[str, Any] | None) -> str:
    """"98.1% of 360" (accuracy against the data set's labels), or "—" for models without labels."""
    if not acc or acc.get("label_accuracy") is None:
        return "—"
    return f"{acc['label_accuracy']:.1%} of {acc.get('label_inputs', '?')}"
