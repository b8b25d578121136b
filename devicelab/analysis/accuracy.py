"""Accuracy drift (pure): agreement of a variant's outputs with the fp32 reference on the same inputs."""

from __future__ import annotations

from collections.abc import Sequence
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
    element-wise difference; top1_agreement: fraction of inputs whose arg-max (of the first output) agrees.
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
    top_ref = reference[0].reshape(n, -1).argmax(axis=1)
    top_got = candidate[0].reshape(n, -1).argmax(axis=1)
    return {"cosine": float(cos.mean()), "max_abs_diff": float(np.abs(ref - got).max()),
            "top1_agreement": float((top_ref == top_got).mean()), "inputs": n,
            "reference": "onnxruntime fp32"}
