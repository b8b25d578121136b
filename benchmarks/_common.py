"""Shared by the benchmark scripts: how to call devicelab and the independent loop, and how to summarize."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def devicelab_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "devicelab"
    return [str(exe)] if exe.exists() else [shutil.which("devicelab") or "devicelab"]


def devicelab_run(suite: Path, env: dict[str, str]) -> dict[str, Any]:
    p = subprocess.run([*devicelab_cmd(), "run", "--suite", str(suite), "--json"], env=env, capture_output=True,
                       text=True)
    if p.returncode not in (0, 1):
        raise SystemExit(p.stderr)
    return json.loads(p.stdout)


def independent(engine: str, model: str, threads: int, cpus: list[int], iterations: int,
                weights: str | None = None) -> list[float]:
    args = [sys.executable, str(HERE / "_engine_loop.py"), engine, model, str(threads), ",".join(map(str, cpus)),
            str(iterations)] + ([weights] if weights else [])
    p = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    if p.returncode != 0:
        raise SystemExit(f"{engine} loop failed: {p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{os.cpu_count()} CPUs, {model}"


def ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1e3:.3f} ms"


def paired_ratio(base: list[list[float]], cand: list[list[float]]) -> tuple[float, tuple[float, float] | None]:
    """cand/base with the round as the unit, as `compare` pairs two labels of one run: base[i] and cand[i] are the
    samples of the two processes of round i (run back to back). The ratio is the median of the per-round ratios of
    process medians; its 95 % CI comes from rounds resampled whole, never narrower than a paired t interval of the
    per-round log ratios (analysis.compare.verdict, paired). Pooling every process's samples instead gives a CI as
    narrow as one process's sampling error, however far the processes spread. The CI is None below 2 rounds."""
    from devicelab.analysis.compare import verdict

    v = verdict(base, cand, paired=True)
    assert v.ratio is not None
    return v.ratio, v.ci if len(base) >= 2 else None

