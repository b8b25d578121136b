"""`devicelab export`: a run's samples for analysis elsewhere (pandas; pyarrow for parquet)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from devicelab.result import Result

FORMATS = ("csv", "json", "parquet")
WHAT = ("samples", "profiles")  # `export --what`: every timed sample, or every profiled op
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
        return _written(json.dumps([r.to_dict() for r in results], indent=1), path)
    return _table(frame(results), fmt, path)


def _written(text: str, path: Path | None) -> str | None:
    """JSON to `path` (None returned), or the text for stdout."""
    if path:
        path.write_text(text)
        return None
    return text + "\n"


def _table(df: Any, fmt: str, path: Path | None) -> str | None:
    """A frame as parquet or csv to `path` (None returned), or csv text for stdout."""
    if fmt == "parquet":
        df.to_parquet(path, index=False)
        return None
    if path:
        df.to_csv(path, index=False)
        return None
    return df.to_csv(index=False)


_OP_COLUMNS = ("op", "engine_type", "type", "node", "seconds", "share", "fused")


def profile_frame(results: Sequence[Result]) -> Any:  # a pandas.DataFrame (pandas is imported only when called)
    """One row per profiled op (seconds per iteration, its share of the config's op total), with the config's
    columns and the profile's totals; a config without a usable profile is one row saying why, op columns empty."""
    import pandas as pd

    from devicelab.opprof import diff

    rows = []
    name_of = {id(r): n for n, r in diff.config_names(results).items()}
    for r in results:
        base = {c: getattr(r, c) for c in _COLUMNS}
        base["cpus"] = ",".join(map(str, r.cpus))
        base["config"] = name_of[id(r)]
        p = diff.profile_of(r)
        if not diff.usable(p):
            why = (p or {}).get("unsupported") or "not profiled"
            rows.append({**base, "no_profile": why})
            continue
        assert p is not None
        total = float(p.get("total_s") or 0.0)
        totals = {"profile_source": p.get("engine_source"), "total_s": total, "median_s": p.get("median_s"),
                  "wall_s": p.get("wall_s"), "overhead": p.get("overhead"), "coverage": p.get("coverage"),
                  "op_sum_vs_median": p.get("op_sum_vs_median"), "mapped": p.get("mapped")}
        for o in p.get("ops") or []:
            s = float(o.get("s") or 0.0)
            rows.append({**base, **totals, "op": o.get("name"), "engine_type": o.get("engine_type"),
                         "type": o.get("type"), "node": o.get("node"), "seconds": s,
                         "share": s / total if total > 0 else None, "fused": "+".join(o.get("fused") or [])})
    columns = [*_COLUMNS, "cpus", "config", "profile_source", "no_profile", "total_s", "median_s", "wall_s", "overhead",
               "coverage", "op_sum_vs_median", "mapped", *_OP_COLUMNS]
    return pd.DataFrame(rows, columns=columns)


def export_profiles(results: Sequence[Result], fmt: str, path: Path | None) -> str | None:
    """`export --what profiles`: json one object per config (its summary and every op), csv/parquet one row per op."""
    if fmt == "json":
        from devicelab.opprof import diff

        items = []
        name_of = {id(r): n for n, r in diff.config_names(results).items()}
        for r in results:
            s = diff.summary(r, name_of[id(r)])
            p = diff.profile_of(r)
            if s["profile"] is not None and p is not None:
                s["profile"]["ops"] = list(p.get("ops") or [])
            items.append(s)
        return _written(json.dumps(items, indent=1), path)
    return _table(profile_frame(results), fmt, path)
