"""digits_cnn's weights: a small CNN trained in numpy on the digits data set's train split when the zoo is built.

conv 3×3 (1→16, pad 1) → ReLU → conv 3×3 stride 2 (16→32, pad 1) → ReLU → flatten (C, H, W order, as ONNX's
Flatten) → fully connected 512→10. Cross-entropy, Adam (lr 3e-3, β 0.9/0.999), batches of 32, 10 epochs, He
initialisation; everything drawn from one seeded generator, float32 throughout, and numpy's BLAS held to one thread
while training so a machine gives the same bytes every time (another CPU's BLAS kernels may round differently: the
zoo's index keeps the first build's file). No torch: a model this size trains in about a second with im2col.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import numpy as np

from devicelab import datasets

EPOCHS = 10
BATCH = 32
LEARNING_RATE = 3e-3
BETAS = (0.9, 0.999)
EPSILON = 1e-8
C1, C2, CLASSES = 16, 32, 10
F32 = np.float32


@dataclass(frozen=True)
class Trained:
    weights: dict[str, np.ndarray]  # conv1/conv2 (OIHW) and fc (out, in) weights and biases, float32
    test_accuracy: float  # on the data set's test split, as trained (numpy forward pass)
    seconds: float  # training time


def _im2col(x: np.ndarray, stride: int) -> tuple[np.ndarray, int]:
    """3×3 patches of x (N, C, H, W) padded by 1: (N·oh·ow, C·9) in (C, kh, kw) order, matching OIHW weights."""
    from numpy.lib.stride_tricks import sliding_window_view

    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    windows = sliding_window_view(padded, (3, 3), axis=(2, 3))[:, :, ::stride, ::stride]  # N, C, oh, ow, 3, 3
    n, c, oh, ow = windows.shape[:4]
    return np.ascontiguousarray(windows.transpose(0, 2, 3, 1, 4, 5)).reshape(n * oh * ow, c * 9), oh


def _col2im(cols: np.ndarray, n: int, c: int, size: int, stride: int, out: int) -> np.ndarray:
    """The gradient of _im2col: patch gradients summed back onto the (unpadded) input."""
    patches = cols.reshape(n, out, out, c, 3, 3)
    grad = np.zeros((n, c, size + 2, size + 2), F32)
    for i in range(3):
        for j in range(3):
            grad[:, :, i:i + stride * out:stride, j:j + stride * out:stride] += patches[..., i, j].transpose(0, 3, 1, 2)
    return grad[:, :, 1:-1, 1:-1]


class _Net:
    def __init__(self, rng: np.random.Generator) -> None:
        def he(shape: tuple[int, ...], fan_in: int, gain: float = 2.0) -> np.ndarray:
            return rng.normal(0.0, np.sqrt(gain / fan_in), size=shape).astype(F32)

        self.p = {"w1": he((C1, 9), 9), "b1": np.zeros(C1, F32), "w2": he((C2, C1 * 9), C1 * 9),
                  "b2": np.zeros(C2, F32), "w3": he((CLASSES, C2 * 16), C2 * 16, gain=1.0),
                  "b3": np.zeros(CLASSES, F32)}

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        p, n = self.p, len(x)
        c1, h1 = _im2col(x, 1)
        z1 = c1 @ p["w1"].T + p["b1"]
        a1 = np.maximum(z1, 0).reshape(n, h1, h1, C1).transpose(0, 3, 1, 2)
        c2, h2 = _im2col(a1, 2)
        z2 = c2 @ p["w2"].T + p["b2"]
        flat = np.maximum(z2, 0).reshape(n, h2, h2, C2).transpose(0, 3, 1, 2).reshape(n, -1)  # ONNX Flatten order
        return flat @ p["w3"].T + p["b3"], (c1, z1, c2, z2, flat)

    def gradients(self, x: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
        p, n = self.p, len(x)
        logits, (c1, z1, c2, z2, flat) = self.forward(x)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        g = e / e.sum(axis=1, keepdims=True)  # softmax; minus the one-hot labels is d(cross-entropy)/d(logits)
        g[np.arange(n), labels] -= 1
        g /= n
        grads = {"w3": g.T @ flat, "b3": g.sum(axis=0)}
        dz2 = (g @ p["w3"]).reshape(n, C2, 4, 4).transpose(0, 2, 3, 1).reshape(n * 16, C2) * (z2 > 0)
        grads["w2"], grads["b2"] = dz2.T @ c2, dz2.sum(axis=0)
        da1 = _col2im(dz2 @ p["w2"], n, C1, 8, 2, 4)
        dz1 = da1.transpose(0, 2, 3, 1).reshape(n * 64, C1) * (z1 > 0)
        grads["w1"], grads["b1"] = dz1.T @ c1, dz1.sum(axis=0)
        return grads


@functools.cache
def train(seed: int) -> Trained:
    """Train on the digits train split; the same seed gives the same weights (cached for the process: LiteRT's
    writer and the ONNX emitter share one training)."""
    from threadpoolctl import threadpool_limits

    train_set, test_set = datasets.split("digits", "train"), datasets.split("digits", "test")
    rng = np.random.default_rng(seed)
    net = _Net(rng)
    m = {k: np.zeros_like(v) for k, v in net.p.items()}
    v = {k: np.zeros_like(v) for k, v in net.p.items()}
    b1, b2 = BETAS
    step = 0
    t0 = time.perf_counter()
    with threadpool_limits(1):
        for _ in range(EPOCHS):
            order = rng.permutation(len(train_set))
            for start in range(0, len(order), BATCH):
                batch = order[start:start + BATCH]
                grads = net.gradients(train_set.images[batch], train_set.labels[batch])
                step += 1
                for k, g in grads.items():
                    m[k] = b1 * m[k] + (1 - b1) * g
                    v[k] = b2 * v[k] + (1 - b2) * g * g
                    update = LEARNING_RATE * (m[k] / (1 - b1 ** step)) / (np.sqrt(v[k] / (1 - b2 ** step)) + EPSILON)
                    net.p[k] = (net.p[k] - update).astype(F32)
        seconds = time.perf_counter() - t0
        logits, _ = net.forward(test_set.images)
    accuracy = float((logits.argmax(axis=1) == test_set.labels).mean())
    p = net.p
    weights = {"conv1.weight": p["w1"].reshape(C1, 1, 3, 3), "conv1.bias": p["b1"],
               "conv2.weight": p["w2"].reshape(C2, C1, 3, 3), "conv2.bias": p["b2"],
               "fc.weight": p["w3"], "fc.bias": p["b3"]}
    return Trained({k: np.ascontiguousarray(a, dtype=F32) for k, a in weights.items()}, accuracy, seconds)
