"""Helpers for the integration tests: run the real CLI in a subprocess, write suites."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

# Short protocol settings keep CI fast; the numbers are recorded with each Result like any others.
FAST_PROTOCOL = {"warmup_iterations": 1, "warmup_seconds": 0.0, "min_iterations": 5, "min_seconds": 0.0,
                 "max_iterations": 8, "max_seconds": 2.0, "cooldown_seconds": 0.0, "timeout_seconds": 120,
                 "accuracy_inputs": 4}


def write_suite(path: Path, **fields: Any) -> Path:
    suite = {"name": "test", "models": ["squeezenet1_1"], "engines": ["onnxruntime"], "threads": [1],
             "protocol": dict(FAST_PROTOCOL)}
    protocol = fields.pop("protocol", {})
    suite.update(fields)
    suite["protocol"].update(protocol)
    path.write_text(yaml.safe_dump(suite))
    return path


# The console script users run, from the environment running the tests.
DEVICELAB = str(Path(sys.executable).parent / "devicelab")


def devicelab(*args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 300,
              ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DEVICELAB, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def run_json(*args: str, env: dict[str, str], cwd: Path | None = None) -> tuple[int, dict[str, Any], str]:
    p = devicelab(*args, "--json", env=env, cwd=cwd)
    try:
        data = json.loads(p.stdout) if p.stdout.strip() else {}
    except ValueError:
        raise AssertionError(f"not JSON on stdout: {p.stdout[:500]!r}; stderr: {p.stderr[-2000:]}") from None
    return p.returncode, data, p.stderr
