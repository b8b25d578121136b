"""Helpers for the integration tests: run the real CLI in a subprocess, write suites."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from dataclasses import dataclass
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


# A phone's adb serial over TCP: the device id the CLI's tables used to cut to "127.0…".
PHONE = "127.0.0.1:5555"
HISTORY_RUNS = ("20261206-090000-base", "20261206-100000-cand")
CRASH = ("engine crashed: Segmentation fault (core dumped) in libtensorflowlite_jni.so while loading "
         "/data/local/tmp/devicelab/models/mobilenet_v2.tflite")


def store_history(db: Path) -> None:
    """Two finished runs, base and candidate, written through the store as a sweep writes them: the host and a phone,
    ONNX Runtime (fp32, int8) and its perf tool at 1, 2, 4 and 8 threads, 5 processes each (the candidate 10 % slower
    on the phone), a failed row with a long reason and an unsupported one. No engine runs: the tables read only
    Results."""
    import random

    from devicelab.result import FAILED, OK, UNSUPPORTED, Config, Result
    from devicelab.store import FINISHED, RunRecord, SqliteStore

    rng = random.Random(15)
    store = SqliteStore(db)
    for n, run_id in enumerate(HISTORY_RUNS):
        store.create_run(RunRecord(run_id, f"2026-12-06T{9 + n:02d}:00:00.000+00:00",
                                   {"name": "nightly-phone-and-host"}, 15 + n, {"hostname": "lab"}, "0.1.0"))
        for device in ("host", PHONE):
            slower = 1.1 if n and device == PHONE else 1.0
            for engine, precision in (("onnxruntime", "fp32"), ("onnxruntime", "int8"),
                                      ("tool:onnxruntime_perf_test", "fp32")):
                for threads in (1, 2, 4, 8):
                    for rep in range(5):
                        cfg = Config(device, engine, "", "1.32.0", "mobilenet_v2", "ab" * 32, 14_000_000, precision,
                                     "cpu", threads, tuple(range(threads)), "big", rep)
                        median = 0.012 * slower / threads ** 0.7
                        samples = tuple(median * rng.lognormvariate(0, 0.01) for _ in range(30))
                        store.add_result(Result.for_config(run_id, cfg, OK, samples_s=samples, median_s=median,
                                                           peak_rss_bytes=(90 + threads) * 2**20))
            for engine, status, reason, backend in (("litert", FAILED, CRASH, "cpu"),
                                                    ("ncnn", UNSUPPORTED, "the pnnx converter is not installed (pip "
                                                     "install --no-deps pnnx)", "vulkan")):
                cfg = Config(device, engine, "", "2.3.0", "mobilenet_v2", "ab" * 32, 14_000_000, "fp32", backend, 1,
                             (0,), "big")
                store.add_result(Result.for_config(run_id, cfg, status, reason=reason))
        store.set_run_status(run_id, FINISHED)
    store.close()


@dataclass
class StoreTarget:
    """A fresh, empty store of one backend for one test: a SQLite file or a PostgreSQL database (tests/pg_server.py),
    named as a user names it to --db."""

    backend: str
    db: str  # the --db value: a path or a postgresql:// URL (no password: the server's is in PGPASSFILE)
    missing_db: str

    def open(self, create: bool = True) -> Any:
        from devicelab.store import open_store

        return open_store(self.db, create=create)

    def missing(self) -> str:
        """A --db value naming a store that holds no devicelab records (no file; an empty database)."""
        return self.missing_db


def ctrl_c_able() -> None:
    """preexec_fn for a child a test interrupts with SIGINT: a shell without job control (a background job) starts
    its children with SIGINT ignored, the ignore is inherited through exec, and Python then installs no
    KeyboardInterrupt handler; the default disposition lets the child's Python install its own."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
