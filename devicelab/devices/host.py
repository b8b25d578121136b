"""The host machine as a device: each config runs in a fresh Python subprocess (devicelab.runners.host),
pinned before the model loads, in its own process group so a hung runner can be killed whole."""

from __future__ import annotations

import glob
import json
import os
import platform
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO

from devicelab import native
from devicelab.analysis import stats
from devicelab.devices.base import Cluster, Device, DeviceFacts, Job
from devicelab.engines import Engine, get_engine
from devicelab.protocol import (ChannelClosedError, ChannelTimeoutError, ProtocolSettings, RunnerError, measure,
                                now_deadline)
from devicelab.result import FAILED, OK, Result
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
        self._events: queue.Queue[dict[str, Any] | None] = queue.Queue()
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
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ChannelTimeoutError()
        try:
            event = self._events.get(timeout=remaining)
        except queue.Empty:
            raise ChannelTimeoutError() from None
        if event is None:
            raise ChannelClosedError("runner output ended")
        return event


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

    def cooldown(self, baseline: dict[str, Any], settings: ProtocolSettings) -> dict[str, Any]:
        base = baseline.get("temperatures_c") or {}
        if not base:
            time.sleep(settings.cooldown_seconds)
            return {"method": "fixed pause (no temperature sensor)", "waited_s": settings.cooldown_seconds}
        start = time.monotonic()
        while True:
            now = self.state().get("temperatures_c") or {}
            over = {k: now[k] - base[k] for k in base if k in now and now[k] - base[k] > settings.cooldown_tolerance_c}
            waited = time.monotonic() - start
            if not over:
                return {"method": "temperature", "waited_s": round(waited, 3), "reached": True}
            if waited >= settings.cooldown_timeout_seconds:
                return {"method": "temperature", "waited_s": round(waited, 3), "reached": False,
                        "still_above_baseline_c": over}
            time.sleep(0.5)

    # ---- running -------------------------------------------------------------------------------------

    def runner_command(self, config_path: str, engine: Engine, python: str | None = None) -> list[str]:
        """The runner for this engine: its native binary from `devicelab build-native --target host`, or the
        Python host runner (in another interpreter for a label whose build lives there). Raises
        FileNotFoundError naming the build command when the binary is missing."""
        if engine.native_runner:
            binary = native.artifact("host", engine.native_runner)
            if binary is None:
                raise FileNotFoundError(f"{engine.native_runner} is not built for the host: run "
                                        "`devicelab build-native --target host`")
            return [str(binary), config_path]
        return [python or sys.executable, "-m", "devicelab.runners.host", config_path]

    def probe_command(self, command: list[str], cpus: tuple[int, ...], out: str) -> list[str]:
        """`command` under dlprobe when it is built for the host (pinned by dlprobe before exec, sampled from
        a free core, peak memory from wait4); the command unchanged otherwise."""
        dlprobe = native.artifact("host", "dlprobe")
        return native.probe_argv(str(dlprobe), command, cpus, out) if dlprobe else command

    def run(self, job: Job) -> Result:
        cfg = job.config
        s = job.settings
        started = utc_now()
        state_before = self.state()
        runner_cfg = {"engine": cfg.engine, "model": str(job.model_path), "inputs": list(job.inputs),
                      "threads": cfg.threads, "cpus": list(cfg.cpus), "precision": cfg.precision,
                      "backend": cfg.backend, "seed": job.seed, "options": job.options,
                      "warmup": {"min_iterations": s.warmup_iterations, "min_seconds": s.warmup_seconds},
                      "accuracy_inputs": s.accuracy_inputs if job.outputs_path else 0,
                      "outputs_file": str(job.outputs_path) if job.outputs_path else None}
        env = dict(os.environ)
        # numpy (input generation only) must not start a BLAS pool next to the engine's threads.
        env.update({"OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OMP_NUM_THREADS": str(cfg.threads),
                    "PYTHONUNBUFFERED": "1"})
        python = job.options.get("python")
        notes = list(job.notes)
        fields: dict[str, Any] = {}
        status, reason = OK, None
        closed = False
        with tempfile.TemporaryDirectory(prefix="devicelab-run-") as tmp, \
                open(os.path.join(tmp, "stderr"), "w+b") as err:
            config_path = os.path.join(tmp, "config.json")
            probe_path = os.path.join(tmp, "dlprobe.json")
            engine = get_engine(cfg.engine)
            try:
                runner_cfg = engine.stage(runner_cfg, Path(tmp))
                runner = self.runner_command(config_path, engine, python)
                command = self.probe_command(runner, cfg.cpus, probe_path)
            except (OSError, ValueError) as e:
                return Result.for_config(job.run_id, cfg, FAILED, reason=str(e), notes=tuple(notes),
                                         state_before=state_before, started_at=started, finished_at=utc_now())
            with open(config_path, "w") as f:
                json.dump(runner_cfg, f)
            if python:
                # Another environment holds this label's engine build: lend it devicelab's runner code only.
                env["PYTHONPATH"] = os.pathsep.join(filter(None, [_package_shim(tmp), env.get("PYTHONPATH")]))
            proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=err, env=env, start_new_session=True, cwd=tmp)
            try:
                m = measure(_PipeChannel(proc), s, now_deadline(s.timeout_seconds))
                fields = self._fields(m, cfg.cpus, notes)
            except ChannelTimeoutError:
                _killpg(proc)
                status, reason = FAILED, f"timeout: no answer within timeout_seconds={s.timeout_seconds:g}; runner process group killed"
            except ChannelClosedError:
                code = _wait(proc, 5.0)
                status, reason = FAILED, f"runner ended before finishing ({_describe_exit(code)})"
                closed = True
            except RunnerError as e:
                status, reason = FAILED, str(e)
            finally:
                # Also on KeyboardInterrupt: never leave a runner behind.
                if proc.stdin:
                    try:
                        proc.stdin.close()
                    except OSError:
                        pass
                if _wait(proc, 5.0) is None:
                    _killpg(proc)
                    proc.wait()
            stderr_tail = _tail(err)
            if command is not runner:
                report = native.ProbeReport.read(Path(probe_path))
                if closed and report is not None and report.exit_signal:
                    # dlprobe exits 128 + signal; say what happened to the runner itself
                    reason = f"runner ended before finishing ({_describe_exit(-report.exit_signal)})"
                fields = self._probe_fields(report, fields, notes)
            else:
                fields.pop("_runner_peak", None)
        state_after = self.state()
        throttled = _throttled(state_before, state_after, cfg.cpus)
        notes.extend(stats.stability_warnings(fields.get("samples_s", ()), throttled))
        return Result.for_config(
            job.run_id, cfg, status, reason=reason, notes=tuple(notes), state_before=state_before,
            state_after=state_after, throttled=throttled,
            started_at=started, finished_at=utc_now(), stderr_tail=stderr_tail or None,
            energy_reason="no energy source on this host (RAPL is not readable in /sys/class/powercap)"
            if not glob.glob("/sys/class/powercap/intel-rapl:*/energy_uj") else "host energy is not measured yet",
            protocol={**s.to_dict(), **fields.pop("protocol", {})}, **fields)

    @staticmethod
    def _fields(m: Any, cpus: tuple[int, ...], notes: list[str]) -> dict[str, Any]:
        ready, done = m.ready, m.done
        pinned = ready.get("cpus")
        if pinned is not None and cpus and sorted(pinned) != sorted(cpus):
            notes.append(f"runner reports affinity {pinned}, asked for {list(cpus)}")
        return {
            "samples_s": tuple(m.samples_s), "warmups": ready.get("warmups"),
            "median_s": stats.median(m.samples_s), "p90_s": stats.percentile(m.samples_s, 90),
            "load_s": ready.get("load_s"), "first_s": ready.get("first_s"),
            "rss_before_load_bytes": ready.get("rss_before_load_bytes"),
            "peak_rss_bytes": done.get("peak_rss_bytes"),
            "memory_method": f"{done.get('peak_rss_method', 'VmHWM')} of the runner process at stop "
                             "(RSS before load: its VmRSS after the engine import, before the model loads)",
            "protocol": {"stop_reason": m.stop_reason, "batches": m.batches, "warmup_s": ready.get("warmup_s"),
                         "outputs_sha256": done.get("outputs_sha256"),
                         **({"runner_version": ready["runner_version"]} if ready.get("runner_version") else {}),
                         # per-layer times (op events), when the runner offers them: dlbench options.layer_times
                         **({"ops": m.ops} if m.ops else {})},
            "_runner_peak": (done.get("peak_rss_bytes"), done.get("peak_rss_method")),
        }

    @staticmethod
    def _probe_fields(report: native.ProbeReport | None, fields: dict[str, Any], notes: list[str]) -> dict[str, Any]:
        """Peak memory from dlprobe's wait4 ru_maxrss cross-checked with the runner's own VmHWM; dlprobe's
        summary (frequencies, temperatures, its own cost) goes with the protocol record."""
        if report is None:
            notes.append("dlprobe wrote no report (the runner was killed or never started)")
            fields.pop("_runner_peak", None)
            return fields
        if not fields:  # the runner failed: keep what dlprobe saw for the record, nothing else
            return {"protocol": {"dlprobe": report.summary()}}
        runner_peak, runner_method = fields.pop("_runner_peak", (None, None))
        peak, method, note = native.peak_memory(report, runner_peak, runner_method)
        if note:
            notes.append(note)
        return {**fields, "peak_rss_bytes": peak, "memory_method": method + " (RSS before load: the runner's VmRSS "
                "before the model loads)", "protocol": {**fields.get("protocol", {}), "dlprobe": report.summary()}}


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


def _throttled(before: dict[str, Any], after: dict[str, Any], cpus: tuple[int, ...]) -> bool | None:
    seen = False
    for state in (before, after):
        for cpu in cpus:
            f = (state.get("cpufreq") or {}).get(str(cpu))
            if not f or not f.get("hw_max_khz"):
                continue
            seen = True
            cap = min(x for x in (f.get("max_khz"), f.get("hw_max_khz")) if x)
            if cap < f["hw_max_khz"]:
                return True
    return False if seen else None


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
