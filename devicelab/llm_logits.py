"""The data folder's `llm-logits/`: each LLM variant's logits of its last request, kept so that a quantized variant
is compared with its F32 reference (devicelab.llm.drift) and, at F32, engines with each other — in this run or a
later one, by this process or another one on the same host (a farm's workers share the data folder).

Files (devicelab.llm.logits_key names what a variant is compared by: device, engine build, model, prompt, G):
* `<key>-<quant>.f32`: the logits, float32, (G + 1) × n_vocab; written whole by a rename, so a reader sees the old
  file or the new one, never half of one.
* `<engines key>-engines.json`: which engine's F32 logits of a model and prompt are kept (its name → its file); read,
  updated and written under a lock, so two writers at once keep both their entries.
* `.<name>.lock`: the locks (flock; released when the holder exits, however it exits).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterator
from pathlib import Path

from devicelab import paths


def folder() -> Path:
    return paths.data_dir() / "llm-logits"


def logits_path(key: str, quant: str) -> Path:
    return folder() / f"{key}-{quant}.f32"


@contextlib.contextmanager
def locked(name: str) -> Iterator[None]:
    """One holder at a time of `name` on this host (processes and threads alike: each holder opens the file)."""
    where = folder()
    where.mkdir(parents=True, exist_ok=True)
    with open(where / f".{name}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def keep(key: str, quant: str, logits: Path) -> Path:
    """A variant's logits, kept (replacing what the variant kept before)."""
    out = logits_path(key, quant)
    paths.write_atomic(out, logits.read_bytes())
    return out


def register(engines_key: str, name: str, file: str) -> dict[str, str]:
    """Record that engine `name` keeps its F32 logits of this model and prompt in `file`; every engine's entry."""
    index = folder() / f"{engines_key}-engines.json"
    with locked(f"{engines_key}-engines"):
        try:
            seen = json.loads(index.read_text())
        except (OSError, ValueError):
            seen = {}  # none yet (or a file from before the lock that a crash cut short): start the index afresh
        if not isinstance(seen, dict):
            seen = {}
        seen[name] = file
        paths.write_atomic(index, json.dumps(seen, sort_keys=True).encode())
    return {str(k): str(v) for k, v in seen.items()}
