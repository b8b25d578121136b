"""The accuracy pass once per variant (docs/results.md, "The accuracy record"): a variant is what decides a model's
outputs — the device, the engine build and its options, the converted model, precision and backend, and the accuracy
inputs — and not the thread count or the CPUs. Its first accuracy pass is kept in devicelab's data folder with the
outputs; later configs of the variant, in this run or a later one, reuse it instead of running the inputs again.

Threads can change outputs (a parallel reduction adds in another order), so the first time a variant runs at a second
thread count its pass runs once more and the largest |Δ| between the two thread counts' outputs is kept with the
entry (`threads_max_abs_diff`); from then on every config of the variant reuses the entry.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from devicelab import paths


@dataclass(frozen=True)
class Entry:
    accuracy: dict[str, Any]
    run_id: str
    threads: int
    thread_check: dict[str, Any] | None = None  # {"threads": [a, b], "max_abs_diff": x}

    def settled(self, threads: int) -> bool:
        """Whether a config at `threads` can reuse this entry without running the pass."""
        return self.threads == threads or self.thread_check is not None

    def reused(self) -> dict[str, Any]:
        """The accuracy record of a config that reused this entry."""
        out = {**self.accuracy, "measured_in": {"run_id": self.run_id, "threads": self.threads}}
        if self.thread_check is not None:
            out["threads_max_abs_diff"] = self.thread_check
        return out


def cache_dir() -> Path:
    return paths.data_dir() / "accuracy"


def comparison_versions() -> tuple[str, str | None]:
    """devicelab's version and the reference's ONNX Runtime's (read from its metadata: no import)."""
    from importlib import metadata

    import devicelab

    try:
        ort: str | None = metadata.version("onnxruntime")
    except metadata.PackageNotFoundError:
        ort = None
    return devicelab.__version__, ort


def variant_key(*parts: Any) -> str:
    """A stable digest of what decides the outputs (the caller lists them)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def load(key: str) -> Entry | None:
    try:
        raw = json.loads((cache_dir() / f"{key}.json").read_text())
        return Entry(raw["accuracy"], str(raw["run_id"]), int(raw["threads"]), raw.get("thread_check"))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # none yet, or unreadable: the pass runs and writes a new one


def record(key: str, accuracy: dict[str, Any], run_id: str, threads: int, outputs: Path) -> dict[str, Any]:
    """Keep a pass's accuracy and outputs as the variant's entry (the first one), or, at a second thread count, compare
    its outputs with the entry's once. Returns the accuracy record for this config."""
    import numpy as np

    entry = load(key)
    stored = cache_dir() / f"{key}.npz"
    if entry is not None and entry.threads != threads and entry.thread_check is None:
        try:
            with np.load(stored) as a:
                a.files  # noqa: B018 - opening it is the check
        except Exception:  # noqa: BLE001 - a truncated or foreign file: the entry is as good as missing
            entry = None
    if entry is None or not stored.is_file():
        paths.write_atomic(stored, outputs.read_bytes())
        entry = Entry(accuracy, run_id, threads)
        paths.write_atomic(cache_dir() / f"{key}.json", json.dumps(asdict(entry)).encode())
        return accuracy
    if entry.threads == threads or entry.thread_check is not None:
        return accuracy
    with np.load(stored) as a, np.load(outputs) as b:
        if sorted(a.files) != sorted(b.files) or any(a[k].shape != b[k].shape for k in a.files):
            return accuracy  # not the same outputs: nothing to compare (the entry stays as it is)
        diff = max((float(np.max(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)))) if a[k].size else 0.0)
                   for k in a.files)
    check = {"threads": sorted([entry.threads, threads]), "max_abs_diff": diff}
    paths.write_atomic(cache_dir() / f"{key}.json", json.dumps(asdict(Entry(entry.accuracy, entry.run_id, entry.threads, check))
                                                   ).encode())
    return {**accuracy, "threads_max_abs_diff": check}
