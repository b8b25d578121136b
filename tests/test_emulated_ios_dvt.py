"""The emulated iPhone's DVT service against the real pymobiledevice3 client on loopback: DvtProvider's handshake,
ProcessControl launching and killing real host processes, DeviceInfo, Sysmontap samples read from /proc, the energy
gauge, the client's own error for an unknown app, and messages split into fragments both ways."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import socket
import ssl
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("pymobiledevice3")

from bpylist2 import archiver  # noqa: E402  (the client's NSKeyedArchiver)
from cryptography import x509  # noqa: E402  (pymobiledevice3's own dependency)
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402
from pymobiledevice3.dtx.exceptions import DTXNsError  # noqa: E402
from pymobiledevice3.dtx.fragment import DTXFragment  # noqa: E402
from pymobiledevice3.dtx.fragmenter import DTXFragmenter  # noqa: E402
from pymobiledevice3.dtx.message import DTXMessage  # noqa: E402
from pymobiledevice3.exceptions import UnrecognizedSelectorError  # noqa: E402
from pymobiledevice3.lockdown_service_provider import LockdownServiceProvider  # noqa: E402
from pymobiledevice3.service_connection import ServiceConnection  # noqa: E402
from pymobiledevice3.services.dvt.instruments.device_info import DeviceInfo  # noqa: E402
from pymobiledevice3.services.dvt.instruments.dvt_provider import DvtProvider  # noqa: E402
from pymobiledevice3.services.dvt.instruments.energy_monitor import EnergyMonitor  # noqa: E402
from pymobiledevice3.services.dvt.instruments.process_control import ProcessControl  # noqa: E402
from pymobiledevice3.services.dvt.instruments.sysmontap import Sysmontap  # noqa: E402

from pymobiledevice3.dtx.message_aux import MessageAux  # noqa: E402

from devicelab.testing.emulated_ios.dvt import (MSG_OBJECT, AppCommand, HostProcesses, LaunchError,  # noqa: E402
                                                archive, build_aux, encode_message, parse_aux, phys_footprint_bytes,
                                                serve_dvt, unarchive)

BUNDLE = "org.devicelab.sleeper"
# A host program that holds memory it has written (so physFootprint has something to count) and then sleeps; it
# prints its pid's Private_Dirty once the memory is touched, for the comparison with /proc.
HOLDER = ("import sys, time\n"
          "block = bytearray(32 * 1024 * 1024)\n"
          "for i in range(0, len(block), 4096): block[i] = 1\n"
          "print('ready', flush=True)\n"
          "time.sleep(float(sys.argv[1]))\n")


def self_signed_pem(folder: Path) -> Path:
    """A certificate and its key in one PEM file: the phone's (server side) and, as a pair record holds one, the
    host's (the client presents it; the client verifies nothing, as with a real lockdown)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "devicelab emulated iPhone")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    path = folder / "pair.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()))
    return path


class RecvSendall:
    """A connection wrapper with only the two calls of the agreed interface (no settimeout), as a phone's own
    connection class may be."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def recv(self, n: int) -> bytes:
        return self._sock.recv(n)

    def sendall(self, data: bytes) -> None:
        self._sock.sendall(data)


class DvtServer:
    """serve_dvt behind a loopback listener, one thread per connection (as the phone's lockdown hands it out), in
    TLS when given a certificate (as iOS 16 answers StartService for DVT: EnableServiceSSL), the socket itself or
    (`wrapped`) behind RecvSendall."""

    def __init__(self, device: HostProcesses, pem: Path | None = None, wrapped: bool = False) -> None:
        self.device = device
        self.pem = pem
        self.wrapped = wrapped
        self.tls: ssl.SSLContext | None = None
        if pem is not None:
            self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.tls.load_cert_chain(pem)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.threads: list[threading.Thread] = []
        self.served: list[str] = []  # the kind of each connection served: socket or SSLSocket
        self.accepter = threading.Thread(target=self._accept, daemon=True)
        self.accepter.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            if self.tls is not None:
                try:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError):
                    return
            self.served.append(type(conn).__name__)
            serve_dvt(RecvSendall(conn) if self.wrapped else conn, self.device)

    def close(self) -> None:
        self.listener.close()
        for t in self.threads:
            t.join(timeout=10)


class EmulatedLockdown(LockdownServiceProvider):
    """The smallest object-level stand-in for a lockdown client: the two calls DtxServiceProvider makes of one
    (StartService's answer, then a connection to its port), on an iOS 16 version so DvtProvider picks the
    DVTSecureSocketProxy service and keeps TLS as the answer says (here: off)."""

    def __init__(self, port: int, pem: Path | None = None) -> None:
        super().__init__()
        self.port = port
        self.pem = pem  # the pair record's host certificate and key, when the service wants TLS
        self.started: list[str] = []

    @property
    def product_version(self) -> str:
        return "16.7.2"

    async def get_service_connection_attributes(self, name: str, include_escrow_bag: bool = False) -> dict[str, Any]:
        self.started.append(name)
        return {"Port": self.port, "EnableServiceSSL": self.pem is not None}

    @contextlib.contextmanager
    def ssl_file(self) -> Iterator[str]:
        assert self.pem is not None
        yield str(self.pem)

    async def create_service_connection(self, port: int, ssl_context: ssl.SSLContext | None = None,
                                        strip_ssl: bool = False) -> ServiceConnection:
        return await ServiceConnection.create_using_tcp("127.0.0.1", port, ssl_context=ssl_context,
                                                        strip_ssl=strip_ssl)


@pytest.fixture
def device(tmp_path: Path) -> Iterator[HostProcesses]:
    dev = HostProcesses({BUNDLE: [sys.executable, "-c", HOLDER]}, cwd=tmp_path, log_dir=tmp_path / "logs")
    try:
        yield dev
    finally:
        dev.close()


@pytest.fixture(params=["tcp"])
def server(request: pytest.FixtureRequest, device: HostProcesses, tmp_path: Path) -> Iterator[DvtServer]:
    """`tcp`, `tls`, or `tls-wrapped` (the TLS socket behind RecvSendall)."""
    srv = DvtServer(device, self_signed_pem(tmp_path) if request.param.startswith("tls") else None,
                    wrapped=request.param.endswith("wrapped"))
    try:
        yield srv
    finally:
        srv.close()


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout=60))


async def wait_ready(device: HostProcesses, bundle: str = BUNDLE, text: str = "ready") -> None:
    """Until the app has said `text` on stdout (which lands in the log folder): e.g. it has touched its memory."""
    log = device.log_dir / f"{bundle}.stdout"  # type: ignore[operator]
    for _ in range(600):
        if log.exists() and text in log.read_text():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the app never said {text!r}")


def lockdown_for(server: DvtServer) -> EmulatedLockdown:
    return EmulatedLockdown(server.port, server.pem)


@pytest.mark.parametrize("server", ["tcp", "tls"], indirect=True)
def test_launch_is_running_and_kill(server: DvtServer, device: HostProcesses) -> None:
    lockdown = lockdown_for(server)

    async def scenario() -> tuple[int, bool, bool, dict[str, Any] | None]:
        async with DvtProvider(lockdown) as dvt, ProcessControl(dvt) as pc, DeviceInfo(dvt) as info:
            pid = await pc.launch(BUNDLE, arguments=["30"], environment={"DL_MARK": "x y"}, kill_existing=True)
            alive = await info.is_running_pid(pid)
            await pc.kill(pid)
            after = await info.is_running_pid(pid)
            return pid, alive, after, dvt.dtx.supported_identifiers

    pid, alive, after, capabilities = run(scenario())
    assert lockdown.started == [DvtProvider.SERVICE_NAME]
    assert server.served == ["SSLSocket" if server.pem else "socket"]
    assert alive is True and after is False
    assert not device.is_running(pid)
    assert capabilities is not None and "com.apple.instruments.server.services.processcontrol" in capabilities


def test_environment_reaches_the_app_and_kill_existing_replaces_it(server: DvtServer, device: HostProcesses,
                                                                   tmp_path: Path) -> None:
    container = tmp_path / "container"
    container.mkdir()
    env_app = AppCommand([sys.executable, "-c", "import os, sys, time; print(os.environ['DL_MARK'], sys.argv[1:], "
                          "os.getcwd(), flush=True); time.sleep(30)"], container)
    fallback = device.resolve
    device.resolve = lambda bundle: env_app if bundle == "org.devicelab.env" else fallback(bundle)

    async def scenario() -> tuple[int, int, bool]:
        async with DvtProvider(EmulatedLockdown(server.port)) as dvt, ProcessControl(dvt) as pc, \
                DeviceInfo(dvt) as info:
            first = await pc.launch("org.devicelab.env", arguments=["a b", "--c"], environment={"DL_MARK": "x y"})
            await wait_ready(device, "org.devicelab.env", "x y")
            second = await pc.launch("org.devicelab.env", arguments=["2"], environment={"DL_MARK": "z"},
                                     kill_existing=True)
            first_alive = await info.is_running_pid(first)
            await pc.kill(second)
            return first, second, first_alive

    first, second, first_alive = run(scenario())
    assert first != second and first_alive is False
    out = (tmp_path / "logs" / "org.devicelab.env.stdout").read_text().splitlines()
    assert out[0] == f"x y ['a b', '--c'] {container}"


def test_unknown_bundle_gives_the_clients_own_error(server: DvtServer) -> None:
    async def scenario() -> None:
        async with DvtProvider(EmulatedLockdown(server.port)) as dvt, ProcessControl(dvt) as pc:
            await pc.launch("com.example.missing")

    with pytest.raises(DTXNsError) as info:
        run(scenario())
    error = info.value.error
    assert error.domain == "FBSOpenApplicationServiceErrorDomain"
    assert error.user_info["BSErrorCodeDescription"] == "NotFound"
    assert '"com.example.missing"' in error.user_info["NSLocalizedFailureReason"]


class OwnLaunchError(Exception):
    """A phone's own LaunchError class (only the message), as the emulated phone's apps module has."""


OwnLaunchError.__name__ = "LaunchError"


@pytest.mark.parametrize("own", [False, True], ids=["dvt-LaunchError", "phone-LaunchError"])
def test_a_launch_the_device_refuses_carries_its_words(server: DvtServer, device: HostProcesses, own: bool) -> None:
    """What a phone's device object does for an app whose signature expired: its LaunchError's message (and
    description, when it has one) reach the client's error."""
    def resolve(bundle: str) -> AppCommand | None:
        message = f'The request to open "{bundle}" failed: its signature expired'
        raise OwnLaunchError(message) if own else LaunchError(message, "Security")

    device.resolve = resolve

    async def scenario() -> None:
        async with DvtProvider(EmulatedLockdown(server.port)) as dvt, ProcessControl(dvt) as pc:
            await pc.launch("org.devicelab.expired")

    with pytest.raises(DTXNsError) as info:
        run(scenario())
    assert info.value.error.user_info == {
        "BSErrorCodeDescription": "NotFound" if own else "Security",
        "NSLocalizedFailureReason": 'The request to open "org.devicelab.expired" failed: its signature expired'}


def test_an_unknown_selector_is_the_clients_unrecognized_selector_error(server: DvtServer) -> None:
    async def scenario() -> None:
        async with DvtProvider(EmulatedLockdown(server.port)) as dvt, DeviceInfo(dvt) as info:
            await info.mach_kernel_name()

    with pytest.raises(UnrecognizedSelectorError):
        run(scenario())


@pytest.mark.parametrize("server", ["tcp", "tls", "tls-wrapped"], indirect=True)
def test_sysmontap_streams_rows_of_the_launched_app(server: DvtServer, device: HostProcesses) -> None:
    """Over TLS too: samples go out while calls come in, on one TLS connection, whether serve_dvt has the socket
    or only a recv/sendall wrapper of it."""
    async def scenario() -> tuple[int, list[dict[str, Any]], int, list[str]]:
        async with DvtProvider(lockdown_for(server)) as dvt, ProcessControl(dvt) as pc:
            pid = await pc.launch(BUNDLE, arguments=["30"])
            await wait_ready(device)
            rows: list[dict[str, Any]] = []
            async with await Sysmontap.create(dvt, interval=100) as tap, DeviceInfo(dvt) as info:
                attributes = list(tap.process_attributes_cls.__dataclass_fields__)
                async for processes in tap.iter_processes():
                    rows += [p for p in processes if p["pid"] == pid]
                    assert await info.is_running_pid(pid)  # a call answered between samples
                    if len(rows) >= 3:
                        break
            footprint = phys_footprint_bytes(pid)
            await pc.kill(pid)
            return pid, rows, footprint, attributes

    pid, rows, footprint_now, attributes = run(scenario())
    assert attributes == ["pid", "name", "physFootprint", "memResidentSize", "cpuUsage"]
    assert all(r["name"] == Path(sys.executable).name for r in rows)
    # The app holds 32 MiB it wrote: the footprint counts them, and agrees with /proc read by hand afterwards.
    last = rows[-1]["physFootprint"]
    assert last >= 32 * 1024 * 1024
    assert abs(last - footprint_now) <= 0.1 * footprint_now
    assert rows[-1]["memResidentSize"] >= last * 0.9
    # cpuUsage is a share of one core since the previous sample: None only for the very first reading.
    assert all(r["cpuUsage"] is not None and r["cpuUsage"] >= 0 for r in rows[1:])


def test_energy_monitor_yields_scores_by_pid(server: DvtServer, device: HostProcesses) -> None:
    device.apps["org.devicelab.spin"] = [sys.executable, "-c", "while True: pass"]

    async def scenario() -> tuple[int, int, list[Any]]:
        async with DvtProvider(EmulatedLockdown(server.port)) as dvt, ProcessControl(dvt) as pc:
            spinning = await pc.launch("org.devicelab.spin")
            sleeping = await pc.launch(BUNDLE, arguments=["30"])
            samples = []
            async with EnergyMonitor(dvt, [spinning, sleeping, 999_999_999]) as monitor:
                async for sample in monitor:
                    samples.append(sample)
                    if len(samples) == 4:
                        break
                    await asyncio.sleep(0.3)
            await pc.kill(spinning)
            await pc.kill(sleeping)
            return spinning, sleeping, samples

    spinning, sleeping, samples = run(scenario())
    assert all(isinstance(s, dict) and set(s) == {spinning, sleeping} for s in samples)
    assert set(samples[-1][spinning]) == {"energy.cost", "energy.cpu.cost"}
    # A busy loop scores above a sleeping process (a comparison within one sample, not an absolute).
    assert samples[-1][spinning]["energy.cost"] > samples[-1][sleeping]["energy.cost"]


def test_a_large_message_travels_in_fragments_both_ways(server: DvtServer, device: HostProcesses,
                                                        tmp_path: Path) -> None:
    # Client to server: an environment over the client's 128 KiB fragment size reaches the app whole.
    device.apps["org.devicelab.env"] = [sys.executable, "-c", "import os; "
                                        "print(sum(len(os.environ[f'DL_BIG{i}']) for i in range(3)), flush=True)"]
    # Three values: Linux caps one environment string at 128 KiB.
    big = {f"DL_BIG{i}": str(i) * 100_000 for i in range(3)}

    async def scenario() -> None:
        async with DvtProvider(EmulatedLockdown(server.port)) as dvt, ProcessControl(dvt) as pc:
            await pc.launch("org.devicelab.env", environment=big)

            await wait_ready(device, "org.devicelab.env", "\n")

    run(scenario())
    assert (tmp_path / "logs" / "org.devicelab.env.stdout").read_text().strip() == "300000"

    # Server to client: the client's own reader and fragmenter reassemble what the server split.
    value = {"rows": [f"{i:04d}" + "y" * 1000 for i in range(400)]}  # distinct: a binary plist shares equal ones
    wire = encode_message(MSG_OBJECT, 7, 0, -3, payload=archive(value))

    async def reassemble() -> Any:
        reader = asyncio.StreamReader()
        reader.feed_data(wire)
        reader.feed_eof()
        first = await DTXFragment.read(reader)
        assert first.count > 2
        fragmenter = DTXFragmenter(first, 0, len(wire))
        while not fragmenter.add(await DTXFragment.read(reader)):
            pass
        raw, meta = fragmenter.assemble()
        return DTXMessage.parse(meta, raw).payload

    assert run(reassemble()) == value


def test_a_connection_that_breaks_the_framing_is_dropped(server: DvtServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"\x00" * 32)
        sock.settimeout(10)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    # The server spoke first (its capabilities) and then hung up on the garbage.
    assert received[:4] == (0x1F3D5B79).to_bytes(4, "little")


# What travels in calls and replies: Foundation scalars, arrays and dictionaries, nested.
SCALARS = (st.text(max_size=20) | st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.booleans()
           | st.floats(allow_nan=False) | st.binary(max_size=20))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8) | st.integers(0, 2**31), inner, max_size=4), max_leaves=12)


@settings(max_examples=80, deadline=None)
@given(VALUES)
def test_archives_read_the_same_on_both_sides(value: Any) -> None:
    """The server's NSKeyedArchiver and the client's (bpylist2) read each other's archives as the same value, and
    the positional arguments of a call survive both directions."""
    assert archiver.unarchive(archive(value)) == value
    assert unarchive(archiver.archive(value)) == value
    assert MessageAux.parse(build_aux([value, "selector"])) == [value, "selector"]
    assert parse_aux(MessageAux.build([value, None])) == [value, None]
