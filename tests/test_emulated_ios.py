"""The emulated iPhone against the real pymobiledevice3 client over loopback: usbmuxd, lockdownd + TLS, AFC,
house_arrest, installation_proxy, diagnostics_relay, app processes, port forwarding, and each fault surfacing as
the client's own exception. Every call passes usbmux_address and a temporary pairing folder; USBMUXD_SOCKET_ADDRESS
points at the emulated usbmuxd too (pymobiledevice3 saves a fresh pair record through the default usbmuxd), so no
real usbmuxd is ever reached."""

from __future__ import annotations

import asyncio
import json
import os
import plistlib
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pymobiledevice3")

from pymobiledevice3 import usbmux  # noqa: E402
from pymobiledevice3.exceptions import (AfcException, AppNotInstalledError, ConnectionFailedError,  # noqa: E402
                                        ConnectionFailedToUsbmuxdError, ConnectionTerminatedError,
                                        DeviceNotFoundError, InvalidServiceError, NotPairedError,
                                        PairingDialogResponsePendingError, PasswordRequiredError,
                                        PyMobileDevice3Exception, UserDeniedPairingError)
from pymobiledevice3.lockdown import UsbmuxLockdownClient, create_using_usbmux  # noqa: E402
from pymobiledevice3.service_connection import ServiceConnection  # noqa: E402
from pymobiledevice3.services.afc import AfcService  # noqa: E402
from pymobiledevice3.services.diagnostics import DiagnosticsService  # noqa: E402
from pymobiledevice3.dtx.exceptions import DTXNsError  # noqa: E402
from pymobiledevice3.services.dvt.instruments.device_info import DeviceInfo  # noqa: E402
from pymobiledevice3.services.dvt.instruments.dvt_provider import DvtProvider  # noqa: E402
from pymobiledevice3.services.dvt.instruments.process_control import ProcessControl  # noqa: E402
from pymobiledevice3.services.dvt.instruments.sysmontap import Sysmontap  # noqa: E402
from pymobiledevice3.services.house_arrest import HouseArrestService  # noqa: E402
from pymobiledevice3.services.installation_proxy import InstallationProxyService  # noqa: E402
from pymobiledevice3.services.mobile_image_mounter import DeveloperDiskImageMounter  # noqa: E402

from devicelab.testing.emulated_ios import EmulatedIPhone, EmulatedUsbmuxd, LaunchError  # noqa: E402

UDID = "00008110-000A1B2C3D4E5F60"
BUNDLE_ID = "org.devicelab.runner"


class Rig:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.mux = EmulatedUsbmuxd()
        self.phone = EmulatedIPhone(root=tmp_path / "iphone", udid=UDID)
        self.mux.attach(self.phone)
        self.pairing = tmp_path / "pairing"

    async def lockdown(self, **kwargs: Any) -> UsbmuxLockdownClient:
        # pair_timeout 0: a pairing that cannot happen fails at once instead of waiting on the Trust dialog
        kwargs.setdefault("pair_timeout", 0)
        return await create_using_usbmux(serial=UDID, usbmux_address=self.mux.address,
                                         pairing_records_cache_folder=self.pairing, **kwargs)


@pytest.fixture()
def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    r = Rig(tmp_path)
    monkeypatch.setenv("USBMUXD_SOCKET_ADDRESS", r.mux.address)
    try:
        yield r
    finally:
        r.mux.close()
        r.phone.close()


def make_app(folder: Path, bundle_id: str = BUNDLE_ID, script: str = "#!/bin/sh\nexit 0\n",
             file_sharing: bool = True) -> Path:
    """A test .app: an Info.plist and an executable (a shell script standing in for the runner)."""
    app = folder / "Runner.app"
    app.mkdir(parents=True)
    info = {"CFBundleIdentifier": bundle_id, "CFBundleExecutable": "Runner", "CFBundleName": "Runner",
            "CFBundleVersion": "1", "UIFileSharingEnabled": file_sharing}
    (app / "Info.plist").write_bytes(plistlib.dumps(info))
    (app / "Runner").write_text(script)
    (app / "Runner").chmod(0o755)
    return app


def test_list_devices_values_and_listen(rig: Rig) -> None:
    async def main() -> None:
        devices = await usbmux.list_devices(usbmux_address=rig.mux.address)
        assert [(d.serial, d.connection_type) for d in devices] == [(UDID, "USB")]
        async with await rig.lockdown() as lockdown:
            assert lockdown.paired
            values = lockdown.all_values
            assert values["ProductType"] == "iPhone14,2"
            assert values["ProductVersion"] == "16.7.2"
            assert values["CPUArchitecture"] == "arm64e"
            assert values["HardwareModel"] == "D63AP"
            assert values["UniqueDeviceID"] == UDID
            assert values["BuildVersion"] == "20H115"
            assert lockdown.ecid == 0x000A1B2C3D4E5F60
            assert await lockdown.get_developer_mode_status() is True
            assert (await lockdown.stop_session())["Result"] == "Success"

        # Listen: the current device arrives as Attached, a pulled cable as Detached
        mux = await usbmux.create_mux(usbmux_address=rig.mux.address)
        try:
            await mux.listen()
            await mux.receive_device_state_update()
            assert [d.serial for d in mux.devices] == [UDID]
            threading.Timer(0.05, rig.mux.detach, args=(rig.phone,)).start()
            await asyncio.wait_for(mux.receive_device_state_update(), timeout=10)
            assert mux.devices == []
        finally:
            await mux.close()
        assert await usbmux.list_devices(usbmux_address=rig.mux.address) == []

    asyncio.run(main())


def test_hardware_models_match_the_clients_table() -> None:
    from pymobiledevice3.irecv_devices import IRECV_DEVICES

    from devicelab.testing.emulated_ios.phone import HARDWARE_MODELS

    table = {d.product_type: d.hardware_model.upper() for d in IRECV_DEVICES}
    assert {k: table.get(k) for k in HARDWARE_MODELS} == HARDWARE_MODELS


def test_pair_record_written_to_the_folder_is_accepted(rig: Rig) -> None:
    rig.mux.serves_pair_records = False  # usbmuxd knows nothing: the client must find the folder's record

    async def main() -> None:
        with pytest.raises(PairingDialogResponsePendingError):
            await rig.lockdown(pair_timeout=0)  # no record anywhere: the client asks to pair
        path = rig.phone.pair_record_folder(rig.pairing)
        assert path == rig.pairing / f"{UDID}.plist"
        async with await rig.lockdown(autopair=False) as lockdown:
            assert lockdown.paired
            assert lockdown.all_values["DeviceName"] == "devicelab emulated iPhone"
        record = plistlib.loads(path.read_bytes())
        forged = dict(record, HostID="00000000-0000-0000-0000-000000000000")
        async with await rig.lockdown(pair_record=forged, autopair=False) as lockdown:
            assert not lockdown.paired  # an unknown HostID gets no session
        # the right HostID with another host's certificate and key: the phone refuses the TLS handshake (with
        # TLS 1.3 the client learns it on its first read inside the session)
        other = EmulatedIPhone(root=rig.tmp / "other", udid="00008110-0000000000000001").host_pair_record()
        assert other is not None
        impostor = dict(record, HostCertificate=other["HostCertificate"], HostPrivateKey=other["HostPrivateKey"])
        with pytest.raises(ConnectionTerminatedError):
            await rig.lockdown(pair_record=impostor, autopair=False)

    asyncio.run(main())


def test_trust_dialog_pending_denied_and_accepted(rig: Rig) -> None:
    rig.phone.faults.not_paired = True

    async def main() -> None:
        async with await rig.lockdown(autopair=False) as lockdown:
            assert not lockdown.paired
            with pytest.raises(NotPairedError):
                await lockdown.start_lockdown_service("com.apple.afc")
        with pytest.raises(PairingDialogResponsePendingError):
            await rig.lockdown(pair_timeout=0)
        rig.phone.faults.not_paired = False
        rig.phone.faults.pairing_pending = True  # the same, said in one switch
        with pytest.raises(PairingDialogResponsePendingError):
            await rig.lockdown(pair_timeout=0)
        rig.phone.faults.pairing_pending = False
        rig.phone.faults.not_paired = True
        rig.phone.faults.trust_dialog = "deny"
        with pytest.raises(UserDeniedPairingError):
            await rig.lockdown(pair_timeout=0)
        rig.phone.faults.trust_dialog = "accept"
        # the client mints its own root/host/device certificates from DevicePublicKey, pairs, and then runs TLS
        # with them: the phone must present the device certificate it was given and accept that host
        async with await rig.lockdown(pair_timeout=0) as lockdown:
            assert lockdown.paired
            async with AfcService(lockdown) as afc:
                assert "PublicStaging" in await afc.listdir("/")
        saved = plistlib.loads((rig.pairing / f"{UDID}.plist").read_bytes())
        assert saved["HostID"] != rig.phone._minted_host_id

    asyncio.run(main())


def test_install_get_apps_house_arrest_and_uninstall(rig: Rig) -> None:
    app = make_app(rig.tmp / "build")
    payload = os.urandom(300_000)
    (rig.tmp / "model.bin").write_bytes(payload)

    async def main() -> None:
        async with await rig.lockdown() as lockdown:
            async with InstallationProxyService(lockdown=lockdown) as installer:
                await installer.install_from_local(app)
                apps = await installer.get_apps(bundle_identifiers=[BUNDLE_ID])
                assert list(apps) == [BUNDLE_ID]
                assert apps[BUNDLE_ID]["CFBundleExecutable"] == "Runner"
                assert apps[BUNDLE_ID]["Path"].endswith("/Runner.app")
                assert await installer.get_apps(bundle_identifiers=["org.example.absent"]) == {}
                sized = await installer.get_apps(bundle_identifiers=[BUNDLE_ID], calculate_sizes=True)
                assert sized[BUNDLE_ID]["StaticDiskUsage"] == sum(
                    p.stat().st_size for p in app.rglob("*") if p.is_file())
            installed = rig.phone.apps.get(BUNDLE_ID)
            assert installed is not None and os.access(installed.bundle_path / "Runner", os.X_OK)
            # the staged package is removed again by the client
            assert list((rig.phone.root / "Media" / "PublicStaging" / "pymobiledevice3").iterdir()) == []

            async with await HouseArrestService.create(lockdown, BUNDLE_ID) as ha:
                await ha.makedirs("Documents/devicelab/files/abc")
                await ha.push(str(rig.tmp / "model.bin"), "Documents/devicelab/files/abc/model.bin")
                assert (await ha.stat("Documents/devicelab/files/abc/model.bin"))["st_size"] == len(payload)
                await ha.set_file_contents("Documents/devicelab/config.json", b'{"x": 1}')
                await ha.rename("Documents/devicelab/config.json", "Documents/devicelab/config2.json")
                assert sorted(await ha.listdir("Documents/devicelab")) == ["config2.json", "files"]
                pulled = rig.tmp / "pulled.bin"
                await ha.pull("Documents/devicelab/files/abc/model.bin", str(pulled))
                assert pulled.read_bytes() == payload
                assert sorted(await ha.listdir("/")) == ["Documents", "Library", "tmp"]
                await ha.rm("Documents/devicelab")
                assert await ha.listdir("Documents") == []
                assert not await ha.exists("Documents/devicelab")
            assert (installed.container / "Documents").is_dir()
            assert list((installed.container / "Documents").iterdir()) == []

            # a hostile name arrives literally, and a file over pymobiledevice3's 4 MiB single-read limit streams
            hostile = "m $(touch pwned); 'x' \"y\" é`z`.bin"
            big = os.urandom(5 * 1024 * 1024 + 17)
            (rig.tmp / "big.bin").write_bytes(big)
            async with await HouseArrestService.create(lockdown, BUNDLE_ID) as ha:
                await ha.set_file_contents(f"Documents/{hostile}", b"literal")
                assert await ha.listdir("Documents") == [hostile]
                await ha.push(str(rig.tmp / "big.bin"), "Documents/big.bin")
                await ha.pull("Documents/big.bin", str(rig.tmp / "big-back.bin"))
            assert (installed.container / "Documents" / hostile).read_bytes() == b"literal"
            assert (rig.tmp / "big-back.bin").read_bytes() == big

            # VendDocuments: the container shows only its Documents folder
            async with await HouseArrestService.create(lockdown, BUNDLE_ID, documents_only=True) as ha:
                assert await ha.listdir("/") == ["Documents"]
                await ha.set_file_contents("Documents/result.jsonl", b"{}\n")
                assert not await ha.exists("Library")
                with pytest.raises(AfcException):  # outside Documents nothing is reachable, not even to write
                    await ha.set_file_contents("Library/Preferences/x.plist", b"")
            assert (installed.container / "Documents" / "result.jsonl").read_bytes() == b"{}\n"

            with pytest.raises(AppNotInstalledError):
                await HouseArrestService.create(lockdown, "org.example.absent")

            async with InstallationProxyService(lockdown=lockdown) as installer:
                await installer.uninstall(BUNDLE_ID)
                assert await installer.get_apps(bundle_identifiers=[BUNDLE_ID]) == {}
            assert not installed.container.exists()

    asyncio.run(main())


def test_install_ipa_and_container_access_rules(rig: Rig) -> None:
    app = make_app(rig.tmp / "build", bundle_id="org.devicelab.store", file_sharing=False)
    ipa = rig.tmp / "Runner.ipa"
    with zipfile.ZipFile(ipa, "w") as archive:
        for path in sorted(app.rglob("*")):
            archive.write(path, f"Payload/Runner.app/{path.relative_to(app)}")

    async def main() -> None:
        async with await rig.lockdown() as lockdown:
            async with InstallationProxyService(lockdown=lockdown) as installer:
                await installer.install_from_local(ipa)
                browsed = await installer.browse(attributes=["CFBundleIdentifier", "CFBundleExecutable"])
                assert browsed == [{"CFBundleIdentifier": "org.devicelab.store", "CFBundleExecutable": "Runner"}]
            # no UIFileSharingEnabled: Documents are not vended
            with pytest.raises(PyMobileDevice3Exception, match="InstallationLookupFailed"):
                await HouseArrestService.create(lockdown, "org.devicelab.store", documents_only=True)
            installed = rig.phone.apps.get("org.devicelab.store")
            assert installed is not None
            async with await HouseArrestService.create(lockdown, "org.devicelab.store") as ha:
                assert "Documents" in await ha.listdir("/")
            installed.development_signed = False  # a distribution build: no whole-container access
            with pytest.raises(PyMobileDevice3Exception, match="InstallationLookupFailed"):
                await HouseArrestService.create(lockdown, "org.devicelab.store")

    asyncio.run(main())


def test_battery_from_ioregistry(rig: Rig) -> None:
    rig.phone.battery.instant_amperage_ma = -812
    rig.phone.battery.voltage_mv = 3791
    rig.phone.battery.temperature_centi_c = 3312
    rig.phone.battery.current_capacity_percent = 64

    async def main() -> dict[str, Any]:
        async with await rig.lockdown() as lockdown, DiagnosticsService(lockdown=lockdown) as diagnostics:
            battery = await diagnostics.get_battery()
            assert battery is not None
            rig.phone.battery.is_charging = True
            rig.phone.battery.external_connected = True
            again = await diagnostics.get_battery()
            assert again is not None and again["IsCharging"] is True and again["ExternalConnected"] is True
            return battery

    battery = asyncio.run(main())
    assert (battery["InstantAmperage"], battery["Voltage"], battery["Temperature"]) == (-812, 3791, 3312)
    assert battery["CurrentCapacity"] == 64 and battery["IsCharging"] is False


def test_connect_forwards_to_a_listening_host_port(rig: Rig) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def echo_once() -> None:
        conn, _ = server.accept()
        with conn:
            while data := conn.recv(4096):
                conn.sendall(data.upper())

    threading.Thread(target=echo_once, daemon=True).start()

    async def main() -> None:
        connection = await ServiceConnection.create_using_usbmux(UDID, port, usbmux_address=rig.mux.address)
        try:
            await connection.sendall(b"run squeezenet\n")
            assert await connection.recvall(15) == b"RUN SQUEEZENET\n"
        finally:
            await connection.close()
        server.close()
        with pytest.raises(ConnectionFailedError):
            await ServiceConnection.create_using_usbmux(UDID, port, usbmux_address=rig.mux.address)

    asyncio.run(main())


def test_launch_runs_the_bundle_executable_in_its_container(rig: Rig) -> None:
    script = "#!/bin/sh\nprintf '%s|' \"$@\" > launched.txt\necho >> launched.txt\npwd >> launched.txt\necho \"$DL_MODE\" >> " \
             "launched.txt\necho to-stdout\nexec sleep 60\n"
    installed = rig.phone.apps.install_bundle(make_app(rig.tmp / "build", script=script))
    pid = rig.phone.launch(BUNDLE_ID, ["--listen", "0", "my config.json"], {"DL_MODE": "tcp"}, kill_existing=True)
    try:
        marker = installed.container / "launched.txt"
        deadline = time.monotonic() + 20
        while not (marker.exists() and marker.read_text().count("\n") >= 3) and time.monotonic() < deadline:
            time.sleep(0.02)
        lines = marker.read_text().splitlines()
        assert lines[0] == "--listen|0|my config.json|"
        assert Path(lines[1]).resolve() == installed.container.resolve()
        assert lines[2] == "tcp"
        assert rig.phone.is_running(pid)
        rows = rig.phone.processes()
        assert [(r["pid"], r["name"]) for r in rows] == [(pid, "Runner")]
        assert rows[0]["memResidentSize"] > 0 and rows[0]["cpuUsage"] is None  # the first sample has no rate
        process = rig.phone.apps.process(pid)
        assert process is not None and process.stdout_path.read_text() == "to-stdout\n"
        # kill_existing replaces the running instance
        second = rig.phone.launch(BUNDLE_ID, [], {}, kill_existing=True)
        assert second != pid and not rig.phone.is_running(pid) and rig.phone.is_running(second)
        rig.phone.kill(second)
        assert not rig.phone.is_running(second)
    finally:
        rig.phone.apps.kill_all()

    with pytest.raises(LaunchError, match="returned nil"):
        rig.phone.launch("org.example.absent", [], {}, kill_existing=True)
    rig.phone.faults.signature_expired = True
    with pytest.raises(LaunchError, match="invalid code signature"):
        rig.phone.launch(BUNDLE_ID, [], {}, kill_existing=True)


def test_dvt_over_lockdown_launches_the_installed_app(rig: Rig) -> None:
    """The whole path a controller takes on iOS 16: install, DVT over lockdown's TLS service, launch with arguments
    into the container, the app's listening port reached through usbmux Connect, sysmontap rows, kill."""
    script = ("#!/bin/sh\nexec python3 -c 'import socket, sys, json\n"
              "s = socket.create_server((\"127.0.0.1\", 0))\n"
              "open(sys.argv[1], \"w\").write(json.dumps({\"port\": s.getsockname()[1]}))\n"
              "c, _ = s.accept()\n"
              "c.sendall(c.recv(100).upper())\n"
              "open(\"Documents/eof.txt\", \"w\").write(repr(c.recv(1)))\n"
              "import time; time.sleep(60)\n' \"$@\"\n")
    app = make_app(rig.tmp / "build", script=script)

    async def main() -> None:
        async with await rig.lockdown() as lockdown:
            async with InstallationProxyService(lockdown=lockdown) as installer:
                await installer.install_from_local(app)
            async with DvtProvider(lockdown) as dvt, ProcessControl(dvt) as pc, DeviceInfo(dvt) as info:
                pid = await pc.launch(BUNDLE_ID, arguments=["Documents/port.json"], environment={"X": "1"})
                async with await HouseArrestService.create(lockdown, BUNDLE_ID) as ha:
                    for _ in range(500):
                        if await ha.exists("Documents/port.json"):
                            break
                        await asyncio.sleep(0.02)
                    port = int(json.loads(await ha.get_file_contents("Documents/port.json"))["port"])
                runner = await ServiceConnection.create_using_usbmux(UDID, port, usbmux_address=rig.mux.address)
                try:
                    await runner.sendall(b"ping")
                    assert await runner.recvall(4) == b"PING"
                finally:
                    await runner.close()
                async with await HouseArrestService.create(lockdown, BUNDLE_ID) as ha:
                    for _ in range(500):  # the controller's close reaches the app as EOF
                        if await ha.exists("Documents/eof.txt"):
                            break
                        await asyncio.sleep(0.02)
                    assert await ha.get_file_contents("Documents/eof.txt") == b"b''"
                assert await info.is_running_pid(pid)
                async with await Sysmontap.create(dvt, interval=100) as tap:
                    async for processes in tap.iter_processes():
                        rows = [p for p in processes if p["pid"] == pid]
                        if rows:
                            assert rows[0]["name"] == "Runner"  # the bundle's executable, as iOS names it
                            assert rows[0]["physFootprint"] > 0
                            break
                await pc.kill(pid)
                assert not await info.is_running_pid(pid)
                with pytest.raises(DTXNsError, match="returned nil") as missing:
                    await pc.launch("org.example.absent")
                assert (missing.value.error.user_info or {}).get("BSErrorCodeDescription") == "NotFound"
                rig.phone.faults.signature_expired = True
                with pytest.raises(DTXNsError, match="invalid code signature") as expired:
                    await pc.launch(BUNDLE_ID)
                assert (expired.value.error.user_info or {}).get("BSErrorCodeDescription") == "Security"

    asyncio.run(main())


def test_developer_mode_off_and_image_not_mounted(rig: Rig) -> None:
    async def main() -> None:
        async with await rig.lockdown() as lockdown:
            async with DeveloperDiskImageMounter(lockdown=lockdown) as mounter:
                assert await mounter.is_image_mounted("Developer")
            rig.phone.faults.image_not_mounted = True
            async with DeveloperDiskImageMounter(lockdown=lockdown) as mounter:
                assert not await mounter.is_image_mounted("Developer")
            with pytest.raises(InvalidServiceError):
                async with DvtProvider(lockdown):
                    pass
            rig.phone.faults.image_not_mounted = False
            rig.phone.faults.developer_mode_off = True
            assert await lockdown.get_developer_mode_status() is False
            with pytest.raises(InvalidServiceError):
                async with DvtProvider(lockdown):
                    pass

    asyncio.run(main())


def test_ios17_offers_no_dvt_over_lockdown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mux = EmulatedUsbmuxd()
    monkeypatch.setenv("USBMUXD_SOCKET_ADDRESS", mux.address)
    phone = EmulatedIPhone(root=tmp_path / "iphone", udid=UDID, product_version="17.5.1", build_version="21F90")
    mux.attach(phone)

    async def main() -> None:
        async with await create_using_usbmux(serial=UDID, usbmux_address=mux.address,
                                             pairing_records_cache_folder=tmp_path / "pairing") as lockdown:
            assert lockdown.product_version == "17.5.1"
            with pytest.raises(InvalidServiceError):
                async with DvtProvider(lockdown):
                    pass
            async with AfcService(lockdown) as afc:  # classic lockdown services still work on 17
                assert await afc.listdir("/") == ["PublicStaging"]

    try:
        asyncio.run(main())
    finally:
        mux.close()
        phone.close()


def test_locked_phone_refuses_services(rig: Rig) -> None:
    async def main() -> None:
        async with await rig.lockdown() as lockdown:
            rig.phone.faults.locked = True
            with pytest.raises(PasswordRequiredError):
                async with AfcService(lockdown):
                    pass
            rig.phone.faults.locked = False
            async with AfcService(lockdown) as afc:
                assert await afc.exists("PublicStaging")

    asyncio.run(main())


def test_detach_cuts_open_connections_and_hides_the_phone(rig: Rig) -> None:
    async def main() -> None:
        async with await rig.lockdown() as lockdown:
            async with AfcService(lockdown) as afc:
                await afc.set_file_contents("PublicStaging/a.txt", b"x")
                rig.mux.detach(rig.phone)
                with pytest.raises((ConnectionTerminatedError, ConnectionResetError, BrokenPipeError)):
                    await asyncio.wait_for(afc.get_file_contents("PublicStaging/a.txt"), timeout=10)
        with pytest.raises(DeviceNotFoundError):
            await rig.lockdown()
        rig.mux.attach(rig.phone)  # plugged back in: reachable again
        async with await rig.lockdown() as lockdown:
            assert lockdown.paired

    asyncio.run(main())


def test_usbmuxd_not_running(rig: Rig) -> None:
    rig.mux.close()

    async def main() -> None:
        with pytest.raises(ConnectionFailedToUsbmuxdError):
            await usbmux.list_devices(usbmux_address=rig.mux.address)
        with pytest.raises(ConnectionFailedToUsbmuxdError):
            await rig.lockdown()

    asyncio.run(main())


def test_command_line_phone_detaches_on_sigusr1(tmp_path: Path) -> None:
    app = make_app(tmp_path / "build")
    env = {k: v for k, v in os.environ.items() if k != "USBMUXD_SOCKET_ADDRESS"}
    # -P: the installed devicelab, not the source tree the tests run from
    proc = subprocess.Popen([sys.executable, "-P", "-m", "devicelab.testing.emulated_ios", "--root", str(tmp_path / "p"),
                             "--install", str(app), "--pairing-folder", str(tmp_path / "pairing")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        address = proc.stdout.readline().strip()
        assert address.startswith("127.0.0.1:")

        async def serials() -> list[str]:
            return [d.serial for d in await usbmux.list_devices(usbmux_address=address)]

        async def apps() -> list[str]:
            async with await create_using_usbmux(serial=UDID, usbmux_address=address, autopair=False,
                                                 pairing_records_cache_folder=tmp_path / "pairing") as lockdown:
                async with InstallationProxyService(lockdown=lockdown) as installer:
                    return list(await installer.get_apps(bundle_identifiers=[BUNDLE_ID]))

        assert asyncio.run(serials()) == [UDID]
        assert asyncio.run(apps()) == [BUNDLE_ID]
        assert (tmp_path / "pairing" / f"{UDID}.plist").exists()
        proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 20
        while asyncio.run(serials()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert asyncio.run(serials()) == []
        proc.send_signal(signal.SIGUSR2)
        while not asyncio.run(serials()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert asyncio.run(serials()) == [UDID]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
