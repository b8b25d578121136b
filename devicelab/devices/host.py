"""The host machine as a device: each config runs in a fresh Python subprocess (devicelab.runners.host),
pinned before the model loads, in its own process group so a hung runner can be killed whole."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, BinaryIO

from devicelab import native
from devicelab.analysis import stats
from devicelab.devices.base import (Cluster, Device, DeviceFacts, Job, measurement_fields, probe_fields, runner_config,
                                    throttled, tool_fields, tool_settings)
from devicelab.engines import Engine, get_engine
from devicelab.engines.tool_base import ToolEngine
from devicelab.protocol import (RUNNER_FAULTS, ChannelClosedError, ChannelTimeoutError, Driver, EventQueue,
                                lockstep, lockstep_record, now_deadline)
from devicelab.result import FAILED, OK, UNSUPPORTED, Result
from devicelab.store import utc_now

STDERR_TAIL_BYTES = 4000


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _read_int(path: str) -> int | None:
    text = _read(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


class _PipeChannel:
    """Runner protocol over the child's stdin/stdout. A reader thread turns lines into events so that a
    silent runner can be timed out instead of blocking the controller forever."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self._proc = proc
        self._events = EventQueue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self._proc.stdout is not None
        for raw in self._proc.stdout:
            try:
                event = json.loads(raw)
            except ValueError:
                continue  # not a protocol line; the runner keeps stray output off stdout anyway
            if isinstance(event, dict):
                self._events.put(event)
        self._events.put(None)

    def send(self, message: dict[str, Any]) -> None:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(json.dumps(message).encode() + b"\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise ChannelClosedError("runner closed its input") from None

    def receive(self, deadline: float) -> dict[str, Any]:
        return self._events.receive(deadline)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _tail(f: BinaryIO) -> str:
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(max(0, size - STDERR_TAIL_BYTES))
    return f.read().decode(errors="replace")


class HostDevice(Device):
    kind = "host"
    inventory_keys = ()

    def facts(self) -> DeviceFacts:
        cpu_ids = tuple(sorted(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else tuple(
            range(os.cpu_count() or 1))
        groups: dict[tuple[int | None, int | None], list[int]] = {}
        for cpu in cpu_ids:
            base = f"/sys/devices/system/cpu/cpu{cpu}"
            key = (_read_int(f"{base}/cpu_capacity"), _read_int(f"{base}/cpufreq/cpuinfo_max_freq"))
            groups.setdefault(key, []).append(cpu)
        clusters = tuple(Cluster(tuple(c), cap, khz) for (cap, khz), c in sorted(
            groups.items(), key=lambda kv: ((kv[0][0] or 0), (kv[0][1] or 0))))
        model = platform.processor() or platform.machine()
        cpuinfo = _read("/proc/cpuinfo") or ""
        for line in cpuinfo.splitlines():
            if line.startswith(("model name", "Model", "Hardware")):
                model = line.split(":", 1)[1].strip()
                break
        os_name = f"{platform.system()} {platform.release()}"
        release = _read("/etc/os-release") or ""
        for line in release.splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name += f" ({line.split('=', 1)[1].strip(chr(34))})"
        mem = None
        for line in (_read("/proc/meminfo") or "").splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
        return DeviceFacts(id=self.id, kind=self.kind, model=model, os=os_name, abi=platform.machine(),
                           cpu_ids=cpu_ids, clusters=clusters, memory_bytes=mem,
                           extra={"python": platform.python_version(), "hostname": platform.node()})

    # ---- state -------------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        temps: dict[str, float] = {}
        for zone in sorted(glob.glob("/sys/class/thermal/thermal_zone*")):
            kind, milli = _read(f"{zone}/type"), _read_int(f"{zone}/temp")
            if kind and milli is not None:
                temps[kind if kind not in temps else f"{kind}:{Path(zone).name}"] = milli / 1000.0
        freqs: dict[str, dict[str, Any]] = {}
        for cpu in range(os.cpu_count() or 1):
            base = f"/sys/devices/system/cpu/cpu{cpu}/cpufreq"
            cur = _read_int(f"{base}/scaling_cur_freq")
            if cur is not None:
                freqs[str(cpu)] = {"cur_khz": cur, "max_khz": _read_int(f"{base}/scaling_max_freq"),
                                   "hw_max_khz": _read_int(f"{base}/cpuinfo_max_freq"),
                                   "governor": _read(f"{base}/scaling_governor")}
        power: dict[str, Any] = {}
        for supply in sorted(glob.glob("/sys/class/power_supply/*")):
            ptype = _read(f"{supply}/type")
            if ptype == "Mains":
                power["ac_online"] = _read_int(f"{supply}/online") == 1
            elif ptype == "Battery":
                power["battery_percent"] = _read_int(f"{supply}/capacity")
                power["battery_status"] = _read(f"{supply}/status")
        unavailable = [name for name, got in (("temperatures", temps), ("frequencies", freqs)) if not got]
        state: dict[str, Any] = {"at": utc_now(), "temperatures_c": temps, "cpufreq": freqs,
                                 "loadavg": list(os.getloadavg()),
                                 "charging": power.get("battery_status") == "Charging" if power else None,
                                 "power": power or None}
        if unavailable:
            state["unavailable"] = [f"{u}: no sensor readable in /sys on this host" for u in unavailable]
        return state

    # ---- running -------------------------------------------------------------------------------------

    def runner_command(self, config_path: str, engine: Engine, options: dict[str, Any]) -> list[str]:
        """The runner for this engine: the user's program (the protocol engine), its native binary from
        `devicelab build-native --target host`, or the Python host runner (in the interpreter options.python names,
        for a label whose build lives there). Raises FileNotFoundError naming the build command when the binary is
        missing."""
        user = engine.user_runner(options)
        if user is not None:
            return [str(user[0].resolve()), config_path]
        if engine.native_runner:
            binary = native.artifact("host", engine.native_runner)
            if binary is None:
                raise FileNotFoundError(f"{engine.native_runner} is not built for the host: run "
                                        "`devicelab build-native --target host`")
            return [str(binary), config_path]
        return [options.get("python") or sys.executable, "-m", "devicelab.runners.host", config_path]

    def probe_command(self, command: list[str], cpus: tuple[int, ...], out: str) -> list[str]:
        """`command` under dlprobe when it is built for the host (pinned by dlprobe before exec, sampled from
        a free core, peak memory from wait4); the command unchanged otherwise."""
        dlprobe = native.artifact("host", "dlprobe")
        return native.probe_argv(str(dlprobe), command, cpus, out) if dlprobe else command

    # Several runners alive at once, their timing in alternating slices: the A/B labels of one config (sweep).
    lockstep = True

    def run(self, job: Job) -> Result:
        engine = get_engine(job.config.engine)
        if isinstance(engine, ToolEngine):
            return self._run_tool(job, engine, self.state(), utc_now())
        return self.run_together([job])[0]

    def run_together(self, jobs: list[Job]) -> list[Result]:
        """Runner-protocol jobs on the same CPUs: started one after another (loads never contend), then timed in
        lockstep (protocol.lockstep) so what the machine does meanwhile falls on all of them alike; one alone is
        timed as usual. A runner that fails leaves the others running."""
        with contextlib.ExitStack() as stack:
            runs = [stack.enter_context(_HostRun(self, job)) for job in jobs]
            live = [r for r in runs if r.spawn()]
            if len(live) == 1:
                live[0].time_alone()
            elif live:
                lockstep([r.driver for r in live if r.driver is not None], lambda i, e: live[i].fail(e))
                labels = [r.job.config.label for r in live]
                for r in live:
                    r.lockstep = lockstep_record(labels, r.job.config.label)
            for r in runs:
                r.finish()
            return [r.result() for r in runs]

    def _run_tool(self, job: Job, engine: ToolEngine, state_before: dict[str, Any], started: str) -> Result:
        """An engine's own benchmark binary built for the host: its model laid out in a run folder, run once pinned
        (under dlprobe when built, which also gives the peak memory), its output parsed."""
        cfg = job.config
        notes = list(job.notes)
        s = tool_settings(job, self.facts(), engine)
        why = engine.unsupported_reason(s)
        if why:
            return Result.for_config(job.run_id, cfg, UNSUPPORTED, reason=why, notes=tuple(notes),
                                     started_at=started, finished_at=utc_now())
        binary, libraries = engine.user_runner(job.options) or (None, ())
        assert binary is not None and job.prepared is not None
        env = dict(os.environ)
        _add_libraries(env, libraries)
        with tempfile.TemporaryDirectory(prefix="devicelab-tool-") as tmp:
            for rel, local in engine.model_layout(job.prepared).items():
                (Path(tmp) / rel).parent.mkdir(parents=True, exist_ok=True)
                (Path(tmp) / rel).symlink_to(Path(local).resolve())
            argv = engine.argv(str(binary.resolve()), tmp, s)
            probe_path = os.path.join(tmp, ".dlprobe.json")
            command = self.probe_command(argv, cfg.cpus, probe_path)
            probed = command is not argv
            # Without dlprobe the tool is pinned before exec here (the tools that re-pin themselves then narrow it).
            pin = None if probed or not cfg.cpus else (lambda: os.sched_setaffinity(0, cfg.cpus))
            proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                    env=env, cwd=tmp, start_new_session=True, preexec_fn=pin)
            try:
                out, err = proc.communicate(timeout=job.settings.timeout_seconds)
            except subprocess.TimeoutExpired:
                _killpg(proc)
                out, err = proc.communicate()
                return Result.for_config(job.run_id, cfg, FAILED, notes=tuple(notes), state_before=state_before,
                                         reason=f"timeout: {engine.tool} did not finish within timeout_seconds="
                                                f"{job.settings.timeout_seconds:g}; its process group was killed",
                                         stderr_tail=err.decode(errors="replace")[-STDERR_TAIL_BYTES:] or None,
                                         started_at=started, finished_at=utc_now())
            except BaseException:
                _killpg(proc)
                proc.wait()
                raise
            files = {name: (Path(tmp) / name).read_text(errors="replace")
                     for name in engine.output_files if (Path(tmp) / name).is_file()}
            report = native.ProbeReport.read(Path(probe_path)) if probed else None
        code = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
        if report is not None and report.exit_code is not None:
            code = report.exit_code  # dlprobe exits with the tool's status (128 + signal)
        stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
        status, reason, fields = tool_fields(engine, s, argv, stdout, stderr, code, files, report, probed, notes)
        state_after = self.state()
        was_throttled = throttled(state_before, state_after, cfg.cpus)
        return Result.for_config(
            job.run_id, cfg, status, reason=reason, notes=tuple(notes), state_before=state_before,
            state_after=state_after, throttled=was_throttled, started_at=started, finished_at=utc_now(),
            stderr_tail=stderr[-STDERR_TAIL_BYTES:] or None,
            energy_reason="engine tools are not measured for energy (load, warmup and timing share one process)",
            protocol={**job.settings.to_dict(), **fields.pop("protocol", {})}, **fields)



class _HostRun:
    """One runner process on the host, from staging to its Result (HostDevice.run_together drives several)."""

    def __init__(self, device: HostDevice, job: Job) -> None:
        self.device, self.job, self.cfg = device, job, job.config
        self.engine = get_engine(job.config.engine)
        self.notes = list(job.notes)
        self.fields: dict[str, Any] = {}
        self.status: str = OK
        self.reason: str | None = None
        self.closed = False
        self.early: Result | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.driver: Driver | None = None
        self.lockstep: dict[str, Any] | None = None
        self.started = utc_now()
        self.state_before: dict[str, Any] = {}

    def __enter__(self) -> _HostRun:
        self._tmp = tempfile.TemporaryDirectory(prefix="devicelab-run-")
        self.tmp = self._tmp.name
        self._err = open(os.path.join(self.tmp, "stderr"), "w+b")
        return self

    def __exit__(self, *exc: object) -> None:
        self._reap()  # also on KeyboardInterrupt: never leave a runner behind
        self._err.close()
        self._tmp.cleanup()

    def spawn(self) -> bool:
        """Stage, start the runner and wait until it has loaded and warmed up; False when it did not (the
        Result says why)."""
        job, cfg, s = self.job, self.cfg, self.job.settings
        self.started, self.state_before = utc_now(), self.device.state()
        runner_cfg = runner_config(job, str(job.outputs_path) if job.outputs_path else None)
        env = dict(os.environ)
        # numpy (input generation only) must not start a BLAS pool next to the engine's threads.
        env.update({"OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OMP_NUM_THREADS": str(cfg.threads),
                    "PYTHONUNBUFFERED": "1"})
        config_path = os.path.join(self.tmp, "config.json")
        self.probe_path = os.path.join(self.tmp, "dlprobe.json")
        try:
            runner_cfg = self.engine.stage(runner_cfg, Path(self.tmp))
            self.runner = self.device.runner_command(config_path, self.engine, job.options)
            _add_libraries(env, (self.engine.user_runner(job.options) or (None, ()))[1])
            self.command = self.device.probe_command(self.runner, cfg.cpus, self.probe_path)
        except (OSError, ValueError) as e:
            self.early = Result.for_config(job.run_id, cfg, FAILED, reason=str(e), notes=tuple(self.notes),
                                           state_before=self.state_before, started_at=self.started,
                                           finished_at=utc_now())
            return False
        with open(config_path, "w") as f:
            json.dump(runner_cfg, f)
        if job.options.get("python"):
            # Another environment holds this label's engine build: lend it devicelab's runner code only.
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [_package_shim(self.tmp), env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err,
                                     env=env, start_new_session=True, cwd=self.tmp)
        self.driver = Driver(_PipeChannel(self.proc), s, now_deadline(s.timeout_seconds))
        try:
            self.driver.start()
        except RUNNER_FAULTS as e:
            self.fail(e)
            return False
        return True

    def time_alone(self) -> None:
        assert self.driver is not None
        try:
            self.driver.time_alone()
        except RUNNER_FAULTS as e:
            self.fail(e)

    def fail(self, e: Exception) -> None:
        assert self.proc is not None
        s = self.job.settings
        if isinstance(e, ChannelTimeoutError):
            _killpg(self.proc)
            self.reason = f"timeout: no answer within timeout_seconds={s.timeout_seconds:g}; runner process group killed"
        elif isinstance(e, ChannelClosedError):
            code = _wait(self.proc, 5.0)
            self.reason = f"runner ended before finishing ({_describe_exit(code)})"
            self.closed = True
        else:
            self.reason = str(e)
        self.status, self.driver = FAILED, None

    def finish(self) -> None:
        """Stop a runner that is still timing and keep what it measured."""
        if self.driver is None:
            return
        try:
            m = self.driver.finish()
            self.fields = measurement_fields(m, self.cfg.cpus, self.notes)
            if self.lockstep:
                self.fields["protocol"]["lockstep_run"] = self.lockstep
        except RUNNER_FAULTS as e:
            self.fail(e)

    def _reap(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        if proc.stdin:
            try:
                proc.stdin.close()
            except OSError:
                pass
        if _wait(proc, 5.0) is None:
            _killpg(proc)
            proc.wait()

    def result(self) -> Result:
        if self.early is not None:
            return self.early
        job, cfg, s = self.job, self.cfg, self.job.settings
        notes, fields = self.notes, self.fields
        self._reap()
        stderr_tail = _tail(self._err)
        if self.command is not self.runner:
            report = native.ProbeReport.read(Path(self.probe_path))
            if self.closed and report is not None and report.exit_signal:
                # dlprobe exits 128 + signal; say what happened to the runner itself
                self.reason = f"runner ended before finishing ({_describe_exit(-report.exit_signal)})"
            fields = probe_fields(report, fields, notes)
        else:
            fields.pop("_runner_peak", None)
        state_after = self.device.state()
        was_throttled = throttled(self.state_before, state_after, cfg.cpus)
        notes.extend(stats.stability_warnings(fields.get("samples_s", ()), was_throttled))
        return Result.for_config(
            job.run_id, cfg, self.status, reason=self.reason, notes=tuple(notes), state_before=self.state_before,
            state_after=state_after, throttled=was_throttled,
            started_at=self.started, finished_at=utc_now(), stderr_tail=stderr_tail or None,
            energy_reason="no energy source on this host (RAPL is not readable in /sys/class/powercap)"
            if not glob.glob("/sys/class/powercap/intel-rapl:*/energy_uj") else "host energy is not measured yet",
            protocol={**s.to_dict(), **fields.pop("protocol", {})}, **fields)

def _add_libraries(env: dict[str, str], libraries: tuple[Path, ...]) -> None:
    """The user's shared libraries (protocol and tool engines), found where they lie: their folders on
    LD_LIBRARY_PATH."""
    if libraries:
        env["LD_LIBRARY_PATH"] = os.pathsep.join([*dict.fromkeys(str(p.resolve().parent) for p in libraries),
                                                  env.get("LD_LIBRARY_PATH", "")])


def _package_shim(tmp: str) -> str:
    """A folder holding just the `devicelab` package (runners included), for another interpreter's
    PYTHONPATH: adding our whole site-packages would shadow that environment's own engine build."""
    import importlib.util

    import devicelab

    root = Path(tmp) / "shim"
    pkg = root / "devicelab"
    pkg.mkdir(parents=True)
    source = Path(devicelab.__file__).resolve().parent
    for entry in source.iterdir():
        if entry.name not in ("runners", "reports", "__pycache__"):
            (pkg / entry.name).symlink_to(entry)
    # Editable installs map runners/ and reports/ from the repository root; installed ones keep them inside.
    for sub in ("runners", "reports"):
        spec = importlib.util.find_spec(f"devicelab.{sub}")
        if spec and spec.submodule_search_locations:
            (pkg / sub).symlink_to(Path(list(spec.submodule_search_locations)[0]))
    return str(root)


def _killpg(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    """The exit code (negative: killed by that signal), or None if still running after `timeout`."""
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None
