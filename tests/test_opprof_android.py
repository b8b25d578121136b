"""Per-layer profiles from dlbench on the emulated phone: the real CLI → the real adb server → the emulated phone →
the arm64 dlbench under qemu-aarch64. One short config; the times under qemu are never looked at, only that the
profile arrives, maps and says what it is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from android_env import AdbServer, EmulatedPhone, cli_env, needs_adb, needs_namespace, needs_qemu
from helpers import FAST_PROTOCOL, run_json

from devicelab import opprof

pytestmark = [pytest.mark.slow, needs_adb(), needs_namespace(), needs_qemu()]


def test_dlbench_on_the_phone_gives_a_per_layer_profile(native_arm64: dict[str, Any], phone: EmulatedPhone,
                                                        server: AdbServer, env: dict[str, str],
                                                        tmp_path: Path) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text(yaml.safe_dump({"name": "dlbench-phone-profile", "models": ["squeezenet1_1"],
                                     "engines": ["dlbench"], "threads": [1], "devices": [phone.serial],
                                     "profile": {"iterations": 2},
                                     "protocol": {**FAST_PROTOCOL, "min_iterations": 3, "max_iterations": 3,
                                                  "accuracy_inputs": 0}}))
    code, data, err = run_json("run", "--suite", str(suite), env=cli_env(env, server))
    assert code == 0, err
    [r] = data["results"]
    assert r["status"] == "ok", r["reason"]
    p = r["ext"]["profile"]
    assert opprof.problems(p) == [] and p["iterations"] == 2
    assert p["engine_source"].startswith("dlbench op events (ncnn")
    assert p["mapped"] >= 0.95 and {"Conv", "Pool", "Concat"} <= set(p["by_type"])
    assert p["median_s"] == r["median_s"] and p["overhead"] is not None
    assert len(r["samples_s"]) == 3  # the layer passes are not samples
