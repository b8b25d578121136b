"""Android's fixed performance mode and thermal status end to end, as a user meets them: the real devicelab CLI → the
real adb server → the emulated phone (real ADB wire protocol; its `cmd power` and `cmd thermalservice` answer as
AOSP's shell commands) → a real arm64 runner under qemu. What the phone was told is read from the host side: the
phone's log of every `cmd` call it answered, and the mode it holds now."""

from __future__ import annotations

import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from android_env import (AdbServer, EmulatedPhone, cli_env, needs_adb,
                         needs_namespace, needs_qemu)
from helpers import DEVICELAB, FAST_PROTOCOL, ctrl_c_able, run_json

from devicelab.testing.emulated_device import CMD_LOG, FIXED_PERFORMANCE_FILE

pytestmark = [pytest.mark.slow, needs_adb(), needs_namespace(), needs_qemu()]

PROTOCOL = {**FAST_PROTOCOL, "accuracy_inputs": 0, "cooldown_timeout_seconds": 20}
SET_MODE = "power set-fixed-performance-mode-enabled"


def _files(tmp_path: Path, phone: EmulatedPhone, binary: Path, fixed_performance: bool = True,
           **protocol: Any) -> tuple[Path, Path]:
    """(inventory, suite): the phone as inventory entry `lab-phone`, with fixed_performance as asked."""
    inventory = tmp_path / "devices.yaml"
    inventory.write_text(yaml.safe_dump({"devices": [{"id": "lab-phone", "kind": "android", "serial": phone.serial,
                                                      "fixed_performance": fixed_performance}]}))
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "conditions", "models": ["squeezenet1_1", "mobilenet_v2"], "threads": [1], "seed": 5,
        "engines": [{"name": "protocol", "options": {"binary": str(binary)}}], "devices": ["lab-phone"],
        "protocol": {**PROTOCOL, **protocol}}))
    return inventory, suite


def _set_mode_calls(phone: EmulatedPhone) -> list[tuple[float, str, int]]:
    """(time, argument, exit status) of every `cmd power set-fixed-performance-mode-enabled` the phone answered."""
    log = phone.root / CMD_LOG
    calls = []
    for line in log.read_text().splitlines() if log.exists() else []:
        at, args, code = line.split("\t")
        if args.startswith(SET_MODE):
            calls.append((float(at), args[len(SET_MODE):].strip(), int(code)))
    return calls


def _mode(phone: EmulatedPhone) -> str | None:
    """The fixed performance mode the phone holds now (None: never set since it booted, i.e. off)."""
    path = phone.root / FIXED_PERFORMANCE_FILE
    return path.read_text().strip() if path.exists() else None


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def test_fixed_performance_is_on_for_the_whole_run_off_after_and_recorded(
        phone: EmulatedPhone, server: AdbServer, runner_arm64: Path, env: dict[str, str], tmp_path: Path) -> None:
    inventory, suite = _files(tmp_path, phone, runner_arm64)
    code, data, err = run_json("run", "--suite", str(suite), "--devices", str(inventory), env=cli_env(env, server))
    assert code == 0, err
    rows = data["results"]
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows), rows
    assert all(r["ext"]["fixed_performance"] is True for r in rows)
    # Turned on once before the first config started and off once after the last one finished: on for all of it.
    calls = _set_mode_calls(phone)
    assert [(arg, code) for _, arg, code in calls] == [("true", 0), ("false", 0)], calls
    assert calls[0][0] < min(_epoch(r["started_at"]) for r in rows)
    assert calls[1][0] > max(_epoch(r["finished_at"]) for r in rows)
    assert _mode(phone) == "false"
    # A cool phone: its thermal status is recorded, nothing is flagged.
    for r in rows:
        assert r["ext"]["thermal_status"] == {"before": 0, "after": 0} and r["throttled"] is False
        assert not any("thermal status" in n for n in r["notes"])


def test_fixed_performance_is_turned_off_after_a_runner_fails(
        phone: EmulatedPhone, server: AdbServer, env: dict[str, str], tmp_path: Path) -> None:
    broken = tmp_path / "broken_runner"
    broken.write_text("#!/system/bin/sh\necho 'no such model' >&2\nexit 3\n")
    broken.chmod(0o755)
    inventory, suite = _files(tmp_path, phone, broken)
    code, data, err = run_json("run", "--suite", str(suite), "--devices", str(inventory), env=cli_env(env, server))
    assert code == 1, err
    assert [r["status"] for r in data["results"]] == ["failed", "failed"], data["results"]
    assert all("exit code 3" in r["reason"] for r in data["results"])
    assert [(arg, code) for _, arg, code in _set_mode_calls(phone)] == [("true", 0), ("false", 0)]
    assert _mode(phone) == "false"


def test_fixed_performance_is_turned_off_after_ctrl_c_mid_sweep(
        phone: EmulatedPhone, server: AdbServer, runner_arm64: Path, env: dict[str, str], tmp_path: Path) -> None:
    # Configs long enough to be interrupted while a runner is timing on the phone.
    inventory, suite = _files(tmp_path, phone, runner_arm64, min_seconds=3.0, max_seconds=4.0, max_iterations=10_000)
    runs = phone.root / "data/local/tmp/devicelab/run"
    p = subprocess.Popen([DEVICELAB, "run", "--suite", str(suite), "--devices", str(inventory)],
                         env=cli_env(env, server), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=ctrl_c_able)
    try:
        deadline = time.monotonic() + 120
        while not (runs.is_dir() and any(runs.iterdir())):  # a config's run folder: a runner is on its way
            assert p.poll() is None and time.monotonic() < deadline, "no config started on the phone"
            time.sleep(0.05)
        assert _mode(phone) == "true"
        time.sleep(1.0)  # into the runner's timing
        p.send_signal(signal.SIGINT)  # Ctrl-C: KeyboardInterrupt in the middle of the sweep
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 130, err
    assert "interrupted" in err and "resume with: devicelab run --resume" in err
    assert [(arg, code) for _, arg, code in _set_mode_calls(phone)] == [("true", 0), ("false", 0)]
    assert _mode(phone) == "false"


def test_a_phone_that_goes_away_keeps_the_mode_and_the_run_says_so(
        server: AdbServer, runner_arm64: Path, env: dict[str, str], tmp_path: Path) -> None:
    # Dropped for good during the first batch a runner on it is asked for.
    with EmulatedPhone(server, tmp_path / "phone", drop_on=['protocol_runner@input="run"#1']) as phone:
        inventory, suite = _files(tmp_path, phone, runner_arm64, min_seconds=2.0, max_seconds=3.0)
        p = subprocess.run([DEVICELAB, "run", "--suite", str(suite), "--devices", str(inventory), "--json"],
                           env=cli_env(env, server), capture_output=True, text=True, timeout=300)
        assert p.returncode == 1, p.stderr
        rows = yaml.safe_load(p.stdout)["results"]
        assert [r["status"] for r in rows] == ["infra-failed", "infra-failed"], rows
        # the config cut off ran with the mode on until the phone went; the next one never reached the phone
        assert [r["ext"].get("fixed_performance") for r in rows] in ([True, None], [None, True]), rows
        assert "lab-phone: fixed performance mode could not be turned off" in p.stderr, p.stderr
        assert f"adb -s {phone.serial} shell cmd power set-fixed-performance-mode-enabled false" in p.stderr
        # The phone still holds it (it was never told otherwise) ...
        assert _mode(phone) == "true"
        assert [(arg, code) for _, arg, code in _set_mode_calls(phone)] == [("true", 0)]
        # ... until it reboots.
        phone.restart(drop_on=[])
        assert _mode(phone) is None


@pytest.mark.parametrize("profile, refusal", [
    ({"props": {"ro.build.version.sdk": "29", "ro.build.version.release": "10"}},
     "fixed_performance: true needs Android 11 (SDK 30) or later; this phone runs Android 10 (SDK 29)"),
    ({"fixed_performance_supported": False},
     "fixed_performance: true, but the phone refused it: turning fixed performance mode on failed on "
     "{serial} (exit 255): Failed to set FIXED_PERFORMANCE mode; This is likely because Power HAL AIDL is not "
     "implemented on this device"),
], ids=["android-10", "no-power-hal-mode"])
def test_a_phone_that_cannot_is_refused_in_one_line_before_anything_runs(
        profile: dict[str, Any], refusal: str, server: AdbServer, runner_arm64: Path, env: dict[str, str],
        tmp_path: Path) -> None:
    with EmulatedPhone(server, tmp_path / "phone", profile=profile) as phone:
        inventory, suite = _files(tmp_path, phone, runner_arm64)
        e = cli_env(env, server)
        p = subprocess.run([DEVICELAB, "run", "--suite", str(suite), "--devices", str(inventory)], env=e,
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 2, p.stderr
        assert p.stderr.strip() == f"error: device lab-phone: {refusal.format(serial=phone.serial)}", p.stderr
        code, runs, err = run_json("runs", env=e)
        assert code == 0 and runs == [], (runs, err)  # refused before a run was stored
        assert _mode(phone) is None  # the phone was left as it was
        calls = [(arg, code) for _, arg, code in _set_mode_calls(phone)]
        if "sdk" in str(profile):  # devicelab did not even ask; the phone would not have known the command
            assert calls == []
            r = server.run("-s", phone.serial, "shell", "cmd power set-fixed-performance-mode-enabled true")
            assert "Unknown command: set-fixed-performance-mode-enabled" in r.stdout
        else:  # one refused attempt, and nothing to set back afterwards
            assert calls == [("true", 255)]


def test_thermal_status_moderate_or_worse_is_flagged_and_none_is_not(
        phone: EmulatedPhone, server: AdbServer, runner_arm64: Path, env: dict[str, str], tmp_path: Path) -> None:
    e = cli_env(env, server)
    inventory, suite = _files(tmp_path, phone, runner_arm64, fixed_performance=False)
    # As on a phone: AOSP's `cmd thermalservice override-status` locks the status the platform reports.
    assert server.run("-s", phone.serial, "shell", "cmd thermalservice override-status 3").returncode == 0
    code, data, err = run_json("run", "--suite", str(suite), "--devices", str(inventory), env=e)
    assert code == 0, err
    for r in data["results"]:
        assert r["status"] == "ok" and r["ext"]["thermal_status"] == {"before": 3, "after": 3}, r
        assert r["throttled"] is True and "fixed_performance" not in r["ext"]
        assert ("Android's thermal status was 3 (SEVERE) before the config and 3 (SEVERE) after the config: from "
                "2 (MODERATE) on the platform is throttling, so the row counts as throttled") in r["notes"]
    assert server.run("-s", phone.serial, "shell", "cmd thermalservice reset").returncode == 0
    code, data, err = run_json("run", "--suite", str(suite), "--devices", str(inventory), env=e)
    assert code == 0, err
    for r in data["results"]:
        assert r["status"] == "ok" and r["ext"]["thermal_status"] == {"before": 0, "after": 0}, r
        assert r["throttled"] is False and not any("thermal status" in n for n in r["notes"])
    assert _set_mode_calls(phone) == []  # fixed_performance: false leaves the mode alone
