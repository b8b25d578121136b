"""The Android driver end to end, as a user runs it: the real devicelab CLI → the real adb server (Debian's adb 29
and adbutils' adb 36) → the emulated phone (devicelab.testing.emulated_adb, real ADB wire protocol) → real arm64
programs under qemu-aarch64 in the phone's sandbox. Timings under qemu are never looked at."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from android_env import (AdbServer, EmulatedPhone, adb_binaries, cli_env, needs_adb,
                         needs_namespace, needs_qemu)
from helpers import FAST_PROTOCOL, devicelab, run_json

pytestmark = [pytest.mark.slow, needs_adb(), needs_namespace(), needs_qemu()]

PROTOCOL = {**FAST_PROTOCOL, "accuracy_inputs": 0, "cooldown_timeout_seconds": 20}


def _env(env: dict[str, str], server: AdbServer, data: Path | None = None) -> dict[str, str]:
    e = cli_env(env, server)
    if data is not None:  # a data folder of its own: no native builds registered in it
        e["DEVICELAB_DATA"] = str(data)
    return e


def _suite(path: Path, devices: list[str], binary: Path, **fields: Any) -> Path:
    suite = {"name": "android", "models": fields.pop("models", ["squeezenet1_1"]), "threads": [1],
             "engines": [{"name": "protocol", "options": {"binary": str(binary)}}], "devices": devices,
             "protocol": {**PROTOCOL, **fields.pop("protocol", {})}, **fields}
    path.write_text(yaml.safe_dump(suite))
    return path


def _sandbox_files(phone: EmulatedPhone) -> list[Path]:
    return sorted(p for p in (phone.root / "data" / "local" / "tmp").rglob("*"))


@pytest.mark.parametrize("adb", [label for label, _ in adb_binaries()])
def test_devices_lists_the_phone_with_its_facts(adb: str, env: dict[str, str], tmp_path: Path) -> None:
    with AdbServer(dict(adb_binaries())[adb]) as server, EmulatedPhone(server, tmp_path / "phone") as phone:
        code, rows, err = run_json("devices", env=_env(env, server))
    assert code == 0, err
    row = next(r for r in rows if r["id"] == phone.serial)
    assert row["kind"] == "android" and row["source"] == "discovered"
    assert (row["model"], row["manufacturer"], row["soc"], row["abi"]) == (
        "devicelab emulated phone", "devicelab", "EMU8000", "arm64-v8a")
    assert row["os"] == "Android 14 (SDK 34)" and row["memory_bytes"] > 0
    cpus = sorted(os.sched_getaffinity(0))
    assert row["cpu_ids"] == cpus
    if len(cpus) > 1:  # the fixture splits the host's CPUs into a little and a big cluster (cpu_capacity)
        assert [c["capacity"] for c in row["clusters"]] == [512, 1024]
        assert row["clusters"][-1]["cpus"] == cpus[len(cpus) // 2:]
    assert row["battery_percent"] == 80 and row["charging"] is False and row["screen"] == "off"
    assert any(r["id"] == "host" and r["source"] == "inventory" for r in rows)


def test_run_pushes_once_pins_to_big_and_records_state(phone: EmulatedPhone, server: AdbServer,
                                                       runner_arm64: Path, env: dict[str, str], tmp_path: Path) -> None:
    e = _env(env, server, tmp_path / "data")  # no dlprobe registered: taskset pins, the runner reports its peak
    suite = _suite(tmp_path / "s.yaml", [phone.serial], runner_arm64)
    p = devicelab("run", "--suite", str(suite), env=e)
    assert p.returncode == 0, p.stderr
    assert f"{phone.serial}: pushed " in p.stderr
    code, data, err = run_json("run", "--suite", str(suite), env=e)
    assert code == 0, err
    [r] = data["results"]
    assert r["status"] == "ok" and r["device"] == phone.serial, r
    assert len(r["samples_s"]) >= PROTOCOL["min_iterations"] and r["median_s"] > 0 and r["peak_rss_bytes"] > 0
    big = max(os.sched_getaffinity(0))
    assert r["cpus"] == [big] and r["protocol"]["pinning"]["method"] == "taskset"
    assert r["protocol"]["pinning"]["mask"] == hex(1 << big)
    assert not any("runner reports affinity" in n for n in r["notes"])  # the runner saw the mask it was given
    # second run: nothing new (the runner, the model and the config are all content-addressed)
    assert r["protocol"]["push"]["bytes"] == 0 and r["protocol"]["push"]["files"] == 3
    for state in (r["state_before"], r["state_after"]):
        assert any(k.startswith("cpu-") for k in state["temperatures_c"]) and str(big) in state["cpufreq"]
        assert state["charging"] is False and state["screen"] == "off" and state["power"]["battery_percent"] == 80
    assert r["throttled"] is False and r["protocol"]["cooldown"]["method"] == "temperature"
    assert all(z.startswith("cpu-") for z in r["protocol"]["cooldown"]["zones"])
    # nothing is left behind but the content-addressed files
    assert not list((phone.root / "data/local/tmp/devicelab/run").iterdir())


def test_names_with_shell_characters_arrive_as_literals(phone: EmulatedPhone, server: AdbServer, runner_arm64: Path,
                                                        env: dict[str, str], data_dir: Path, tmp_path: Path) -> None:
    from devicelab import zoo

    # file names cannot hold '/': the payloads touch relative names, and the shell's cwd is / on a phone
    nasty = "m o'd;$(touch pwned1) `touch pwned2` \"q\"&x|y>z"
    folder = tmp_path / "my models; $(touch pwned3) 'x'"
    folder.mkdir()
    model = folder / f"{nasty}.onnx"
    shutil.copy(zoo.zoo_model("squeezenet1_1", data_dir / "zoo").path, model)
    binary = tmp_path / "run'er $(touch pwned4);x"
    shutil.copy(runner_arm64, binary)
    suite = _suite(tmp_path / "s.yaml", [phone.serial], binary, models=[{"path": str(model), "name": nasty}])
    code, data, err = run_json("run", "--suite", str(suite), env=_env(env, server))
    assert code == 0, err
    [r] = data["results"]
    assert r["status"] == "ok" and r["model"] == nasty, r
    names = {p.name for p in _sandbox_files(phone)}
    assert f"{nasty}.onnx" in names and binary.name in names  # pushed under their own names, literally
    # no command substitution ran, in the run folder (the runner's cwd) or at /
    assert not [p for p in phone.root.rglob("pwned*")] and not list(Path("/").glob("pwned*"))


def test_disconnect_mid_config_is_infra_failed_others_continue_resume_finishes(
        server: AdbServer, runner_arm64: Path, env: dict[str, str], tmp_path: Path) -> None:
    # Dropped during the first batch a runner on this phone is asked for: mid-config, the same way every time (a
    # config may need only one batch, so a later batch could fall in the next config).
    with EmulatedPhone(server, tmp_path / "a", drop_on=['protocol_runner@input="run"#1']) as a, \
            EmulatedPhone(server, tmp_path / "b") as b:
        suite = _suite(tmp_path / "s.yaml", [a.serial, b.serial], runner_arm64,
                       models=["squeezenet1_1", "mobilenet_v2"], seed=3,
                       protocol={"min_seconds": 2.0, "max_seconds": 3.0})  # long enough to be cut off
        e = _env(env, server)
        code, data, err = run_json("run", "--suite", str(suite), env=e)
        assert code == 1, err
        rows = {(r["device"], r["model"]): r for r in data["results"]}
        assert len(rows) == 4
        lost = [r for r in rows.values() if r["device"] == a.serial]
        assert all(r["status"] == "infra-failed" and "device disconnected" in r["reason"] for r in lost), \
            [(r["status"], r["reason"]) for r in lost]
        assert all(r["status"] == "ok" for r in rows.values() if r["device"] == b.serial)
        a.restart(drop_on=[])  # the phone comes back: same port, same storage
        code, data, err = run_json("run", "--resume", data["run_id"], env=e)
        assert code == 0, err
        assert sorted(r["status"] for r in data["results"]) == ["ok"] * 4


def test_ab_labels_run_in_lockstep_on_the_phone(phone: EmulatedPhone, server: AdbServer, runner_arm64: Path,
                                                env: dict[str, str], tmp_path: Path) -> None:
    """Two labels of one runner: each round's two runners are alive together on their own shell v2 streams, timed
    in alternating slices; compare pairs them by round; the run folders are gone afterwards."""
    suite = _suite(tmp_path / "s.yaml", [phone.serial], runner_arm64, repeats=3, seed=1,
                   protocol={"min_seconds": 0.5, "max_seconds": 1.0, "max_iterations": 400},
                   engines=[{"name": "protocol", "label": "a", "options": {"binary": str(runner_arm64)}},
                            {"name": "protocol", "label": "b", "options": {"binary": str(runner_arm64)}}])
    e = _env(env, server)
    code, data, err = run_json("run", "--suite", str(suite), env=e)
    assert code == 0, err
    results = data["results"]
    assert len(results) == 6 and all(r["status"] == "ok" for r in results), results
    for r in results:
        assert r["protocol"]["lockstep"] == {"with": ["b" if r["label"] == "a" else "a"], "slice_s": 0.1}
        assert r["protocol"]["batches"] >= 4  # slices, not one long batch
    for k in range(3):
        a, b = (next(r for r in results if r["repeat"] == k and r["label"] == x) for x in ("a", "b"))
        assert a["started_at"] < b["finished_at"] and b["started_at"] < a["finished_at"]
    code, out, err = run_json("compare", f"{data['run_id']}:a", f"{data['run_id']}:b", env=e)
    assert code in (0, 1), err
    assert "paired by round (3 rounds)" in out["comparisons"][0]["reasons"]
    assert not list((phone.root / "data/local/tmp/devicelab/run").iterdir())


def test_a_phone_lost_during_lockstep_fails_its_rows_as_infra_and_resume_finishes(
        server: AdbServer, runner_arm64: Path, env: dict[str, str], tmp_path: Path) -> None:
    """The phone drops while two labels are timed together: both rows are infra-failed (device disconnected), not
    an error out of the sweep, and --resume runs them once the phone is back."""
    # The second batch of the round: the first label's first slice has run, the second label's is under way.
    with EmulatedPhone(server, tmp_path / "a", drop_on=['protocol_runner@input="run"#2']) as a:
        suite = _suite(tmp_path / "s.yaml", [a.serial], runner_arm64, repeats=1,
                       protocol={"min_seconds": 2.0, "max_seconds": 3.0},
                       engines=[{"name": "protocol", "label": x, "options": {"binary": str(runner_arm64)}}
                                for x in ("a", "b")])
        e = _env(env, server)
        code, data, err = run_json("run", "--suite", str(suite), env=e)
        assert code == 1, err
        assert [r["status"] for r in data["results"]] == ["infra-failed"] * 2, data["results"]
        assert all("device disconnected" in r["reason"] for r in data["results"])
        a.restart(drop_on=[])
        code, data, err = run_json("run", "--resume", data["run_id"], env=e)
        assert code == 0, err
        assert sorted(r["status"] for r in data["results"]) == ["ok"] * 2
        assert all("lockstep" in r["protocol"] for r in data["results"])


def test_clean_removes_devicelab_folder_and_nothing_else(phone: EmulatedPhone, server: AdbServer, runner_arm64: Path,
                                                         env: dict[str, str], tmp_path: Path) -> None:
    e = _env(env, server)
    keep = phone.root / "data/local/tmp/users-own-file.txt"
    keep.write_text("not devicelab's")
    assert devicelab("run", "--suite", str(_suite(tmp_path / "s.yaml", [phone.serial], runner_arm64)), env=e).returncode == 0
    assert (phone.root / "data/local/tmp/devicelab").is_dir()
    p = devicelab("clean", phone.serial, env=e)
    assert p.returncode == 0 and "removed /data/local/tmp/devicelab" in p.stdout, p.stderr
    assert not (phone.root / "data/local/tmp/devicelab").exists() and keep.read_text() == "not devicelab's"
    p = devicelab("clean", phone.serial, env=e)
    assert p.returncode == 0 and "nothing to remove" in p.stdout


def test_a_hot_phone_is_flagged_throttled(server: AdbServer, runner_arm64: Path, env: dict[str, str],
                                          tmp_path: Path) -> None:
    # Throttling starts below the idle temperature: the big cluster's cap is down from the start.
    with EmulatedPhone(server, tmp_path / "hot", profile={"throttle_above_c": 1.0}) as phone:
        code, data, err = run_json("run", "--suite", str(_suite(tmp_path / "s.yaml", [phone.serial], runner_arm64)),
                                   env=_env(env, server))
    assert code == 0, err
    [r] = data["results"]
    assert r["status"] == "ok" and r["throttled"] is True and any("throttled" in n for n in r["notes"])


def test_inventory_phone_on_the_network_is_connected_or_named_unreachable(
        server: AdbServer, runner_arm64: Path, env: dict[str, str], tmp_path: Path) -> None:
    from android_env import free_port

    with EmulatedPhone(server, tmp_path / "net") as phone:
        server.run("disconnect", phone.address)
        dead = f"127.0.0.1:{free_port()}"
        inventory = tmp_path / "devices.yaml"
        inventory.write_text(yaml.safe_dump({"devices": [
            {"id": "lab-phone", "kind": "android", "address": phone.address},
            {"id": "gone-phone", "kind": "android", "address": dead}]}))
        e = _env(env, server)
        code, rows, err = run_json("devices", "--devices", str(inventory), env=e)
        assert code == 0, err
        by_id = {r["id"]: r for r in rows}
        assert by_id["lab-phone"]["model"] == "devicelab emulated phone"  # adb connect happened
        assert dead in by_id["gone-phone"]["error"]
        suite = _suite(tmp_path / "s.yaml", ["lab-phone"], runner_arm64)
        code, data, err = run_json("run", "--suite", str(suite), "--devices", str(inventory), env=e)
        assert code == 0 and data["results"][0]["device"] == "lab-phone", err
        p = devicelab("run", "--suite", str(suite), "--devices", str(inventory), "--device", "gone-phone", env=e)
        assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and dead in p.stderr, p.stderr


def test_dlbench_through_the_phone_matches_the_host_reference(native_arm64: dict[str, Any], phone: EmulatedPhone,
                                                               server: AdbServer, env: dict[str, str],
                                                               tmp_path: Path) -> None:
    """The arm64 dlbench, under the arm64 dlprobe, on the emulated phone: its fp32 outputs (every ncnn lower-precision
    switch off) pulled back and compared with ONNX Runtime fp32 on the host."""
    suite = tmp_path / "s.yaml"
    suite.write_text(yaml.safe_dump({"name": "dlbench-phone", "models": ["squeezenet1_1"], "engines": ["dlbench"],
                                     "threads": [1], "devices": [phone.serial],
                                     "protocol": {**FAST_PROTOCOL, "min_iterations": 3, "max_iterations": 3,
                                                  "accuracy_inputs": 2}}))
    code, data, err = run_json("run", "--suite", str(suite), env=_env(env, server))
    assert code == 0, err
    [r] = data["results"]
    assert r["status"] == "ok", r
    assert r["engine_version"] == native_arm64["dlbench_version"]
    assert r["protocol"]["pinning"]["method"].startswith("dlprobe")
    # dlprobe's ru_maxrss, or — when this config made its variant's accuracy pass — dlbench's own peak read before it
    # (ru_maxrss, which includes the pass, kept in protocol.dlprobe)
    assert r["peak_rss_bytes"] > 0 and (
        r["memory_method"].startswith("wait4 ru_maxrss of the runner under dlprobe")
        or (r["memory_method"].startswith("VmHWM of the runner process before its accuracy pass")
            and r["peak_rss_bytes"] <= 1.01 * r["protocol"]["dlprobe"]["ru_maxrss_bytes"])), r["memory_method"]
    assert r["protocol"]["dlprobe"]["cpus"] == r["cpus"] and r["protocol"]["dlprobe"]["samples"] > 0
    acc = r["accuracy"]
    assert acc["inputs"] == 2 and acc["cosine"] > 0.99999 and acc["top1_agreement"] == 1.0, acc
    assert acc["max_abs_diff"] < 1e-3, acc
    print(json.dumps({"arm64 vs host reference": acc}))
