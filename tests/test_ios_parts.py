"""The iPhone kind's pure parts, without a phone: devices.yaml checks, threads-only planning, container paths and
the config rewrite, the error lines, the battery state, the per-device event loop — and the iOS 17+ path (DVT
through tunneld's RSD tunnel) with object-level fakes of pymobiledevice3's tunneld API and RSD service, the way
pymobiledevice3's own tests replace what they cannot reach."""

from __future__ import annotations

import asyncio
import json
import plistlib

import zipfile
from pathlib import Path
from typing import Any

import pytest

from devicelab.config import ConfigError, parse_inventory
from devicelab.devices.base import TransportLostError
from devicelab.devices.ios import errors, files
from devicelab.devices.ios.device import (IOSTransport, _DvtSession, app_bundle_id, app_sha256, battery_state,
                                          rsd_for)
from devicelab.devices.ios.energy import IORegistryUnits, IOSBatterySource, sample
from devicelab.devices.ios.loop import DeviceLoop
from devicelab.facts import DeviceEntry, DeviceFacts
from devicelab.plan import unpinned_threads

UDID = "00008110-000A1B2C3D4E5F60"


def _app(tmp_path: Path, bundle_id: str = "org.devicelab.dlbench") -> Path:
    app = tmp_path / "Runner.app"
    app.mkdir()
    (app / "Info.plist").write_bytes(plistlib.dumps({"CFBundleIdentifier": bundle_id,
                                                     "CFBundleExecutable": "Runner"}))
    (app / "Runner").write_text("#!/bin/sh\n")
    (app / "Runner").chmod(0o755)
    return app


# ---- devices.yaml


def test_ios_entry_checks_name_each_key(tmp_path: Path) -> None:
    app = _app(tmp_path)
    ok = parse_inventory({"devices": [{"id": "phone", "kind": "ios", "udid": UDID, "runner_app": str(app)}]}, "t")
    assert ok.find(UDID) is ok.find("phone") is not None
    with pytest.raises(ConfigError) as e:
        parse_inventory({"devices": [{"id": "p", "kind": "ios", "udid": "x y", "runner_app": str(tmp_path / "No.app"),
                                      "bundle_id": "bad id!", "usbmux_address": "nohost"}]}, "t")
    problems = e.value.problems
    assert len(problems) == 4, problems
    assert all(p.startswith("devices[0].") for p in problems)
    assert any("udid: 'x y' is not allowed" in p for p in problems)
    assert any("runner_app:" in p and "does not exist" in p for p in problems)
    assert any("bundle_id: 'bad id!' is not allowed" in p for p in problems)
    assert any("usbmux_address: 'nohost' is not allowed; allowed: HOST:PORT" in p for p in problems)
    with pytest.raises(ConfigError) as e:
        parse_inventory({"devices": [{"id": "p", "kind": "ios"}]}, "t")
    assert [p.split(":")[0] for p in e.value.problems] == ["devices[0].udid", "devices[0].runner_app"]


def test_channel_is_tcp_or_batch(tmp_path: Path) -> None:
    app = _app(tmp_path)
    entry = {"id": "phone", "kind": "ios", "udid": UDID, "runner_app": str(app)}
    for channel, batch in ((None, False), ("tcp", False), ("batch", True)):
        inventory = parse_inventory({"devices": [{**entry, **({"channel": channel} if channel else {})}]}, "t")
        found = inventory.find("phone")
        assert found is not None
        transport = IOSTransport(found)
        assert transport.batch is batch
        transport.loop.close()
    with pytest.raises(ConfigError) as e:
        parse_inventory({"devices": [{**entry, "channel": "usb"}]}, "t")
    assert e.value.problems == ["devices[0].channel: 'usb' is not allowed; allowed: tcp, batch"]


# ---- planning: threads only


def _facts() -> DeviceFacts:
    return DeviceFacts("phone", "ios", "iPhone14,2", "iOS 16.7.2", "arm64e", (), ())


def test_ios_rows_run_threads_unpinned_and_refuse_cpu_lists() -> None:
    why = "iOS has no CPU-affinity API (threads only)"
    assert unpinned_threads(_facts(), "big", 2, why) == (2, ())
    assert unpinned_threads(_facts(), "all", 4, why) == (4, ())
    assert unpinned_threads(_facts(), "0,2", 2, why) == "affinity '0,2' is unsupported on ios devices: " + why
    assert unpinned_threads(_facts(), "little", 1, why).startswith("affinity 'little' is unsupported")
    assert "reports no CPU count" in str(unpinned_threads(_facts(), "all", "all", why))


# ---- files in the container


def test_container_paths_stay_in_devicelabs_folder() -> None:
    sha = "ab" * 32
    assert files.file_path(sha, "model.param") == f"Documents/devicelab/files/{sha}/model.param"
    for bad in ("../x", "a/b", "", "."):
        with pytest.raises(ValueError):
            files.file_path(sha, bad)
    assert files.run_folder_of("Documents/devicelab/runs/abc") == "Documents/devicelab/runs/abc"
    for outside in ("Documents/devicelab/runs/../../Library", "Documents", "/etc", "Documents/devicelab/files/x"):
        with pytest.raises(ValueError):
            files.run_folder_of(outside)


def test_config_names_the_content_addressed_files() -> None:
    folder = "Documents/devicelab/runs/r1"
    links = {"model.param": "Documents/devicelab/files/aa/model.param",
             "model.bin": "Documents/devicelab/files/bb/model.bin",
             "input0.bin": "Documents/devicelab/files/cc/input0.bin"}
    config = {"model": "model.param", "options": {"weights": "model.bin"}, "label": "model.param x",
              "inputs": [{"name": "model.bin", "file": "input0.bin"}], "outputs_file": "outputs.npz", "threads": 2}
    out = json.loads(files.config_bytes(json.dumps(config).encode(), folder, links) or b"")
    assert out["model"] == "../../files/aa/model.param"
    assert out["options"]["weights"] == "../../files/bb/model.bin"
    assert out["inputs"][0]["file"] == "../../files/cc/input0.bin"
    assert out["outputs_file"] == "outputs.npz" and out["threads"] == 2 and out["label"] == "model.param x"
    assert out["inputs"][0]["name"] == "model.bin"  # a tensor name is data, even when it equals a file's name
    labelled = json.loads(files.config_bytes(json.dumps({**config, "label": "input0.bin"}).encode(), folder, links)
                          or b"")
    assert labelled["label"] == "input0.bin"
    nested = {**config, "accuracy_files": [[{"name": "x", "file": "input0.bin"}]]}
    out = json.loads(files.config_bytes(json.dumps(nested).encode(), folder, links) or b"")
    assert out["accuracy_files"][0][0]["file"] == "../../files/cc/input0.bin"
    assert files.config_bytes(b"not json", folder, links) is None


def test_a_folder_is_placed_whole_under_its_tree_hash_and_the_config_names_it() -> None:
    """A Core ML package (a folder the app opens as one) lands in one place, named by the whole folder's content;
    the config's `model.mlpackage` becomes the path to that folder, and batch mode's results file a path from the
    app's home into the run folder."""
    a, b, c = "aa" * 32, "bb" * 32, "cc" * 32
    staged = [("config.json", a), ("model.mlpackage/Manifest.json", b),
              ("model.mlpackage/Data/com.apple.CoreML/model.mlmodel", c), ("input0.bin", c)]
    placed = files.placements(staged)
    assert placed[0] == f"Documents/devicelab/files/{a}/config.json" and placed[3].endswith(f"/{c}/input0.bin")
    tree = placed[1].split("/")[3]
    assert placed[1] == f"Documents/devicelab/files/{tree}/model.mlpackage/Manifest.json"
    assert placed[2] == f"Documents/devicelab/files/{tree}/model.mlpackage/Data/com.apple.CoreML/model.mlmodel"
    assert tree not in (a, b, c)
    changed = files.placements([(n, a if n.endswith("model.mlmodel") else h) for n, h in staged])
    assert changed[1].split("/")[3] != tree  # another file inside: another folder, nothing overwritten
    assert files.placements(list(reversed(staged)))[::-1] == placed  # order does not change the tree
    with pytest.raises(ValueError):
        files.placements([("model.mlpackage/../../x", a)])
    folder = "Documents/devicelab/runs/r1"
    links = dict(zip((n for n, _ in staged), placed))
    config = {"model": "model.mlpackage", "inputs": [{"file": "input0.bin"}], "results_file": "results.jsonl"}
    out = json.loads(files.config_bytes(json.dumps(config).encode(), folder, links) or b"")
    assert out["model"] == f"../../files/{tree}/model.mlpackage"
    assert out["inputs"][0]["file"] == f"../../files/{c}/input0.bin"
    assert out["results_file"] == f"{folder}/results.jsonl"
    # A folder whose files are not laid out under one path cannot be named: the value is kept as it is.
    scattered = {"m/x": "Documents/devicelab/files/11/m/x", "m/y": "Documents/devicelab/files/22/m/y"}
    assert files.folder_targets(scattered) == {}


def test_port_file_is_read_only_when_complete() -> None:
    assert files.port_file_port(b'{"port": 50123, "pid": 77}') == (50123, 77)
    assert files.port_file_port(b'{"port": 0}') is None
    assert files.port_file_port(b'{"por') is None


def test_app_hash_and_bundle_id(tmp_path: Path) -> None:
    app = _app(tmp_path)
    before = app_sha256(app)
    assert app_bundle_id(app) == "org.devicelab.dlbench"
    (app / "Runner").write_text("#!/bin/sh\necho changed\n")
    assert app_sha256(app) != before
    ipa = tmp_path / "Runner.ipa"
    with zipfile.ZipFile(ipa, "w") as z:
        z.writestr("Payload/Runner.app/Info.plist", plistlib.dumps({"CFBundleIdentifier": "com.example.r"}))
    assert app_bundle_id(ipa) == "com.example.r"


# ---- the lines a user meets


def test_each_pymobiledevice3_fault_gives_its_line() -> None:
    from pymobiledevice3 import exceptions as x

    cases = {
        x.ConnectionFailedToUsbmuxdError(): "usbmuxd is not running",
        x.NotPairedError(): "is not paired with this computer",
        x.PairingDialogResponsePendingError(): "\"Trust This Computer?\" dialog",
        x.PasswordRequiredError(): "is locked: unlock it",
        x.DeveloperModeIsNotEnabledError(): "Developer Mode is off",
        x.InvalidServiceError("InvalidService", UDID, "16.7.2"): "developer disk image is not mounted",
        x.TunneldConnectionError(): "sudo pymobiledevice3 remote tunneld",
        x.AppNotInstalledError(): "is not installed on iPhone",
    }
    for error, words in cases.items():
        line = errors.classify(error, UDID, "16.7.2", "org.devicelab.dlbench")
        assert line is not None and words in line, (type(error).__name__, line)
        assert "\n" not in line
    assert "Apple's server" in errors.image_not_mounted(UDID, 17)
    assert "Apple's server" not in errors.image_not_mounted(UDID, 16)
    assert errors.classify(ValueError("x"), UDID, "16.7.2") is None
    assert issubclass(errors.IOSSetupError, TransportLostError)


# ---- state and energy


def test_battery_state_names_what_is_unavailable() -> None:
    state = battery_state({"Temperature": 3050, "IsCharging": False, "ExternalConnected": False,
                           "CurrentCapacity": 81, "InstantAmperage": -420, "Voltage": 3870})
    assert state["temperatures_c"] == {"battery": 30.5} and state["charging"] is False
    assert state["power"]["battery_percent"] == 81 and state["power"]["plugged"] == []
    assert any(u.startswith("cpufreq") for u in state["unavailable"])
    empty = battery_state(None)
    assert empty["temperatures_c"] == {} and any(u.startswith("battery:") for u in empty["unavailable"])


def test_energy_is_none_with_the_reason_while_charging() -> None:
    from devicelab.measure import ProtocolSettings

    settings = ProtocolSettings()
    plugged = battery_state({"Temperature": 3000, "IsCharging": True, "ExternalConnected": True,
                             "InstantAmperage": 300, "Voltage": 4100})
    source = IOSBatterySource(None)  # type: ignore[arg-type]
    why = source.unavailable(settings, plugged)
    assert why is not None and why.joules_per_inference is None and "charger feeds the iPhone" in str(why.reason)
    unplugged = battery_state({"Temperature": 3000, "IsCharging": False, "ExternalConnected": False,
                               "InstantAmperage": -420, "Voltage": 3870})
    assert source.unavailable(settings, unplugged) is None
    s = sample({"InstantAmperage": -420, "Voltage": 3870}, 1.0)
    assert s is not None and IORegistryUnits.watts(s) == pytest.approx(0.420 * 3.870)


# ---- the event loop behind the synchronous transport


def test_device_loop_runs_coroutines_and_times_out() -> None:
    loop = DeviceLoop("test")
    try:
        async def value() -> int:
            return 7

        assert loop.run(value(), 5) == 7
        with pytest.raises(TimeoutError):
            loop.run(asyncio.sleep(30), 0.2)
    finally:
        loop.close()
    loop.close()  # a second close does nothing
    with pytest.raises(RuntimeError):
        loop.run(value(), 1)


# ---- iOS 17+: DVT through the RSD tunnel that tunneld keeps (object-level fakes)


def test_ios17_without_tunneld_says_what_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    from pymobiledevice3.exceptions import TunneldConnectionError
    from pymobiledevice3.tunneld import api

    async def not_running(udid: str, *a: Any, **k: Any) -> Any:
        raise TunneldConnectionError()

    async def no_tunnel(udid: str, *a: Any, **k: Any) -> Any:
        return None

    for fake, words in ((not_running, "tunneld is not running"), (no_tunnel, "no tunnel to this iPhone")):
        monkeypatch.setattr(api, "get_tunneld_device_by_udid", fake)
        with pytest.raises(errors.IOSSetupError) as e:
            asyncio.run(rsd_for(UDID, "17.4"))
        assert "sudo pymobiledevice3 remote tunneld" in str(e.value) and words in str(e.value)
        assert "runs iOS 17.4" in str(e.value)


def test_ios17_dvt_goes_through_the_tunnels_rsd(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """On 17+ the transport asks tunneld for the phone's RSD and opens DVT there (the dtservicehub service),
    never over lockdown."""
    from pymobiledevice3.remote.remote_service_discovery import RemoteServiceDiscoveryService
    from pymobiledevice3.tunneld import api

    asked: list[str] = []

    class FakeRsd(RemoteServiceDiscoveryService):
        def __init__(self) -> None:  # no tunnel to dial: only what DVT asks of it
            self.peer_info = {"Properties": {"OSVersion": "17.4"}}

        def _require_peer_info(self) -> dict[str, Any]:
            return self.peer_info

        async def start_lockdown_developer_service(self, name: str, *a: Any, **k: Any) -> Any:
            asked.append(name)
            raise ConnectionRefusedError("fake RSD: no service behind it")

        async def start_lockdown_service(self, name: str, *a: Any, **k: Any) -> Any:
            asked.append(name)
            raise ConnectionRefusedError("fake RSD: no service behind it")

        async def get_service_connection_attributes(self, name: str, *a: Any, **k: Any) -> Any:
            asked.append(name)
            raise ConnectionRefusedError("fake RSD: no service behind it")

    rsd = FakeRsd()
    udids: list[str] = []

    async def tunnel(udid: str, *a: Any, **k: Any) -> Any:
        udids.append(udid)
        return rsd

    monkeypatch.setattr(api, "get_tunneld_device_by_udid", tunnel)

    class FakeLockdown:
        all_values = {"ProductVersion": "17.4"}

    phone = IOSTransport(DeviceEntry("p", "ios", {"udid": UDID, "runner_app": str(_app(tmp_path)),
                                                  "usbmux_address": "127.0.0.1:1"}))
    try:
        phone._ld, phone._version = FakeLockdown(), "17.4"
        source = phone.loop.run(phone._dvt_source(), 10)
        assert source is rsd and udids == [UDID]
        session = _DvtSession(source)
        with pytest.raises(ConnectionRefusedError, match="fake RSD"):
            phone.loop.run(session.open(), 10)
        assert asked and all(name == "com.apple.instruments.dtservicehub" for name in asked), asked
        phone._version = "16.7.2"
        assert phone.loop.run(phone._dvt_source(), 10) is phone._ld  # before 17: lockdown itself
    finally:
        phone.loop.close()


def test_cpus_are_refused_on_ios(tmp_path: Path) -> None:
    phone = IOSTransport(DeviceEntry("p", "ios", {"udid": UDID, "runner_app": str(_app(tmp_path))}))
    try:
        with pytest.raises(OSError, match="affinity and cpus are unsupported on iOS"):
            phone.spawn(["app:org.devicelab.dlbench", "c.json"], {}, [0, 1], "Documents/devicelab/runs/x")
        with pytest.raises(OSError, match="only the installed runner app"):
            phone.spawn(["/data/local/tmp/dlbench", "c.json"], {}, [], "Documents/devicelab/runs/x")
        assert phone.installed_program("dlbench") == "app:org.devicelab.dlbench"
        assert phone.installed_program("dlprobe") is None
        assert isinstance(phone.native_targets(), str)
    finally:
        phone.loop.close()



def test_without_pymobiledevice3_devices_says_so_in_one_line(env: dict[str, str], tmp_path: Path) -> None:
    """pymobiledevice3 is an optional extra: without it `devicelab devices` lists the rest and says, once, why no
    iPhone is listed (here its absence is simulated: the import system finds no such module)."""
    import subprocess
    import sys

    code = ("import sys, importlib.abc\n"
            "class Hide(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] == 'pymobiledevice3':\n"
            "            raise ModuleNotFoundError(name)\n"
            "sys.meta_path.insert(0, Hide())\n"
            "from devicelab.cli import main\n"
            "sys.exit(main(['devices']))\n")
    p = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert "host" in p.stdout
    notes = [line for line in p.stderr.splitlines() if "pymobiledevice3" in line]
    assert notes == ["note: iPhones are not listed: pymobiledevice3 is not installed (pip install 'devicelab[ios]')"]


def test_a_closed_transport_runs_again_on_a_fresh_loop(tmp_path: Path) -> None:
    """The sweep may close a device and use it again (a second run in one process): close() leaves a live loop,
    and the lock that serializes exchanges belongs to the new one."""
    phone = IOSTransport(DeviceEntry("p", "ios", {"udid": UDID, "runner_app": str(_app(tmp_path)),
                                                  "usbmux_address": "127.0.0.1:1"}))

    async def value() -> int:
        await asyncio.sleep(0.2)  # long enough for the other exchange to wait on the lock
        return 3

    def two_at_once() -> list[int]:
        import threading

        got: list[int] = []
        threads = [threading.Thread(target=lambda: got.append(phone.call("an exchange", value))) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        return got

    assert two_at_once() == [3, 3]
    phone.close()
    phone.close()
    assert two_at_once() == [3, 3]
    phone.loop.close()


def test_close_leaves_no_loop_thread_and_a_listing_starts_none(tmp_path: Path) -> None:
    """The device's loop starts on first use and close() stops it without starting another."""
    import threading

    udid = "00008110-00LOOPTHREAD0"  # a UDID of its own: its loop thread's name is this test's alone
    phone = IOSTransport(DeviceEntry("p", "ios", {"udid": udid, "runner_app": str(_app(tmp_path)),
                                                  "usbmux_address": "127.0.0.1:1"}))

    def loops() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == f"devicelab-ios-{udid[:12]}"]

    assert loops() == [] and phone.loop_closed()  # nothing started yet

    async def value() -> int:
        return 3

    assert phone.call("an exchange", value) == 3
    assert len(loops()) == 1
    phone.close()
    phone.close()
    assert loops() == [] and phone.loop_closed()


def test_pull_and_the_port_file_stay_in_devicelabs_folder(tmp_path: Path) -> None:
    """Nothing outside Documents/devicelab is read (nor removed, for the port file) — refused before any exchange."""
    phone = IOSTransport(DeviceEntry("p", "ios", {"udid": UDID, "runner_app": str(_app(tmp_path)),
                                                  "usbmux_address": "127.0.0.1:1"}))
    try:
        for outside in ("Documents/devicelab/runs/../../Library/Preferences/x.plist", "Library/x", "/etc/passwd",
                        "Documents/devicelab"):
            with pytest.raises(ValueError, match="is not under devicelab's folder"):
                phone.pull(outside, tmp_path / "x")
            with pytest.raises(ValueError, match="is not under devicelab's folder"):
                phone._wait_port(None, 1, outside)  # type: ignore[arg-type]
        assert phone.loop_closed()  # refused before anything reached the (absent) phone
    finally:
        phone.close()


def test_discovery_runs_on_its_own_loop_inside_a_running_one(env: dict[str, str], tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A caller inside a running event loop (a Dask worker, a notebook) gets the listing, not a false "usbmuxd is
    not running" note; the address is USBMUXD_SOCKET_ADDRESS's."""
    from ios_env import start_iphone

    from devicelab.devices import ios

    iphone = start_iphone(tmp_path)
    try:
        monkeypatch.setenv("USBMUXD_SOCKET_ADDRESS", iphone.mux.address)

        async def inside() -> tuple[list[DeviceEntry], list[str]]:
            return ios.discovered_entries(set())

        entries, notes = asyncio.run(inside())
        assert notes == [] and [e.id for e in entries] == [iphone.udid]
        assert "ListDevices" in iphone.mux.requests
    finally:
        iphone.close()


def test_tests_reach_no_real_usbmuxd(env: dict[str, str], empty_usbmuxd: Any) -> None:
    """Every CLI a test starts lists iPhones from the session's empty emulated usbmuxd, never the machine's own."""
    from helpers import run_json

    assert env["USBMUXD_SOCKET_ADDRESS"] == empty_usbmuxd.address
    before = empty_usbmuxd.requests.count("ListDevices")
    code, rows, err = run_json("devices", env=env)
    assert code == 0, err
    assert not [r for r in rows if r["kind"] == "ios"] and "usbmuxd" not in err, err
    assert empty_usbmuxd.requests.count("ListDevices") > before  # the listing went there


def test_a_call_retries_a_lost_connection_once_and_a_timeout_never(tmp_path: Path) -> None:
    """A broken connection is retried on a fresh lockdown (the dropped one is closed); a timeout is not retried (a
    600 s push would become 1200 s)."""
    from ios_env import start_iphone

    iphone = start_iphone(tmp_path)
    phone = IOSTransport(DeviceEntry("p", "ios", {"udid": iphone.udid, "runner_app": str(_app(tmp_path)),
                                                  "usbmux_address": iphone.mux.address,
                                                  "pairing_records": str(iphone.records)}))
    closed: list[str] = []

    class Lockdown:
        all_values = {"ProductVersion": "16.7.2"}

        async def close(self) -> None:
            closed.append("closed")

    try:
        attempts: list[int] = []

        async def slow() -> int:
            attempts.append(1)
            await asyncio.sleep(30)
            return 0

        phone._ld = Lockdown()
        with pytest.raises(OSError, match="TimeoutError"):
            phone.call("a slow exchange", slow, 0.3)
        assert len(attempts) == 1 and closed == ["closed"] and phone._ld is None

        async def flaky() -> int:
            attempts.append(1)
            if len(attempts) == 2:
                raise ConnectionResetError("the connection broke")
            return 5

        phone._ld = Lockdown()
        assert phone.call("a flaky exchange", flaky) == 5
        assert len(attempts) == 3 and closed == ["closed", "closed"]
    finally:
        phone.close()
        iphone.close()


def test_ios17_a_listed_tunnel_that_cannot_be_connected_says_what_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """tunneld lists the phone, but its tunnel refuses: pymobiledevice3's get_tunneld_device_by_udid then indexes an
    empty list (IndexError); the user gets the tunnel line, not a traceback."""
    from pymobiledevice3.remote.remote_service_discovery import RemoteServiceDiscoveryService
    from pymobiledevice3.tunneld import api

    monkeypatch.setattr(api, "_list_tunnels", lambda address=None: {UDID: [
        {"tunnel-address": "fd00::1", "tunnel-port": 1, "interface": "utun9"}]})

    async def refuse(self: Any, *a: Any, **k: Any) -> None:
        raise ConnectionRefusedError("fake tunnel: nothing behind it")

    monkeypatch.setattr(RemoteServiceDiscoveryService, "connect", refuse)
    with pytest.raises(errors.IOSSetupError) as e:
        asyncio.run(rsd_for(UDID, "17.4"))
    assert "could not be connected" in str(e.value) and "sudo pymobiledevice3 remote tunneld" in str(e.value)


def test_ios17_the_rsd_connection_is_closed_with_its_dvt_session() -> None:
    """Each use opens its own RSD connection through tunneld (rsd_for): the DVT session closes it when it stops;
    up to iOS 16 the provider is the transport's shared lockdown, which the session leaves open."""
    from pymobiledevice3.remote.remote_service_discovery import RemoteServiceDiscoveryService

    closed: list[str] = []

    class FakeRsd(RemoteServiceDiscoveryService):
        def __init__(self) -> None:  # no tunnel to dial
            pass

        async def close(self) -> None:
            closed.append("rsd")

    class FakeLockdown:
        async def close(self) -> None:
            closed.append("lockdown")

    class FakeDvt:
        async def close(self) -> None:
            closed.append("dvt")

    for provider in (FakeRsd(), FakeLockdown()):
        session = _DvtSession(provider)
        session.dvt = FakeDvt()
        asyncio.run(session.stop())
    assert closed == ["dvt", "rsd", "dvt"]
