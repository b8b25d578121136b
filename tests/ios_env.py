"""The emulated iPhone for the iOS kind's end-to-end tests: an EmulatedUsbmuxd on loopback with one EmulatedIPhone
attached (devicelab.testing.emulated_ios; the real pymobiledevice3 client talks to both), a pair-record folder of
the test's own, a devices.yaml naming the phone, and a runner .app whose executable runs the host build of dlbench.

The runner app stand-in: on an iPhone the app is dlbench's core plus two small hooks of the ObjC++ shell — the QoS
class on `ready`, ProcessInfo.thermalState on each `batch` (runners/ios). Here the app's executable is a Python
script that forks a relay and then execs dlbench itself, so the process DVT launched, samples and kills *is*
dlbench (its pid, its memory); the relay listens on the port the controller is told about, connects to dlbench's
own --listen port, and adds those two keys to the events as the app's hooks would, with the thermal state read
from Documents/thermal_state in the container (a test writes it; "nominal" otherwise). Like the real app it sends
its stderr to Documents/devicelab/runner-stderr.txt in the container. Launched without --listen (batch mode, or
--version) it execs dlbench with its arguments as they are — so batch mode's lines carry neither hook's key —
unless the test's switch Documents/crash_mid_batch exists: then it runs dlbench as a child, and once the results
file shows `ready` kills it, writes the switch's text to its stderr and kills itself (an app dying mid-batch).
For the tests it keeps a copy of every config it is launched with beside the .app (launched_folder)."""

from __future__ import annotations

import plistlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

BUNDLE_ID = "org.devicelab.dlbench"
UDID = "00008110-000A1B2C3D4E5F60"

APP_SCRIPT = r'''#!{python}
import json, os, shutil, signal, socket, subprocess, sys, time

DLBENCH = {dlbench!r}
LAUNCHED = {launched!r}
args = sys.argv[1:]
# As the real app does (runners/ios/AppDelegate.mm): stderr to a file in the container, which iOS does not relay.
os.makedirs("Documents/devicelab", exist_ok=True)
err = os.open("Documents/devicelab/runner-stderr.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.dup2(err, 2)
if args and os.path.isfile(args[-1]):  # for the tests: the config as the app was given it
    os.makedirs(LAUNCHED, exist_ok=True)
    shutil.copyfile(args[-1], os.path.join(LAUNCHED, f"{{os.getpid()}}.json"))
    with open(os.path.join(LAUNCHED, f"{{os.getpid()}}.path"), "w") as f:
        f.write(args[-1])
if "--listen" not in args:  # batch mode (or --version): dlbench's core with the arguments as they are
    if os.path.exists("Documents/crash_mid_batch"):  # a test's switch: the app dies once its batch has begun
        why = open("Documents/crash_mid_batch").read()
        results = json.load(open(args[-1]))["results_file"]
        core = subprocess.Popen([DLBENCH, *args])
        while core.poll() is None and not (os.path.exists(results) and b'"ready"' in open(results, "rb").read()):
            time.sleep(0.001)
        core.kill()
        sys.stderr.write(why)
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    os.execv(DLBENCH, [DLBENCH, *args])
i = args.index("--port-file")
port_file = args[i + 1]
inner_file = port_file + ".dlbench"
rest = args[:i] + args[i + 2:]
rest[rest.index("--listen") + 1] = "0"
outer = socket.socket()
outer.bind(("127.0.0.1", 0))
outer.listen(1)
if os.fork() == 0:  # the relay: the app shell's hooks around dlbench's channel
    while not os.path.exists(inner_file):
        time.sleep(0.01)
    port = json.load(open(inner_file))["port"]
    os.unlink(inner_file)
    tmp = port_file + ".tmp"
    with open(tmp, "w") as f:
        json.dump({{"port": outer.getsockname()[1], "pid": os.getppid()}}, f)
    os.rename(tmp, port_file)
    client, _ = outer.accept()
    core = socket.create_connection(("127.0.0.1", port))

    def hooks(line):
        try:
            event = json.loads(line)
        except ValueError:
            return line
        if event.get("event") == "ready":
            event["qos"] = "userInitiated"
        elif event.get("event") == "batch":
            try:
                event["thermal_state"] = open("Documents/thermal_state").read().strip()
            except OSError:
                event["thermal_state"] = "nominal"
        return json.dumps(event).encode() + b"\n"

    if os.fork() == 0:  # controller -> dlbench
        while True:
            data = client.recv(65536)
            if not data:
                core.shutdown(socket.SHUT_WR)
                os._exit(0)
            core.sendall(data)
    reader = core.makefile("rb")
    for line in reader:
        client.sendall(hooks(line))
    client.close()
    os._exit(0)
outer.close()
os.execv(DLBENCH, [DLBENCH, "--listen", "0", "--port-file", inner_file, *rest[rest.index("--listen") + 2:]])
'''


def build_runner_app(folder: Path, dlbench: Path, bundle_id: str = BUNDLE_ID, marker: str = "") -> Path:
    """A .app folder (Info.plist + executable) that runs the host dlbench as the runner app."""
    app = folder / "DevicelabRunner.app"
    app.mkdir(parents=True)
    (app / "Info.plist").write_bytes(plistlib.dumps({"CFBundleIdentifier": bundle_id,
                                                     "CFBundleExecutable": "DevicelabRunner",
                                                     "CFBundleName": "DevicelabRunner", "UIFileSharingEnabled": True}))
    exe = app / "DevicelabRunner"
    exe.write_text(APP_SCRIPT.format(python=sys.executable, dlbench=str(dlbench), launched=str(launched_folder(app)))
                   + marker)
    exe.chmod(0o755)
    return app


def launched_folder(app: Path) -> Path:
    """Where the stand-in keeps a copy of every config it was launched with (`<pid>.json`, and `<pid>.path`: the
    config's path as launched, relative to the container): beside the .app, outside the phone."""
    return app.parent / "launched"


@dataclass
class IPhone:
    """An emulated iPhone attached to its own emulated usbmuxd."""

    mux: Any
    phone: Any
    records: Path

    @property
    def udid(self) -> str:
        return str(self.phone.udid)

    def container(self) -> Path:
        app = self.phone.apps.get(BUNDLE_ID)
        assert app is not None, "the runner app is not installed"
        return Path(app.container)

    def close(self) -> None:
        self.mux.close()
        self.phone.close()


def start_iphone(root: Path, **phone: Any) -> IPhone:
    from devicelab.testing.emulated_ios import EmulatedIPhone, EmulatedUsbmuxd

    mux = EmulatedUsbmuxd()
    iphone = EmulatedIPhone(root=root / "iphone", **phone)
    mux.attach(iphone)
    records = root / "pair-records"
    iphone.pair_record_folder(records)
    return IPhone(mux, iphone, records)


def write_devices(path: Path, iphone: IPhone, app: Path, **extra: Any) -> Path:
    entry = {"id": "iphone", "kind": "ios", "udid": iphone.udid, "runner_app": str(app),
             "usbmux_address": iphone.mux.address, "pairing_records": str(iphone.records), **extra}
    path.write_text(yaml.safe_dump({"devices": [{"id": "host", "kind": "host"}, entry]}))
    return path


def cli_env(env: dict[str, str], iphone: IPhone, devices: Path | None = None) -> dict[str, str]:
    """The CLI's environment: usbmuxd is the emulated one (discovery reads USBMUXD_SOCKET_ADDRESS; nothing reaches
    a real usbmuxd), and the inventory names the phone."""
    e = dict(env, USBMUXD_SOCKET_ADDRESS=iphone.mux.address)
    if devices is not None:
        e["DEVICELAB_DEVICES"] = str(devices)
    return e
