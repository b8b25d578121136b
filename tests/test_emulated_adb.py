"""The emulated Android phone against real parts: a real adb server (Debian's adb 29 and the adb 36 that adbutils
bundles, each on a private port and HOME), real adbutils, real processes in a private namespace, qemu for arm64.
Timing-dependent checks (heat, drops) assert directions and presence, never absolute times."""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import android_env
import pytest
from android_env import (CROSS_CC, AdbServer, EmulatedPhone, adb_binaries, free_port, namespace_support, needs_adb,
                         needs_namespace, needs_qemu, process_gone)

from devicelab.testing.emulated_adb import EmulatedDevice
from devicelab.testing.emulated_device import (CMD_LOG, FIXED_PERFORMANCE_FILE, ClusterSpec, Profile, ProfileError,
                                               Sandbox, default_clusters, read_energy_log)


DEFAULT = Profile()
BIG = DEFAULT.clusters[-1]
BIG_CPU = BIG.cpus[0]
BIG_ZONE = next(z.type for z in DEFAULT.thermal or () if z.cpus == (BIG_CPU,))


@pytest.fixture(scope="module", params=[label for label, _ in adb_binaries()] or ["no-adb"])
def adb_server(request: pytest.FixtureRequest) -> Iterator[AdbServer]:
    paths = dict(adb_binaries())
    if request.param not in paths:
        pytest.skip("needs adb: Debian's (apt-get install adb) or the one bundled in the adbutils wheel")
    with AdbServer(paths[request.param]) as server:
        yield server


@pytest.fixture(scope="module")
def phone(adb_server: AdbServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatedPhone]:
    with EmulatedPhone(adb_server, tmp_path_factory.mktemp("phone") / "root") as p:
        yield p


@pytest.fixture(scope="module")
def dev(phone: EmulatedPhone) -> Any:
    return phone.device()


def shell_v2(dev: Any, cmd: str, timeout: float = 30) -> Any:
    return dev.shell2(cmd, v2=True, rstrip=False, timeout=timeout)


def wait_for(predicate: Any, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


class RawShellV2:
    """A shell protocol v2 client over adbutils' raw transport, speaking line by line as the driver does."""

    def __init__(self, dev: Any, cmd: str) -> None:
        self.conn = dev.open_transport(timeout=20)
        self.conn.send_command(f"shell,v2,raw:{cmd}")
        self.conn.check_okay()

    def send(self, packet_id: int, data: bytes = b"") -> None:
        self.conn.conn.sendall(struct.pack("<BI", packet_id, len(data)) + data)

    def packet(self) -> tuple[int, bytes]:
        packet_id, length = struct.unpack("<BI", self.conn.read_exact(5))
        return packet_id, self.conn.read_exact(length) if length else b""

    def stdout_line(self) -> bytes:
        line = b""
        while not line.endswith(b"\n"):
            packet_id, data = self.packet()
            assert packet_id == 1, (packet_id, data)
            line += data
        return line

    def close(self) -> None:
        self.conn.close()


# ----------------------------------------------------------------------------------------------- profile (no adb)


def test_profile_rejects_unknown_keys_naming_them(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="'batery'.*did you mean 'battery'"):
        Profile.from_dict({"batery": {}})
    with pytest.raises(ProfileError, match=r"battery.*'current_units'"):
        Profile.from_dict({"battery": {"current_units": "mA"}})
    path = tmp_path / "p.yaml"
    path.write_text("clusters:\n  - {cpus: [0], capacity: 1024, max_khz: 2000000, turbo: true}\n")
    with pytest.raises(ProfileError, match="clusters\\[0\\].*'turbo'"):
        Profile.from_yaml(path)


def test_profile_thermal_status_and_power_hal(tmp_path: Path) -> None:
    p = Profile.from_dict({"thermal_status": 3, "fixed_performance_supported": False})
    assert p.thermal_status == 3 and p.fixed_performance_supported is False
    with pytest.raises(ProfileError, match="thermal_status must be 0-6"):
        Profile.from_dict({"thermal_status": 7})
    with pytest.raises(ProfileError, match="fixed_performance_supported: expected true or false"):
        Profile.from_dict({"fixed_performance_supported": "no"})


def test_profile_from_yaml_and_capacity_null_omits_files(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("serial: ABC\nprops: {ro.product.model: Pixel 8}\nthrottle_above_c: 45\n"
                    "battery: {current_sign: positive-discharging, current_unit: mA}\n"
                    "clusters:\n  - {cpus: [0], capacity: null, max_khz: 1700000}\n"
                    "  - {cpus: [1], capacity: null, max_khz: 2900000}\n")
    p = Profile.from_yaml(path)
    assert p.properties()["ro.serialno"] == "ABC" and p.properties()["ro.product.model"] == "Pixel 8"
    assert [z.type for z in p.thermal or ()].count("cpu-1-0-usr") == 1  # zones follow the clusters
    sandbox = Sandbox(tmp_path / "root", p)
    sandbox.build("")
    cpu = tmp_path / "root/sys/devices/system/cpu"
    assert not (cpu / "cpu1/cpu_capacity").exists()
    assert (cpu / "cpu1/cpufreq/cpuinfo_max_freq").read_text() == "2900000\n"
    assert (cpu / "cpu1/cpufreq/related_cpus").read_text() == "1\n"


def test_default_clusters_split_the_usable_cpus() -> None:
    assert default_clusters([0]) == (ClusterSpec((0,), 1024, 2_800_000),)
    little, big = default_clusters(range(8))
    assert (little.cpus, little.capacity, big.cpus, big.capacity) == ((0, 1, 2, 3), 512, (4, 5, 6, 7), 1024)


def test_cli_refuses_reserved_ports() -> None:
    for port in ("5037", "5555", "5585"):
        # -P: the installed devicelab, not the source tree the tests run from
        p = subprocess.run([sys.executable, "-P", "-m", "devicelab.testing.emulated_adb", "--port", port],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 2 and p.stdout == "" and len(p.stderr.strip().splitlines()) == 1, p


# ----------------------------------------------------------------------------------------------- through adb

@pytest.mark.slow  # a real adb server and the emulated phone
@needs_adb()
def test_connect_and_devices_l(adb_server: AdbServer, phone: EmulatedPhone, dev: Any) -> None:
    out = adb_server.run("devices", "-l").stdout
    line = next(row for row in out.splitlines() if row.startswith(phone.serial))
    assert "device" in line.split() and "model:devicelab_emulated_phone" in line and "product:dlemu" in line
    assert dev.get_state() == "device"
    assert dev.prop.model == "devicelab emulated phone"
    # the summary says which mode runs, as the device found it
    assert f"namespace {'on' if namespace_support() is None else 'off'}" in phone.stderr


@pytest.mark.slow  # a real adb server and the emulated phone
@needs_adb()
def test_shell_v1_merges_stdout_and_stderr(dev: Any) -> None:
    assert dev.shell("echo out; echo err >&2") == "out\nerr"


@pytest.mark.slow  # a real adb server and the emulated phone
@needs_adb()
def test_shell2_v2_exit_codes_and_stderr(dev: Any) -> None:
    r = shell_v2(dev, "echo out; echo err >&2; exit 3")
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")
    assert shell_v2(dev, "true").returncode == 0
    assert shell_v2(dev, "exit 255").returncode == 255
    assert shell_v2(dev, "kill -9 $$").returncode == 128 + 9  # adbd reports 128 + signal


@pytest.mark.slow  # a real adb server and the emulated phone
@needs_adb()
def test_long_output_intact(dev: Any) -> None:
    expected = "".join(f"{i}\n" for i in range(1, 160_001))  # ~1 MB
    assert len(expected) > 1_000_000
    assert shell_v2(dev, "seq 1 160000").stdout == expected
    assert dev.shell("seq 1 160000", rstrip=False) == expected


@pytest.mark.slow  # a real adb server and the emulated phone
@needs_adb()
def test_stdin_is_streamed_line_by_line_over_v2(dev: Any) -> None:
    # The driver's runner protocol: one line in, wait for the answer, the next line. Nothing may wait for EOF.
    sh = RawShellV2(dev, 'while read -r line; do echo "got $line"; done; echo bye')
    try:
        for i in range(5):
            sh.send(0, f"line {i}\n".encode())
            assert sh.stdout_line() == f"got line {i}\n".encode()
        sh.send(4)  # close stdin: the loop ends
        packets: list[tuple[int, bytes]] = []
        while not packets or packets[-1][0] != 3:
            packets.append(sh.packet())
        assert b"".join(d for i, d in packets if i == 1) == b"bye\n" and packets[-1] == (3, b"\x00")
    finally:
        sh.close()


@pytest.mark.slow  # a real adb server and the emulated phone
@needs_adb()
def test_adb_shell_cli_with_piped_stdin(adb_server: AdbServer, phone: EmulatedPhone) -> None:
    data = os.urandom(300_000)
    p = adb_server.run("-s", phone.serial, "shell", "sha256sum", input=data)
    assert p.returncode == 0 and p.stdout.split()[0] == hashlib.sha256(data).hexdigest(), p
    p = adb_server.run("-s", phone.serial, "shell", "echo x; exit 7")
    assert p.returncode == 7


@pytest.mark.slow  # a real adb server and the emulated phone
@needs_adb()
def test_exec_in_and_exec_out_are_raw(adb_server: AdbServer, phone: EmulatedPhone) -> None:
    data = os.urandom(200_000)
    p = adb_server.run("-s", phone.serial, "exec-in", "cat > /data/local/tmp/exec-in.bin", input=data)
    assert p.returncode == 0, p
    # exec-in returns once its stream is closed, before cat on the phone is done (a real phone races the same way)
    written = phone.root / "data/local/tmp/exec-in.bin"
    assert wait_for(lambda: written.exists() and written.stat().st_size == len(data), timeout=10)
    out = subprocess.run([adb_server.adb, "-P", str(adb_server.port), "-s", phone.serial, "exec-out",
                          "cat /data/local/tmp/exec-in.bin"], env=adb_server.env, capture_output=True, timeout=30)
    assert out.stdout == data  # byte for byte: no pty, no newline translation


@pytest.mark.slow  # a real adb server and the emulated phone
@needs_adb()
def test_sync_push_pull_stat_list_20mb(dev: Any, tmp_path: Path, record_property: Any) -> None:
    data = os.urandom(20 * 1024 * 1024)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    t0 = time.perf_counter()
    dev.sync.push(src, "/data/local/tmp/sync-test/sub/big.bin", mode=0o755)  # parents made: fixed_push_mkdir
    push_s = time.perf_counter() - t0
    st = dev.sync.stat("/data/local/tmp/sync-test/sub/big.bin")
    assert st.size == len(data) and st.mode & 0o777 == 0o755
    assert "big.bin" in [f.path for f in dev.sync.list("/data/local/tmp/sync-test/sub")]
    t0 = time.perf_counter()
    dev.sync.pull("/data/local/tmp/sync-test/sub/big.bin", tmp_path / "back.bin")
    pull_s = time.perf_counter() - t0
    assert hashlib.sha256((tmp_path / "back.bin").read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    assert shell_v2(dev, "sha256sum /data/local/tmp/sync-test/sub/big.bin").stdout.split()[0] == \
        hashlib.sha256(data).hexdigest()
    assert dev.sync.stat("/data/local/tmp/no-such-file").mtime is None
    record_property("push_MBps", round(len(data) / push_s / 1e6, 1))
    record_property("pull_MBps", round(len(data) / pull_s / 1e6, 1))


@pytest.mark.slow  # a real adb server and the emulated phone
@needs_adb()
def test_push_outside_data_local_tmp_fails(adb_server: AdbServer, phone: EmulatedPhone, dev: Any,
                                           tmp_path: Path) -> None:
    import adbutils

    with pytest.raises(adbutils.AdbError):
        dev.sync.push(b"x", "/system/bin/evil")
    src = tmp_path / "f"
    src.write_bytes(b"x" * 100_000)
    p = adb_server.run("-s", phone.serial, "push", str(src), "/sys/evil")
    assert p.returncode != 0 and "Permission denied" in p.stdout + p.stderr
    assert not (phone.root / "sys/evil").exists() and not (phone.root / "system/bin/evil").exists()
    # ...and the session is still healthy
    assert dev.sync.read_text("/system/etc/build.prop").count("ro.serialno=DLEMU0001") == 1


@pytest.mark.slow  # a real adb server and the emulated phone
@needs_adb()
def test_fixture_reads(dev: Any) -> None:
    assert dev.shell(f"cat /sys/devices/system/cpu/cpu{BIG_CPU}/cpu_capacity") == str(BIG.capacity)
    related = dev.shell(f"cat /sys/devices/system/cpu/cpu{BIG_CPU}/cpufreq/related_cpus")
    assert related == " ".join(map(str, BIG.cpus))
    assert dev.sync.read_text(f"/sys/devices/system/cpu/cpu{BIG_CPU}/cpufreq/cpuinfo_max_freq").strip() == \
        str(BIG.max_khz)
    zones = dict(line.split() for line in dev.shell(
        'for z in /sys/class/thermal/thermal_zone*; do echo "$(cat $z/type) $(cat $z/temp)"; done').splitlines())
    assert {BIG_ZONE, "battery", "skin-therm"} <= set(zones)
    assert all(20_000 < int(t) < 60_000 for t in zones.values())
    assert dev.shell("cat /sys/class/power_supply/battery/type /sys/class/power_supply/usb/type") == "Battery\nUSB"
    # /proc is real: a program sees its own status, as the memory probes need
    assert "VmHWM" in dev.shell("cat /proc/self/status")


@pytest.mark.slow  # a real adb server and the emulated phone
@needs_adb()
@needs_namespace()
def test_commands_cannot_write_the_system_or_the_host(dev: Any) -> None:
    r = shell_v2(dev, "for d in /system /sys /usr /etc; do touch $d/devicelab-probe 2>/dev/null && echo wrote $d; done; "
                      "echo 5 > /proc/self/clear_refs && touch /data/local/tmp/ok /tmp/ok && echo fine")
    assert r.stdout == "fine\n", r
    assert not Path("/usr/devicelab-probe").exists() and not Path("/etc/devicelab-probe").exists()


def zone_temp(dev: Any, zone_type: str) -> int:
    cmd = f'for z in /sys/class/thermal/thermal_zone*; do [ "$(cat $z/type)" = {zone_type} ] && cat $z/temp; done'
    return int(dev.shell(cmd))


@pytest.mark.slow  # a real adb server and the emulated phone
@needs_adb()
def test_heat_model_follows_a_pinned_busy_loop(dev: Any) -> None:
    before = zone_temp(dev, BIG_ZONE)
    # read the frequency while the loop still runs: a model tick after it ends may already see the core idle
    r = shell_v2(dev, f"taskset -c {BIG_CPU} timeout 2 sh -c 'while :; do :; done' & sleep 1.5; "
                      f"cat /sys/devices/system/cpu/cpu{BIG_CPU}/cpufreq/scaling_cur_freq; wait")
    hot = zone_temp(dev, BIG_ZONE)
    assert hot > before + 1000, (before, hot)  # the host's CPUs may be shared: direction and a margin only
    assert int(r.stdout) > BIG.min_khz  # the frequency followed the load
    assert wait_for(lambda: zone_temp(dev, BIG_ZONE) < hot - 1000, timeout=15)  # it relaxes toward idle


@pytest.mark.slow  # a real adb server and the emulated phone
@needs_adb()
def test_getprop(dev: Any) -> None:
    assert dev.shell("getprop ro.serialno") == "DLEMU0001"
    assert dev.shell("getprop ro.product.cpu.abi; getprop ro.build.version.sdk") == "arm64-v8a\n34"
    assert shell_v2(dev, "getprop no.such.key").stdout == "\n"
    lines = dev.shell("getprop").splitlines()
    assert "[ro.soc.model]: [EMU8000]" in lines and all(row.startswith("[") and "]: [" in row for row in lines)
    assert dev.prop.get("ro.product.manufacturer") == "devicelab"


@pytest.mark.slow  # a real adb server and the emulated phone
@needs_adb()
def test_dumpsys(dev: Any) -> None:
    battery = dev.shell("dumpsys battery")
    for line in ("AC powered: false", "USB powered: false", "status: 3", "level: 80", "voltage: 3900"):
        assert f"  {line}" in battery.splitlines(), battery
    assert "temperature: 30" in battery
    assert "mWakefulness=Asleep" in dev.shell("dumpsys power")
    try:
        dev.shell("dumpsys battery unplug; dumpsys battery set usb 0")
        unplugged = dev.shell("dumpsys battery")
        assert "UPDATES STOPPED" in unplugged and "  USB powered: false" in unplugged
        # as on a phone, only the report changes: the sensor keeps its value
        assert dev.shell("cat /sys/class/power_supply/battery/status") == "Discharging"
    finally:
        dev.shell("dumpsys battery reset")
    assert "UPDATES STOPPED" not in dev.shell("dumpsys battery")
    assert "Temperature{mValue=" in dev.shell("dumpsys thermalservice")


@pytest.mark.slow  # a real adb server and the emulated phone
@needs_adb()
def test_cmd_power_and_thermalservice_answer_as_aosp(dev: Any, phone: EmulatedPhone) -> None:
    mode = phone.root / FIXED_PERFORMANCE_FILE
    try:
        r = shell_v2(dev, "cmd power set-fixed-performance-mode-enabled true")
        assert (r.returncode, r.stdout, r.stderr) == (0, "", "") and mode.read_text() == "true\n"
        # PowerManagerService keeps no record of the mode: its dump has nothing to read it back from
        assert "ixed" not in dev.shell("dumpsys power") and "mWakefulness=" in dev.shell("dumpsys power")
        r = shell_v2(dev, "cmd power set-fixed-performance-mode-enabled")
        assert r.returncode == 255 and 'Argument expected after "set-fixed-performance-mode-enabled"' in r.stderr
        assert mode.read_text() == "true\n"
        assert shell_v2(dev, "cmd power set-fixed-performance-mode-enabled no").returncode == 0  # parseBoolean
        assert mode.read_text() == "false\n"
        r = shell_v2(dev, "cmd power set-fixed-perf true")
        assert (r.returncode, r.stdout) == (255, "Unknown command: set-fixed-perf\n")
        r = shell_v2(dev, "cmd powr x")
        assert (r.returncode, r.stderr) == (20, "cmd: Can't find service: powr\n")
        thermal = dev.shell("dumpsys thermalservice").splitlines()
        assert thermal[0] == "IsStatusOverride: false" and "Thermal Status: 0" in thermal
        assert shell_v2(dev, "cmd thermalservice override-status 4").returncode == 0
        thermal = dev.shell("dumpsys thermalservice").splitlines()
        assert thermal[0] == "IsStatusOverride: true" and "Thermal Status: 4" in thermal
        r = shell_v2(dev, "cmd thermalservice override-status 7")
        assert (r.returncode, r.stdout) == (255, "Invalid status: 7\n")
        r = shell_v2(dev, "cmd thermalservice override-status hot")
        assert r.returncode == 255 and r.stdout.startswith("Error: java.lang.NumberFormatException")
    finally:
        shell_v2(dev, "cmd thermalservice reset; cmd power set-fixed-performance-mode-enabled false")
    assert "Thermal Status: 0" in dev.shell("dumpsys thermalservice").splitlines()
    # every call the phone answered, for tests to read from the host
    calls = [line.split("\t")[1:] for line in (phone.root / CMD_LOG).read_text().splitlines()]
    assert ["power set-fixed-performance-mode-enabled true", "0"] in calls
    assert ["thermalservice override-status 7", "255"] in calls and calls[-1] == ["power set-fixed-performance-mode-enabled false", "0"]


@pytest.mark.slow  # a real adb server and the emulated phone
@needs_adb()
def test_host_close_kills_the_process_group(dev: Any) -> None:
    sh = RawShellV2(dev, "sleep 1000 & echo $!; wait")
    pid = int(sh.stdout_line())
    assert not process_gone(pid)
    sh.close()  # the adb server sends CLSE to the phone
    assert wait_for(lambda: process_gone(pid), timeout=10), f"sleep {pid} survived the CLSE"


@pytest.mark.slow  # a real adb server and the emulated phone
@needs_adb()
def test_drop_mid_command_then_restart_on_same_root(adb_server: AdbServer, tmp_path: Path,
                                                    record_property: Any) -> None:
    with EmulatedPhone(adb_server, tmp_path / "root", drop_on=["DROPME@0.5"]) as p:
        d = p.device()
        d.sync.push(b"still here\n", "/data/local/tmp/keep.txt")
        r = adb_server.run("-s", p.serial, "shell", "echo DROPME-start; sleep 5; echo END-$((40+2))", timeout=30)
        record_property("adb_rc_on_drop", r.returncode)  # Debian's adb 29 says 0, adb 36 says 255: use a sentinel
        assert "DROPME-start" in r.stdout and "END-42" not in r.stdout, r
        # the phone is gone until it restarts: the server no longer has it as a device
        assert wait_for(lambda: adb_server.state(p.serial) != "device", timeout=10)
        p.restart(drop_on=[])  # same port, same root: the phone coming back
        assert p.device().shell("cat /data/local/tmp/keep.txt") == "still here"


def test_drop_rules_parse() -> None:
    from devicelab.testing.emulated_adb import DropRule, EmulatorError

    assert DropRule.parse("runner") == DropRule("runner", 0.5)
    assert DropRule.parse("runner@2") == DropRule("runner", 2.0)
    assert DropRule.parse('runner@input="run"#2') == DropRule("runner", on_input='"run"', count=2)
    assert DropRule.parse("runner@input=go") == DropRule("runner", on_input="go", count=1)
    with pytest.raises(EmulatorError, match="N >= 1"):
        DropRule.parse("runner@input=go#0")


@pytest.mark.slow  # a real adb server and the emulated phone
@needs_adb()
def test_drop_tied_to_the_nth_input_fires_then_and_not_before(adb_server: AdbServer, tmp_path: Path) -> None:
    """The event-tied rule: the second "go" a command receives drops the phone, the first does not (a timer can
    miss a command that happens to be quick; an event cannot)."""
    with EmulatedPhone(adb_server, tmp_path / "root", drop_on=["cat@input=go#2"]) as p:
        sh = RawShellV2(p.device(), "cat")
        sh.send(0, b"go 1\n")
        assert sh.stdout_line() == b"go 1\n"  # the first one passes through: still connected
        sh.send(0, b"go 2\n")
        with pytest.raises((EOFError, OSError, AssertionError)):
            while True:  # the stream ends without an exit packet (or the echo races the drop)
                sh.packet()
        sh.close()
        assert wait_for(lambda: adb_server.state(p.serial) != "device", timeout=10)


@pytest.mark.slow  # a real adb server and the emulated phone
@needs_adb()
def test_signal_drop_and_restore(adb_server: AdbServer, tmp_path: Path) -> None:
    with EmulatedPhone(adb_server, tmp_path / "root") as p:
        sh = RawShellV2(p.device(), "sleep 1000 & echo $!; wait")
        pid = int(sh.stdout_line())
        p.drop()
        with pytest.raises((EOFError, OSError)):
            sh.packet()  # the stream ends without an exit packet
        sh.close()
        assert wait_for(lambda: process_gone(pid), timeout=10), "commands must die with the transport"
        assert wait_for(lambda: adb_server.state(p.serial) != "device", timeout=10)
        p.restore()
        p.connect()
        assert p.device().shell("echo back") == "back"


@pytest.mark.slow  # a real adb server and the emulated phone
@needs_adb()
def test_battery_sign_unit_and_energy_log(adb_server: AdbServer, tmp_path: Path) -> None:
    cases: list[tuple[dict[str, Any], int, float]] = [
        ({"current_sign": "positive-charging", "current_unit": "uA"}, -1, 1e6),
        ({"current_sign": "positive-discharging", "current_unit": "mA"}, 1, 1e3),
        ({"current_sign": "positive-charging", "current_unit": "uA", "charging": True, "usb_online": True}, 1, 1e6)]
    for i, (battery, sign, scale) in enumerate(cases):
        with EmulatedPhone(adb_server, tmp_path / f"root{i}", profile={"battery": battery}) as p:
            d = p.device()
            cur1, q1 = map(int, d.shell("cat /sys/class/power_supply/battery/current_now "
                                        "/sys/class/power_supply/battery/charge_counter").split())
            time.sleep(0.5)
            q2 = int(d.shell("cat /sys/class/power_supply/battery/charge_counter"))
            status = d.shell("cat /sys/class/power_supply/battery/status")
            if battery.get("charging"):
                assert cur1 == round(1.0 * scale) and q2 > q1 and status == "Charging"
            else:
                # 0.4 W idle at 3.9 V is ~103 mA; the shell's own work adds a little
                amps = sign * cur1 / scale
                assert 0.1 < amps < 1.0 and q2 < q1 and status == "Discharging", (battery, cur1)
        log = read_energy_log(tmp_path / f"root{i}")
        assert log and all(s.power_w >= 0.4 for s in log)
        # the log's true current, integrated, is what charge_counter moved by (µAh) over the same ticks
        moved_uah = sum(s.battery_current_a * s.dt_s for s in log) / 3600 * 1e6
        final = int((tmp_path / f"root{i}/sys/class/power_supply/battery/charge_counter").read_text())
        assert final - 3_000_000 == pytest.approx(moved_uah, abs=1.0), (moved_uah, final)


@pytest.mark.slow  # a real adb server and the emulated phone
@needs_adb()
def test_throttling_caps_the_hot_cluster(adb_server: AdbServer, tmp_path: Path) -> None:
    # 1.5 C above the 36 C idle: even a loop that gets a small share of a busy host's CPU trips it
    with EmulatedPhone(adb_server, tmp_path / "root", profile={"throttle_above_c": 37.5, "thermal_tau_s": 0.5}) as p:
        d = p.device()
        policy = f"/sys/devices/system/cpu/cpu{BIG_CPU}/cpufreq"
        assert d.shell(f"cat {policy}/scaling_max_freq") == str(BIG.max_khz)
        out = shell_v2(d, f"taskset -c {BIG_CPU} timeout 1.5 sh -c 'while :; do :; done' & sleep 1; "
                          f"cat {policy}/scaling_max_freq; wait")
        assert int(out.stdout) == round(BIG.max_khz * 0.7)
        assert wait_for(lambda: d.shell(f"cat {policy}/scaling_max_freq") == str(BIG.max_khz), timeout=20)


@pytest.mark.slow  # a real adb server and the emulated phone
@needs_adb()
def test_no_namespace_mode_rewrites_paths(tmp_path: Path) -> None:
    # One adb is enough for the fallback mode: its own server, not the per-adb fixture (no skipped duplicate).
    with AdbServer(adb_binaries()[0][1]) as server, EmulatedPhone(server, tmp_path / "root", namespace=False) as p:
        d = p.device()
        assert "namespace off (--no-namespace)" in p.stderr
        assert d.shell(f"cat /sys/devices/system/cpu/cpu{BIG_CPU}/cpufreq/related_cpus") == " ".join(map(str, BIG.cpus))
        d.sync.push(b"hi\n", "/data/local/tmp/x.txt")
        assert d.shell("cat /data/local/tmp/x.txt; getprop ro.product.name") == "hi\ndlemu"


@pytest.fixture(scope="module")
def hello_arm64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("arm64")
    (d / "hello.c").write_text('#include <stdio.h>\nint main(int c, char **v) {\n'
                               '  printf("hello from aarch64, %d args\\n", c - 1);\n  return 7;\n}\n')
    subprocess.run([CROSS_CC, "-static", "-O2", "-o", str(d / "hello"), str(d / "hello.c")], check=True, timeout=120)
    return d / "hello"


@pytest.mark.slow  # a real adb server and the emulated phone
@needs_adb()
@needs_qemu()
def test_arm64_static_binary_runs(phone: EmulatedPhone, dev: Any, hello_arm64: Path) -> None:
    dev.sync.push(hello_arm64, "/data/local/tmp/arm64/hello", mode=0o755)
    r = shell_v2(dev, "/data/local/tmp/arm64/hello a b")
    assert (r.stdout, r.returncode) == ("hello from aarch64, 2 args\n", 7), (r, phone.stderr)


# ----------------------------------------------------------------------------------------------- in-process API


@needs_namespace()
def test_in_process_api(tmp_path: Path) -> None:
    with EmulatedDevice(tmp_path / "root", Profile(serial="INPROC1")) as d:
        assert d.address.startswith("127.0.0.1:") and d.namespace and d.root == (tmp_path / "root").resolve()
        assert (d.root / "sys/class/thermal/thermal_zone0/type").exists()
        time.sleep(0.35)
        log = d.energy_log()
        assert log and all(s.busy_cpus >= 0 and s.power_w >= Profile().battery.idle_power_w for s in log)
        d.drop(down_for=0.3)
        host, port = d.address.split(":")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host, int(port)), timeout=2).close()
        assert wait_for(lambda: _can_connect(host, int(port)), timeout=5)


def _can_connect(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def test_free_port_avoids_adb_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    # The kernel's ephemeral range here never hands out 5037 or 5555-5585: make it do so, first.
    given = iter([5037, 5555, 5585, 40123])

    class Sock(socket.socket):
        def getsockname(self) -> tuple[str, int]:
            return ("127.0.0.1", next(given))

    monkeypatch.setattr(android_env.socket, "socket", Sock)
    assert free_port() == 40123
