"""Labelled data sets for the zoo's trained models, shipped inside a Python package (no download).

`digits`: scikit-learn's handwritten digits (`sklearn.datasets.load_digits`, 1797 8×8 grey images of 0–9, pixel
values 0–16), scaled to [0, 1] and shaped NCHW (1, 8, 8). Split once, deterministically: a permutation drawn from a
fixed seed puts 360 images (20 %) in `test` and the rest in `train`. The model is trained on `train`, int8 variants
are calibrated on `train` (never on the images they are judged on), and the accuracy pass feeds `test`.

The controller reads these; the measured process never does (a runner gets the images as files).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from devicelab.errors import UnknownNameError

SPLIT_SEED = 1797  # fixed: the split is part of the data set, not of a run
TEST_IMAGES = 360


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # (N, C, H, W) float32: what the model's single input takes, one image at a time
    labels: np.ndarray  # (N,) int64 class indices

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@functools.cache
def _digits() -> dict[str, Split]:
    from sklearn.datasets import load_digits

    data = load_digits()
    images = (np.asarray(data.images, dtype=np.float32) / 16.0)[:, None, :, :]
    labels = np.asarray(data.target, dtype=np.int64)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
    test, train = order[:TEST_IMAGES], order[TEST_IMAGES:]
    return {"train": Split(images[train], labels[train]), "test": Split(images[test], labels[test])}


_DATASETS = {"digits": _digits}


def split(dataset: str, part: str) -> Split:
    """`part` ("train" or "test") of `dataset`; arrays are shared between callers: do not write to them."""
    if dataset not in _DATASETS:
        raise UnknownNameError("data set", dataset, _DATASETS)
    parts = _DATASETS[dataset]()
    if part not in parts:
        raise UnknownNameError("data set split", part, parts)
    return parts[part]


def describe(dataset: str) -> str:
    """What a Result's accuracy says it was measured on."""
    return f"{dataset}: test split ({len(split(dataset, 'test'))} images)"
