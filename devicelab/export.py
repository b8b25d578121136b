"""`devicelab export`: a run's samples for analysis elsewhere (pandas; pyarrow for parquet)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from devicelab.result import Result

FORMATS = ("csv", "json", "parquet")
_COLUMNS = ("run_id", "device", "engine", "label", "engine_version", "model", "model_sha256", "precision", "backend",
            "threads", "repeat", "status")


def frame(results: Sequence[Result]):  # -> pandas.DataFrame
    """One row per timed sample, with the config's columns; results without samples get one row, seconds NaN."""
    import pandas as pd

    rows = []
    for r in results:
        base = {c: getattr(r, c) for c in _COLUMNS}
        base["cpus"] = ",".join(map(str, r.cpus))
        if not r.samples_s:
            rows.append({**base, "iteration": None, "seconds": float("nan")})
        rows.extend({**base, "iteration": i, "seconds": s} for i, s in enumerate(r.samples_s))
    return pd.DataFrame(rows, columns=[*_COLUMNS, "cpus", "iteration", "seconds"])


def export(results: Sequence[Result], fmt: str, path: Path | None) -> str | None:
    """Write to `path` (and return None), or return the text for stdout."""
    if fmt == "json":
        text = json.dumps([r.to_dict() for r in results], indent=1)
        if path:
            path.write_text(text)
            return None
        return text + "\n"
    df = frame(results)
    if fmt == "parquet":
        df.to_parquet(path, index=False)
        return None
    if path:
        df.to_csv(path, index=False)
        return None
    return df.to_csv(index=False)
