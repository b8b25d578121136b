"""The farm beyond Android phones, on loopback with real Dask: an agent whose host has an emulated Android phone (real
adb server) and an emulated iPhone (real pymobiledevice3 against an emulated usbmuxd, tests/ios_env.py) starts one
worker per phone, each opening its own device kind; a run lands each job on its own device. The host's own device
as a farm worker is in tests/test_farm_envs.py (label environments run there)."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import pytest
import yaml
from android_env import AdbServer, EmulatedPhone, cli_env
from helpers import DEVICELAB, FAST_PROTOCOL, devicelab
from ios_env import BUNDLE_ID, launched_folder, start_iphone, write_devices
from test_farm import Proc, farm_test, status, wait_for

from devicelab.facts import DeviceEntry
from devicelab.store import open_store

pytest.importorskip("pymobiledevice3")

PROTOCOL = {**FAST_PROTOCOL, "accuracy_inputs": 0, "cooldown_timeout_seconds": 20}


@farm_test
def test_an_agent_serves_an_android_phone_and_an_iphone_each_with_its_own_kind(
        server: AdbServer, data_dir: Path, tmp_path: Path, native_arm64: dict[str, Any],
        ios_runner_app: Path) -> None:
    iphone = start_iphone(tmp_path)
    phone = EmulatedPhone(server, tmp_path / "android")
    procs: list[Proc] = []
    try:
        phone.start()
        # The agent's host lists the iPhone in its devices.yaml (its runner app, its pair records); the agent finds
        # it through usbmuxd by its UDID and hands the worker that entry.
        devices = write_devices(tmp_path / "devices.yaml", iphone, ios_runner_app)
        env = cli_env({**os.environ, "DEVICELAB_DATA": str(data_dir), "DEVICELAB_DB": str(tmp_path / "farm.sqlite"),
                       "COLUMNS": "200", "USBMUXD_SOCKET_ADDRESS": iphone.mux.address,
                       "DEVICELAB_DEVICES": str(devices)}, server)
        scheduler = Proc([DEVICELAB, "farm", "scheduler", "--port", "0"], env, tmp_path / "scheduler.log", True)
        procs.append(scheduler)
        # beats every 2 s: an iPhone's read (lockdown over TLS, then the battery) must fit in one interval
        agent = Proc([DEVICELAB, "farm", "agent", "--scheduler", scheduler.first_line, "--beat-seconds", "2",
                      "--scan-seconds", "1"], env, tmp_path / "agent.log")
        procs.append(agent)
        both = [phone.serial, iphone.udid]

        def up() -> dict[str, dict[str, Any]] | None:
            found = status(env)
            return found if all(found.get(d, {}).get("state") == "idle" for d in both) else None

        # the iPhone's beat: what the iOS kind reads of its battery (IOPMPowerSource), from its own worker. Taken
        # from a status where both are idle (a beat that came late on a busy machine reads nothing: unreachable).
        rows = wait_for("both phones idle", up, timeout=180)
        assert (rows[iphone.udid]["battery_percent"], rows[iphone.udid]["temperature_c"],
                rows[iphone.udid]["charging"]) == (81, 30.5, False), rows[iphone.udid]
        assert rows[iphone.udid]["host"] == platform.node()
        assert rows[phone.serial]["battery_percent"] == 80
        store = open_store(env["DEVICELAB_DB"], create=False)
        try:
            facts = {d: f.facts for d, f in store.device_facts().items()}
        finally:
            store.close()
        assert facts[iphone.udid]["kind"] == "ios" and facts[iphone.udid]["model"] == "iPhone14,2"
        assert facts[iphone.udid]["runner_app"] == str(ios_runner_app)  # the agent host's inventory entry
        assert facts[phone.serial]["kind"] == "android"

        suite = tmp_path / "mixed.yaml"
        suite.write_text(yaml.safe_dump({"name": "mixed", "models": ["squeezenet1_1"], "engines": ["dlbench"],
                                         "threads": [1], "devices": both, "protocol": PROTOCOL, "seed": 3}))
        p = devicelab("run", "--farm", scheduler.first_line, "--suite", str(suite), "--json", env=env, timeout=900)
        assert p.returncode == 0, p.stderr[-3000:]
        data = json.loads(p.stdout)
        by_device = {r["device"]: r for r in data["results"]}
        assert sorted(by_device) == sorted(both) and len(data["results"]) == 2
        assert all(r["status"] == "ok" for r in data["results"]), [(r["device"], r["status"], r["reason"])
                                                                   for r in data["results"]]
        ios_row, android_row = by_device[iphone.udid], by_device[phone.serial]
        assert ios_row["engine_version"].startswith("app-") and ios_row["cpus"] == []  # the runner app, unpinned
        assert ios_row["ext"]["ios_qos"] == "userInitiated"  # what the runner app (its stand-in) said on `ready`
        assert android_row["engine_version"] == native_arm64["dlbench_version"] and android_row["cpus"]
        # each job was run by its own device's worker, and the iPhone launched the runner app for it
        log = agent.text()
        for device in both:
            assert f"{device}: start {data['run_id']}: dlbench squeezenet1_1 fp32 1t round 1" in log, log[-3000:]
        assert any(launched_folder(ios_runner_app).glob("*.json"))
        assert iphone.phone.apps.get(BUNDLE_ID) is not None  # installed by the worker's begin_run
    finally:
        for proc in reversed(procs):
            proc.stop()
        phone.stop()
        iphone.close()
    # the agent started each worker with its kind and the entry its host knows the device by
    text = (tmp_path / "agent.log").read_text()
    assert f"worker {iphone.udid} (ios) started" in text and f"worker {phone.serial} (android) started" in text


def test_the_agent_hands_each_worker_its_kind_and_its_hosts_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                   ) -> None:
    """What a worker is started with: the discovered device, its kind, the options of the host's inventory entry
    that names it (by UDID or serial), and the host itself when asked."""
    from devicelab import devices as kinds
    from devicelab.config import parse_inventory
    from devicelab.farm.agent import Agent
    from devicelab.farm.worker import entry_from_args

    udid = "00008110-000A1B2C3D4E5F60"
    app = tmp_path / "R.app"
    app.mkdir()
    inventory = parse_inventory({"devices": [
        {"id": "iphone", "kind": "ios", "udid": udid, "runner_app": str(app), "pairing_records": str(tmp_path)},
        {"id": "pixel", "kind": "android", "serial": "SER1", "fixed_performance": True}]}, "devices.yaml")
    monkeypatch.setattr(kinds, "discovered", lambda known: ([DeviceEntry("SER1", "android", {"serial": "SER1",
                                                                                             "discovered": True}),
                                                             DeviceEntry(udid, "ios", {"udid": udid}),
                                                             DeviceEntry("SER2", "android", {"serial": "SER2"})], []))
    agent = Agent("tcp://127.0.0.1:1", str(tmp_path / "db.sqlite"), 1.0, 1.0, None, lambda m: None,
                  inventory=inventory, host_device="farm-host")
    entries, _ = agent.entries()
    assert entries == [
        DeviceEntry("SER1", "android", {"serial": "SER1", "fixed_performance": True, "discovered": True}),
        DeviceEntry(udid, "ios", {"udid": udid, "runner_app": str(app), "pairing_records": str(tmp_path)}),
        DeviceEntry("SER2", "android", {"serial": "SER2"}),
        DeviceEntry("farm-host", "host", {}),
    ]
    for entry in entries:  # what the worker makes of its argv is the entry again
        argv = agent.argv(entry)
        assert entry_from_args(argv[argv.index("--serial") + 1], argv[argv.index("--kind") + 1],
                               argv[argv.index("--options") + 1]) == entry
