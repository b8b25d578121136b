"""The iPhone kind end to end, as a user runs it: the real devicelab CLI → the real pymobiledevice3 client →
the emulated usbmuxd and iPhone (devicelab.testing.emulated_ios, real wire protocols on loopback, posing as
iOS 16) → the runner app, whose executable runs the host build of dlbench (tests/ios_env.py). Timings of the
host build are never looked at. iOS 17+ (tunneld, RSD) is tested with object-level fakes in test_ios_parts.py."""

from __future__ import annotations

import json
import re
import posixpath
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import FAST_PROTOCOL, devicelab, run_json
from ios_env import BUNDLE_ID, IPhone, cli_env, launched_folder, write_devices

pytest.importorskip("pymobiledevice3")
pytestmark = [pytest.mark.slow]

PROTOCOL = {**FAST_PROTOCOL, "accuracy_inputs": 0}


def _suite(path: Path, **fields: Any) -> Path:
    suite = {"name": "ios", "models": fields.pop("models", ["squeezenet1_1"]), "engines": ["dlbench"],
             "threads": [1], "protocol": {**PROTOCOL, **fields.pop("protocol", {})}, **fields}
    path.write_text(yaml.safe_dump(suite))
    return path


def _run(env: dict[str, str], *args: str) -> tuple[int, dict[str, Any], str]:
    return run_json("run", *args, env=env)


def _devicelab_files(iphone: IPhone) -> list[str]:
    root = iphone.container()
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_devices_lists_the_emulated_iphone_with_its_facts(iphone: IPhone, env: dict[str, str]) -> None:
    e = cli_env(env, iphone)  # no devices.yaml: the iPhone is discovered through usbmuxd
    code, rows, err = run_json("devices", env=e)
    assert code == 0, err
    row = next(r for r in rows if r["id"] == iphone.udid)
    assert row["kind"] == "ios" and row["source"] == "discovered"
    assert (row["model"], row["os"], row["abi"]) == ("iPhone14,2", "iOS 16.7.2 (20H115)", "arm64e")
    assert (row["product_type"], row["product_version"], row["cpu_architecture"], row["udid"]) == (
        "iPhone14,2", "16.7.2", "arm64e", iphone.udid)
    assert row["hardware_model"] == iphone.phone.values["HardwareModel"] and row["paired"] is True
    table = devicelab("devices", env=e)
    assert table.returncode == 0 and f"iPhone14,2 ({row['hardware_model']})" in table.stdout


def test_an_unpaired_phone_is_listed_without_a_pair_request(iphone: IPhone, env: dict[str, str]) -> None:
    """Listing never pairs: a Pair request is what puts "Trust This Computer?" on a real phone's screen."""
    shutil.rmtree(iphone.records)  # the host's record is not the phone's: none in the folder either
    iphone.phone.faults.not_paired = True
    iphone.phone.faults.trust_dialog = "accept"  # a Pair request would succeed (and be seen) if one were sent
    code, rows, err = run_json("devices", env=cli_env(env, iphone))
    assert code == 0, err
    row = next(r for r in rows if r["id"] == iphone.udid)
    assert row["paired"] is False and row["model"] == "iPhone14,2"
    assert "GetValue" in iphone.phone.lockdown_requests and "Pair" not in iphone.phone.lockdown_requests, \
        iphone.phone.lockdown_requests


def test_run_stores_ok_results_pushes_once_and_clean_removes_only_devicelabs_folder(
        iphone: IPhone, ios_runner_app: Path, env: dict[str, str], tmp_path: Path) -> None:
    e = cli_env(env, iphone, write_devices(tmp_path / "devices.yaml", iphone, ios_runner_app))
    # timed for over a second: Sysmontap samples every 0.25 s while the app runs
    suite = _suite(tmp_path / "s.yaml", precisions=["fp32"], protocol={"min_seconds": 1.5, "max_seconds": 2.5})
    args = ("--suite", str(suite), "--device", iphone.udid, "--engine", "dlbench", "--model", "squeezenet1_1",
            "--precision", "fp32,int8")
    code, data, err = _run(e, *args)
    assert code == 0, err
    installed = iphone.phone.apps.get(BUNDLE_ID).bundle_path  # installed by devicelab (begin_run)
    rows = {r["precision"]: r for r in data["results"]}
    assert sorted(rows) == ["fp32", "int8"]
    for r in rows.values():
        assert r["status"] == "ok" and r["device"] == "iphone", (r["status"], r["reason"])
        assert len(r["samples_s"]) >= PROTOCOL["min_iterations"] and r["median_s"] > 0
        assert r["engine_version"].startswith("app-") and r["cpus"] == []
        ext = r["ext"]
        assert ext["phys_footprint_bytes"] > 1 << 20  # dlbench with squeezenet loaded: megabytes, sampled by DVT
        assert ext["ios_thermal_state"] == {"before": "nominal", "after": "nominal"}
        assert ext["ios_qos"] == "userInitiated"
        assert "not joules" in ext["ios_energy_impact"]["unit"]
        for state in (r["state_before"], r["state_after"]):
            assert state["temperatures_c"] == {"battery": 30.5}
            assert state["power"]["battery_percent"] == 81 and state["charging"] is False
            assert any(u.startswith("cpufreq") for u in state["unavailable"])
        assert any(n.startswith("not pinned: iOS has no CPU-affinity API") for n in r["notes"])
        # iOS relays no stderr: the app's stderr file, pulled from the container when it ended (dlbench says where
        # it listened there)
        assert "dlbench: listening on 127.0.0.1:" in (r["stderr_tail"] or ""), r["stderr_tail"]
    first_push = sum(r["protocol"]["push"]["bytes"] for r in rows.values())
    assert first_push > 0
    # Second run: every file is in the container already (content-addressed), the app is not installed again, and
    # the app now reports iOS slowing the phone down: the rows say so and count as throttled.
    (iphone.container() / "Documents" / "thermal_state").write_text("serious")
    code, data, err = _run(e, *args)
    assert code == 0, err
    assert iphone.phone.apps.get(BUNDLE_ID).bundle_path == installed  # same content: not installed again
    for r in data["results"]:
        assert r["status"] == "ok", r["reason"]
        assert r["protocol"]["push"]["bytes"] == 0 and r["protocol"]["push"]["pushed_files"] == 0
        assert r["ext"]["ios_thermal_state"] == {"before": "serious", "after": "serious"}
        assert r["throttled"] is True and any("thermal state was serious" in n for n in r["notes"])
    files = _devicelab_files(iphone)
    assert not [f for f in files if f.startswith("Documents/devicelab/runs/")]  # run folders are removed
    assert all(f.startswith("Documents/devicelab/") or f == "Documents/thermal_state" for f in files), files
    # clean: devicelab's folder in the container, and nothing else (the app stays, as does the test's file)
    code, removed, err = run_json("clean", iphone.udid, env=e)
    assert code == 0, err
    assert removed["removed"].startswith("Documents/devicelab") and removed["bytes"] >= first_push
    assert _devicelab_files(iphone) == ["Documents/thermal_state"]
    assert iphone.phone.apps.get(BUNDLE_ID) is not None


def test_phone_gone_mid_config_is_infra_failed_and_resume_finishes(
        iphone: IPhone, ios_runner_app: Path, env: dict[str, str], tmp_path: Path) -> None:
    e = cli_env(env, iphone, write_devices(tmp_path / "devices.yaml", iphone, ios_runner_app))
    suite = _suite(tmp_path / "s.yaml", precisions=["fp32", "int8"], seed=2,
                   protocol={"min_seconds": 3.0, "max_seconds": 4.0})  # long enough to be cut off
    logs = iphone.phone.root / "logs"
    pulled = threading.Event()

    def pull_the_cable() -> None:
        # Once the first runner launch (after begin_run's --version probe) has been running for a moment.
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            launches = sorted(logs.glob(f"{BUNDLE_ID}.*.stdout")) if logs.is_dir() else []
            if len(launches) >= 2:
                time.sleep(1.5)
                iphone.mux.detach(iphone.phone)
                pulled.set()
                return
            time.sleep(0.05)

    cutter = threading.Thread(target=pull_the_cable, daemon=True)
    cutter.start()
    code, data, err = _run(e, "--suite", str(suite), "--device", "iphone")
    cutter.join(10)
    assert pulled.is_set()
    assert code == 1 and "results" in data, (code, err[-8000:])
    rows = data["results"]
    assert len(rows) == 2 and all(r["status"] == "infra-failed" for r in rows), [(r["status"], r["reason"]) for r in rows]
    assert all("device disconnected" in r["reason"] and "is not attached" in r["reason"] for r in rows), \
        [r["reason"] for r in rows]
    iphone.mux.attach(iphone.phone)  # plugged back in
    code, data, err = _run(e, "--resume", data["run_id"])
    assert code == 0, err
    assert sorted(r["status"] for r in data["results"]) == ["ok", "ok"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


FAULTS: dict[str, tuple[dict[str, Any], str]] = {
    "developer_mode_off": ({"developer_mode_off": True}, "Developer Mode is off on iPhone"),
    "image_not_mounted": ({"image_not_mounted": True}, "the developer disk image is not mounted"),
    "locked": ({"locked": True}, "is locked: unlock it"),
    "trust_pending": ({"not_paired": True, "trust_dialog": "pending"}, "\"Trust This Computer?\" dialog"),
    "not_paired": ({"not_paired": True, "trust_dialog": "deny"}, "is not paired with this computer"),
    "signature_expired": ({"signature_expired": True}, "or its signature expired"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_each_fault_gives_its_line_and_exit_2(fault: str, iphone: IPhone, ios_runner_app: Path,
                                               env: dict[str, str], tmp_path: Path) -> None:
    faults, words = FAULTS[fault]
    if faults.get("not_paired"):  # the host's record is not the phone's: none in the folder either
        shutil.rmtree(iphone.records)
    for name, value in faults.items():
        setattr(iphone.phone.faults, name, value)
    e = cli_env(env, iphone, write_devices(tmp_path / "devices.yaml", iphone, ios_runner_app))
    p = devicelab("run", "--suite", str(_suite(tmp_path / "s.yaml", precisions=["fp32"])), "--device", "iphone",
                  env=e)
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    lines = [line for line in p.stderr.splitlines() if line.startswith("error")]
    assert len(lines) == 1 and words in lines[0], p.stderr[-2000:]
    assert "Traceback" not in p.stderr
    code, stored, err = run_json("runs", env=e)
    assert code == 0 and stored == [], stored  # refused before the run: nothing stored


def test_the_app_is_installed_when_its_content_changes_or_someone_else_reinstalled_it(
        iphone: IPhone, ios_runner_app: Path, native_host: dict[str, Any], tmp_path: Path) -> None:
    """begin_run installs the runner app when its content hash differs from the one recorded in the container, and
    also when installd's bundle folder is not the one recorded: a reinstall from Xcode keeps the container (and
    the record in it) but not the folder."""
    from ios_env import build_runner_app

    from devicelab.devices.ios.device import IOSTransport, app_sha256
    from devicelab.facts import DeviceEntry

    def begin(app: Path) -> None:
        phone = IOSTransport(DeviceEntry("iphone", "ios", {"udid": iphone.udid, "runner_app": str(app),
                                                           "usbmux_address": iphone.mux.address,
                                                           "pairing_records": str(iphone.records)}))
        try:
            phone.begin_run()
        finally:
            phone.close()

    def installed() -> tuple[Path, str, dict[str, Any]]:
        app = iphone.phone.apps.get(BUNDLE_ID)
        record = json.loads((app.container / "Documents/devicelab/installed.json").read_text())
        return app.bundle_path, (app.bundle_path / "DevicelabRunner").read_text(), record

    dlbench = Path(native_host["artifacts"]["dlbench"]["path"])
    rebuilt = build_runner_app(tmp_path / "rebuilt", dlbench, marker="\n# rebuilt\n")
    xcode = build_runner_app(tmp_path / "xcode", dlbench, marker="\n# from Xcode\n")
    ours = (ios_runner_app / "DevicelabRunner").read_text()
    begin(ios_runner_app)
    first, exe, record = installed()
    assert exe == ours and record["sha256"] == app_sha256(ios_runner_app)
    begin(ios_runner_app)
    assert installed()[0] == first  # same content, same install: not installed again
    iphone.phone.apps.install_bundle(xcode)  # reinstalled behind devicelab's back; installed.json survives
    assert installed()[1].endswith("# from Xcode\n") and installed()[2] == record
    begin(ios_runner_app)
    path, exe, record = installed()
    assert exe == ours and path != first  # installed again: the engine version is the app that runs
    begin(rebuilt)  # the app's content changed: installed
    path2, exe, record = installed()
    assert exe.endswith("# rebuilt\n") and path2 != path and record["sha256"] == app_sha256(rebuilt)


def _bad_app(folder: Path, missing_executable: bool) -> Path:
    import plistlib

    app = folder / "Broken.app"
    app.mkdir(parents=True)
    (app / "Info.plist").write_bytes(plistlib.dumps({"CFBundleIdentifier": BUNDLE_ID,
                                                     "CFBundleExecutable": "Missing" if missing_executable else "x"}))
    if not missing_executable:
        (app / "x").write_text("#!/bin/sh\n")
        (app / "x").chmod(0o755)
    return app


@pytest.mark.parametrize("case", ["installd_refuses", "bundle_id_not_the_apps", "runner_app_missing"])
def test_an_app_that_cannot_be_installed_gives_one_line_and_exit_2(case: str, iphone: IPhone, ios_runner_app: Path,
                                                                    env: dict[str, str], tmp_path: Path) -> None:
    extra: dict[str, Any] = {}
    app = ios_runner_app
    if case == "installd_refuses":  # installd inspects the package and refuses it (no executable in the bundle)
        app, words = _bad_app(tmp_path / "b", True), f"the runner app {BUNDLE_ID} is not installed on iPhone"
    elif case == "bundle_id_not_the_apps":  # devices.yaml names another app: installing this one cannot provide it
        extra["bundle_id"] = "org.example.other"
        words = "the runner app org.example.other is not installed on iPhone"
    else:
        app, words = tmp_path / "Gone.app", "runner_app"
    e = cli_env(env, iphone, write_devices(tmp_path / "devices.yaml", iphone, app, **extra))
    p = devicelab("run", "--suite", str(_suite(tmp_path / "s.yaml", precisions=["fp32"])), "--device", "iphone",
                  env=e)
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    lines = [line for line in p.stderr.splitlines() if line.startswith("error")]
    assert len(lines) == 1 and words in lines[0], p.stderr[-2000:]
    assert "Traceback" not in p.stderr
    if case == "runner_app_missing":
        assert "does not exist" in lines[0], lines
    else:
        assert iphone.phone.apps.get("org.example.other") is None


def test_usbmuxd_not_running_and_phone_not_attached(iphone: IPhone, ios_runner_app: Path, env: dict[str, str],
                                                    tmp_path: Path) -> None:
    suite = str(_suite(tmp_path / "s.yaml", precisions=["fp32"]))
    nothing = f"127.0.0.1:{_free_port()}"  # nothing listens there
    e = cli_env(env, iphone, write_devices(tmp_path / "d1.yaml", iphone, ios_runner_app, usbmux_address=nothing))
    p = devicelab("run", "--suite", suite, "--device", "iphone", env=e)
    assert p.returncode == 2 and "usbmuxd is not running" in p.stderr and "Traceback" not in p.stderr, p.stderr
    iphone.mux.detach(iphone.phone)
    e = cli_env(env, iphone, write_devices(tmp_path / "d2.yaml", iphone, ios_runner_app))
    p = devicelab("run", "--suite", suite, "--device", "iphone", env=e)
    assert p.returncode == 2 and f"iPhone {iphone.udid} is not attached" in p.stderr, p.stderr


def test_ios17_without_a_tunnel_says_what_to_start(ios_runner_app: Path, env: dict[str, str],
                                                    tmp_path: Path) -> None:
    from ios_env import start_iphone

    iphone = start_iphone(tmp_path, product_version="17.4", build_version="21E219")
    try:
        e = cli_env(env, iphone, write_devices(tmp_path / "devices.yaml", iphone, ios_runner_app,
                                               tunneld_address=f"127.0.0.1:{_free_port()}"))
        p = devicelab("run", "--suite", str(_suite(tmp_path / "s.yaml", precisions=["fp32"])), "--device", "iphone",
                      env=e)
        assert p.returncode == 2, p.stderr
        assert "runs iOS 17.4" in p.stderr and "sudo pymobiledevice3 remote tunneld" in p.stderr, p.stderr
    finally:
        iphone.close()


def test_hostile_model_names_arrive_literally(iphone: IPhone, ios_runner_app: Path, env: dict[str, str],
                                              data_dir: Path, tmp_path: Path) -> None:
    from devicelab import zoo

    nasty = "m o'd;$(touch pwned1) `touch pwned2` \"q\"&x|y>z"
    folder = tmp_path / "my models; $(touch pwned3) 'x'"
    folder.mkdir()
    model = folder / f"{nasty}.onnx"
    shutil.copy(zoo.zoo_model("squeezenet1_1", data_dir / "zoo").path, model)
    e = cli_env(env, iphone, write_devices(tmp_path / "devices.yaml", iphone, ios_runner_app))
    suite = _suite(tmp_path / "s.yaml", precisions=["fp32"], models=[{"path": str(model), "name": nasty}])
    code, data, err = _run(e, "--suite", str(suite), "--device", "iphone")
    assert code == 0, err
    [r] = data["results"]
    assert r["status"] == "ok" and r["model"] == nasty, r["reason"]
    assert not list(iphone.phone.root.rglob("pwned*")) and not list(Path("/").glob("pwned*"))
    assert not list(tmp_path.rglob("pwned*"))
    manifest = json.loads((iphone.container() / "Documents/devicelab/manifest.json").read_text())
    assert all(path.startswith("Documents/devicelab/files/") for path in manifest)


HOSTILE = ["m o'd;$(touch pwned1) `touch pwned2` \"q\"&x|y>z.param", "new\nline.bin", "模型 é ☃.json",
           "-rf *.json", "a;b && c || d.bin"]


def test_hostile_names_reach_the_container_literally(iphone: IPhone, tmp_path: Path) -> None:
    """The transport's own put, run_folder and pull with names a user or a model may bring: each lands at exactly
    the container path its name says, nothing runs, and `..` (or a path outside devicelab's folder) is refused."""
    from ios_env import build_runner_app

    from devicelab.devices.ios.device import IOSTransport
    from devicelab.facts import DeviceEntry
    from devicelab.paths import sha256_file

    app = build_runner_app(tmp_path / "app", Path("/bin/true"))
    iphone.phone.apps.install_bundle(app)  # the container house_arrest vends
    container = iphone.container()
    local = tmp_path / "local"
    local.mkdir()
    files = []
    for i, name in enumerate(HOSTILE):
        path = local / f"f{i}"
        path.write_bytes(json.dumps({"options": {"weights": HOSTILE[1]}, "n": i}).encode() if name.endswith(".json")
                         else f"content {i}".encode())
        files.append((name, path))
    phone = IOSTransport(DeviceEntry("iphone", "ios", {"udid": iphone.udid, "runner_app": str(app),
                                                       "usbmux_address": iphone.mux.address,
                                                       "pairing_records": str(iphone.records)}))
    try:
        placed = phone.put(files)
        expected = [f"Documents/devicelab/files/{sha256_file(p)}/{name}" for name, p in files]
        assert placed.paths == expected
        for (name, path), where in zip(files, expected):
            assert (container / where).read_bytes() == path.read_bytes(), where
        folder = phone.run_folder(dict(zip(HOSTILE, expected)))
        assert folder.startswith("Documents/devicelab/runs/")
        config = json.loads((container / folder / HOSTILE[2]).read_text())
        assert config["options"]["weights"] == f"../../files/{sha256_file(files[1][1])}/{HOSTILE[1]}"  # literally
        # what the app would leave in its run folder, pulled back under the same hostile names
        for name in HOSTILE:
            (container / folder / f"out {name}").write_text(f"result of {name}")
            assert phone.pull(f"{folder}/out {name}", local / "pulled") is True
            assert (local / "pulled").read_text() == f"result of {name}"
        assert phone.pull(f"{folder}/not there", local / "x") is False
        for bad in ("..", "../x/..", "../escape.param"):
            with pytest.raises(ValueError, match=re.escape(bad)):  # the refusal names the name
                phone.put([(bad, files[0][1])])
        with pytest.raises(ValueError):
            phone.run_folder({"../escape.json": expected[2]})
        with pytest.raises(ValueError, match="is not under devicelab's folder"):
            phone.pull(f"{folder}/../../../Library/x", local / "x")
        phone.remove(folder)
        assert not (container / folder).exists()
    finally:
        phone.close()
    assert not list(iphone.phone.root.rglob("pwned*")) and not list(tmp_path.rglob("pwned*"))
    assert not list(Path.cwd().glob("pwned*"))
    outside = [p for p in container.rglob("*") if p.is_file() and not p.relative_to(container).as_posix().startswith(
        "Documents/devicelab/")]
    assert outside == [], outside


def test_energy_window_reads_the_battery_and_refuses_while_charging(
        iphone: IPhone, ios_runner_app: Path, env: dict[str, str], tmp_path: Path) -> None:
    """The window samples IOPMPowerSource over lockdown; the emulated battery draws the same current idle and busy,
    so the figure is None for that reason, with the samples counted. A charger: None before any window."""
    e = cli_env(env, iphone, write_devices(tmp_path / "devices.yaml", iphone, ios_runner_app))
    energy = {"energy": True, "energy_idle_seconds": 2.0, "energy_window_seconds": 2.0,
              "energy_min_window_seconds": 1.0}
    suite = str(_suite(tmp_path / "s.yaml", precisions=["fp32"], protocol=energy))
    code, data, err = _run(e, "--suite", suite, "--device", "iphone")
    assert code == 0, err
    [r] = data["results"]
    assert r["status"] == "ok" and r["energy_j_per_inference"] is None, r["reason"]
    assert "drew no more than idle" in r["energy_reason"] and r["energy_source"].startswith("ios-battery: IOPMPowerSource")
    window = r["protocol"]["energy"]
    assert window["samples"] >= 2 and window["idle_samples"] >= 2, window
    iphone.phone.battery.external_connected = True
    iphone.phone.battery.is_charging = True
    code, data, err = _run(e, "--suite", suite, "--device", "iphone")
    assert code == 0, err
    [r] = data["results"]
    assert r["status"] == "ok" and r["energy_j_per_inference"] is None
    assert "a charger feeds the iPhone" in r["energy_reason"], r["energy_reason"]


def test_energy_per_inference_comes_from_the_known_draw(iphone: IPhone, ios_runner_app: Path, env: dict[str, str],
                                                       tmp_path: Path) -> None:
    """A check of the plumbing, not a measurement: the emulated battery draws a test-set 300 mA more while the app
    is busy, so the window's power above idle must come out as 300 mA × the battery's voltage, and the joules per
    inference as that power × the window's wall time / its iterations."""
    iphone.phone.battery.busy_extra_ma = 300
    e = cli_env(env, iphone, write_devices(tmp_path / "devices.yaml", iphone, ios_runner_app))
    energy = {"energy": True, "energy_idle_seconds": 3.0, "energy_window_seconds": 4.0,
              "energy_min_window_seconds": 1.0}
    code, data, err = _run(e, "--suite", str(_suite(tmp_path / "s.yaml", precisions=["fp32"], protocol=energy)),
                           "--device", "iphone")
    assert code == 0, err
    [r] = data["results"]
    assert r["status"] == "ok", r["reason"]
    window = r["protocol"]["energy"]
    assert r["energy_j_per_inference"] is not None, (r["energy_reason"], window)
    known_w = 0.300 * iphone.phone.battery.voltage_mv / 1000
    # boundary reads (CPU use averaged over a read's 0.5 s) may straddle the window's start and end: a tolerance
    assert window["window_w"] - window["idle_w"] == pytest.approx(known_w, rel=0.25), window
    assert r["energy_j_per_inference"] == pytest.approx(
        (window["window_w"] - window["idle_w"]) * window["window_s"] / window["iterations"], rel=0.01), window


def test_phone_locked_during_a_run_gives_infra_failed_rows_with_the_line(
        iphone: IPhone, ios_runner_app: Path, env: dict[str, str], tmp_path: Path) -> None:
    """A fault the user must fix, met during the run (here: the phone locks itself after the first config's runner
    started), makes the rows after it infra-failed with that fault's line; unlocked, --resume finishes them."""
    e = cli_env(env, iphone, write_devices(tmp_path / "devices.yaml", iphone, ios_runner_app))
    suite = _suite(tmp_path / "s.yaml", precisions=["fp32", "int8"], seed=2)
    logs = iphone.phone.root / "logs"
    locked = threading.Event()

    def lock_it() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if logs.is_dir() and len(list(logs.glob(f"{BUNDLE_ID}.*.stdout"))) >= 2:
                iphone.phone.faults.locked = True
                locked.set()
                return
            time.sleep(0.02)

    locker = threading.Thread(target=lock_it, daemon=True)
    locker.start()
    code, data, err = _run(e, "--suite", str(suite), "--device", "iphone")
    locker.join(10)
    assert locked.is_set() and code == 1, err[-3000:]
    failed = [r for r in data["results"] if r["status"] != "ok"]
    assert failed and all(r["status"] == "infra-failed" and f"iPhone {iphone.udid} is locked: unlock it" in r["reason"]
                          for r in failed), [(r["status"], r["reason"]) for r in data["results"]]
    iphone.phone.faults.locked = False
    code, data, err = _run(e, "--resume", data["run_id"])
    assert code == 0, err
    assert sorted(r["status"] for r in data["results"]) == ["ok", "ok"]


def _launched_configs(app: Path, before: set[Path]) -> list[tuple[str, dict[str, Any]]]:
    """The configs the runner app was launched with since `before` (the stand-in keeps a copy of each): (the config's
    path in the container, its content), oldest first."""
    folder = launched_folder(app)
    new = sorted((p for p in folder.glob("*.json") if p not in before), key=lambda p: p.stat().st_mtime)
    return [(p.with_suffix(".path").read_text(), json.loads(p.read_text())) for p in new]


def test_core_ml_package_reaches_the_container_whole_and_a_second_run_pushes_nothing(
        iphone: IPhone, ios_runner_app: Path, env: dict[str, str], tmp_path: Path) -> None:
    """A Core ML config stages a folder (model.mlpackage): every file of it lands in the app's container under one
    content-addressed folder, and the config the app is launched with names that folder. The emulated iPhone runs the
    host build of dlbench, which has no Core ML: the row is failed with dlbench's own words, never a measurement."""
    pytest.importorskip("coremltools")
    e = cli_env(env, iphone, write_devices(tmp_path / "devices.yaml", iphone, ios_runner_app))
    args = ("--suite", str(_suite(tmp_path / "s.yaml", precisions=["fp32"])), "--device", iphone.udid,
            "--engine", "dlbench", "--model", "squeezenet1_1", "--backend", "coreml-cpu")
    folder = launched_folder(ios_runner_app)
    before = set(folder.glob("*.json")) if folder.is_dir() else set()
    code, data, err = _run(e, *args)
    [r] = data["results"]
    assert code == 1 and r["status"] == "failed" and r["backend"] == "coreml-cpu", (code, r["reason"], err[-2000:])
    assert r["reason"].startswith("options.library:") and "coreml" in r["reason"] and "\n" not in r["reason"]
    assert not r.get("samples_s") and r.get("median_s") is None  # no timing was produced
    [(config_path, config)] = _launched_configs(ios_runner_app, before)
    assert config["options"]["library"] == "coreml" and config["options"]["compute_units"] == "cpuOnly"
    model = posixpath.normpath(posixpath.join(posixpath.dirname(config_path), config["model"]))
    assert model.startswith("Documents/devicelab/files/") and model.endswith("/model.mlpackage"), model
    [local] = [p for p in Path(env["DEVICELAB_DATA"]).rglob("*-fp32-*.mlpackage") if (p / "Manifest.json").is_file()]
    local_files = {p.relative_to(local).as_posix(): p.read_bytes() for p in local.rglob("*") if p.is_file()}
    there = iphone.container() / model
    device_files = {p.relative_to(there).as_posix(): p.read_bytes() for p in there.rglob("*") if p.is_file()}
    assert device_files == local_files  # Manifest.json, the model spec and the weights, byte for byte
    assert {"Manifest.json", "Data/com.apple.CoreML/model.mlmodel"} <= set(device_files)
    assert any(name.startswith("Data/com.apple.CoreML/weights/") for name in device_files), sorted(device_files)
    assert r["protocol"]["artifact_bytes"] == sum(len(b) for b in local_files.values())
    assert r["protocol"]["push"]["bytes"] >= r["protocol"]["artifact_bytes"]
    code, data, err = _run(e, *args)
    [r] = data["results"]
    assert r["status"] == "failed" and r["reason"].startswith("options.library:"), r["reason"]
    assert r["protocol"]["push"]["bytes"] == 0 and r["protocol"]["push"]["pushed_files"] == 0


def test_batch_mode_runs_a_fixed_count_pulls_the_results_and_a_crash_keeps_its_stderr(
        iphone: IPhone, ios_runner_app: Path, env: dict[str, str], tmp_path: Path) -> None:
    """`channel: batch`: the app gets its iteration count (max_iterations) in its config and no connection; its
    results file, pulled after it exits, is parsed as the live channel would be. Then the app dies mid-batch: a
    failed row whose stderr tail is the app's stderr file, pulled from the container."""
    e = cli_env(env, iphone, write_devices(tmp_path / "devices.yaml", iphone, ios_runner_app, channel="batch"))
    suite = _suite(tmp_path / "s.yaml", precisions=["fp32"], protocol={"max_iterations": 12, "min_iterations": 5})
    folder = launched_folder(ios_runner_app)
    before = set(folder.glob("*.json")) if folder.is_dir() else set()
    code, data, err = _run(e, "--suite", str(suite), "--device", "iphone")
    assert code == 0, err[-3000:]
    [r] = data["results"]
    assert r["status"] == "ok", r["reason"]
    assert len(r["samples_s"]) == 12 and all(x > 0 for x in r["samples_s"])
    protocol = r["protocol"]
    assert protocol["stop_reason"] == "batch" and protocol["batches"] == 1
    assert protocol["batch"]["iterations"] == 12 and "stopping rule" in protocol["batch"]["rule"]
    assert protocol["warmup"]["by"] == "runner"
    [(config_path, config)] = _launched_configs(ios_runner_app, before)
    assert config["iterations"] == 12
    assert config["results_file"] == f"{posixpath.dirname(config_path)}/results.jsonl"
    assert not [f for f in _devicelab_files(iphone) if f.startswith("Documents/devicelab/runs/")]

    (iphone.container() / "Documents" / "crash_mid_batch").write_text("libc++abi: terminating (test crash)\n")
    suite = _suite(tmp_path / "s2.yaml", precisions=["fp32"], protocol={"max_iterations": 100000,
                                                                        "min_iterations": 5})
    code, data, err = _run(e, "--suite", str(suite), "--device", "iphone")
    [r] = data["results"]
    assert code == 1 and r["status"] == "failed", (r["status"], r["reason"])
    assert r["reason"].startswith("runner ended before finishing") and "said `done`" in r["reason"], r["reason"]
    assert "libc++abi: terminating (test crash)" in (r["stderr_tail"] or ""), r["stderr_tail"]
