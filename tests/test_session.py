"""The session on a device kind written from docs/devices.md alone: a toy transport (a subprocess on the host posing as
a device, with its own file system root) runs a config end to end through the contract and nothing else."""

from __future__ import annotations

import dataclasses

import hashlib
import os
import platform
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from devicelab import zoo
from devicelab.devices.base import Placed, Process, ResultExtras, Transport
from devicelab.devices.host import HostProcess
from devicelab.engines import PreparedModel, SourceModel
from devicelab.facts import DeviceEntry, DeviceFacts
from devicelab.measure import ProtocolSettings
from devicelab.result import OK, Config, Result, Transfer, utc_now
from devicelab.session import Job, run_jobs

EXAMPLE_RUNNER = Path(__file__).resolve().parent.parent / "examples" / "protocol_runner.c"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "devices.md"


class LoggedProcess(HostProcess):
    """A local subprocess (the host kind's Process, reused: the toy's programs are local too) that logs what it is
    sent, so a test can see the order in which the session drove its runners."""

    log: list[tuple[int, bytes]] = []

    def write(self, data: bytes) -> None:
        LoggedProcess.log.append((id(self), data))
        super().write(data)


class ToyTransport(Transport):
    """A "device" whose files live under its own root: put copies them there by content, run folders hold links."""

    kind = "toy"
    pin_method = "none (the toy does not pin)"
    missing_probe_note = False

    def __init__(self, entry: DeviceEntry, root: Path) -> None:
        super().__init__(entry)
        self.root = root

    def facts(self) -> DeviceFacts:
        return DeviceFacts(self.id, self.kind, "toy", "toy OS", platform.machine(), (0,), ())

    def state(self) -> dict[str, Any]:
        return {"at": utc_now(), "temperatures_c": {}, "cpufreq": {}, "unavailable": ["the toy has no sensors"]}

    def put(self, files: Sequence[tuple[str, Path]]) -> Placed:
        paths, copied, sent = [], 0, 0
        for name, local in files:
            digest = hashlib.sha256(Path(local).read_bytes()).hexdigest()
            dest = self.root / "blobs" / digest / Path(name).name
            if not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(local, dest)
                copied, sent = copied + 1, sent + dest.stat().st_size
            paths.append(str(dest))
        return Placed(paths, Transfer(len(files), copied, sent, 0.0))

    def run_folder(self, links: Mapping[str, str]) -> str:
        folder = self.root / "run" / str(len(list((self.root / "run").glob("*"))) if (self.root / "run").exists() else 0)
        folder.mkdir(parents=True)
        for name, target in links.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).symlink_to(target)
        return str(folder)

    def pull(self, path: str, local: Path) -> bool:
        if not Path(path).is_file():
            return False
        shutil.copyfile(path, local)
        return True

    def remove(self, folder: str) -> None:
        shutil.rmtree(folder)

    def spawn(self, argv: Sequence[str], env: Mapping[str, str], cpus: Sequence[int], cwd: str | None) -> Process:
        return LoggedProcess(argv, {"PATH": os.environ.get("PATH", ""), **env}, (), cwd)

    def clean(self) -> dict[str, Any]:
        shutil.rmtree(self.root)
        return {"device": self.id, "removed": str(self.root), "bytes": 0}

    def native_targets(self) -> str:
        return "the toy has no native builds"


FAST = ProtocolSettings(warmup_iterations=2, warmup_seconds=0.0, min_iterations=5, min_seconds=0.0,
                        max_iterations=8, max_seconds=2.0, cooldown_seconds=0.0, timeout_seconds=60,
                        accuracy_inputs=0)


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runner") / "protocol_runner"
    subprocess.run(["cc", "-O2", "-o", str(out), str(EXAMPLE_RUNNER)], check=True, capture_output=True)
    return out


def _job(tmp: Path, runner: Path, label: str = "", repeat: int = 0) -> Job:
    model = zoo.zoo_model("squeezenet1_1", tmp / "zoo")
    source = SourceModel(model.name, model.path, model.sha256, tuple(zoo.onnx_inputs(model.path)), zoo=True)
    cfg = Config("toy-1", "protocol", label, "sha256:x", model.name, model.sha256, model.bytes, "fp32", "cpu", 1,
                 (), "all", repeat)
    return Job("run-1", cfg, source, PreparedModel(model.path), FAST, options={"binary": str(runner)})


def test_a_toy_transport_runs_a_config_end_to_end(tmp_path: Path, runner: Path) -> None:
    toy = ToyTransport(DeviceEntry("toy-1", "toy"), tmp_path / "device")
    first = run_jobs(toy, [_job(tmp_path, runner)])[0]
    assert first.status == OK, (first.reason, first.stderr_tail)
    assert len(first.samples_s) >= FAST.min_iterations and first.median_s and first.peak_rss_bytes
    assert first.protocol is not None and first.protocol.stop_reason and first.protocol.runner_protocol == 1
    assert first.protocol.warmup is not None and first.protocol.warmup.by == "runner"  # the example runner is v1
    assert first.protocol.push is not None and first.protocol.push.pushed_files >= 3  # runner, model, config
    assert first.protocol.pinning is not None and first.protocol.pinning.method.startswith("none")
    # The run folder is gone, the blobs stay: a second run of the same config copies nothing.
    assert list((tmp_path / "device" / "run").iterdir()) == []
    second = run_jobs(toy, [_job(tmp_path, runner)])[0]
    assert second.status == OK and second.protocol is not None and second.protocol.push is not None
    assert second.protocol.push.pushed_files == 0 and second.protocol.push.bytes == 0
    # The row survives the store's round trip unchanged.
    assert Result.from_dict(first.to_dict()) == first


def test_two_labels_on_the_toy_run_in_lockstep(tmp_path: Path, runner: Path) -> None:
    toy = ToyTransport(DeviceEntry("toy-1", "toy"), tmp_path / "device")
    LoggedProcess.log.clear()
    a, b = run_jobs(toy, [_job(tmp_path, runner, "a"), _job(tmp_path, runner, "b")])
    assert a.status == b.status == OK
    assert a.protocol and a.protocol.lockstep and a.protocol.lockstep.with_ == ("b",)
    assert b.protocol and b.protocol.lockstep and b.protocol.lockstep.with_ == ("a",)
    # Timed in alternating slices: the second runner's first batch came before the first runner's last one.
    runs = [who for who, data in LoggedProcess.log if b'"run"' in data]
    first, second = runs[0], next(w for w in runs if w != runs[0])
    assert runs.index(second) < len(runs) - 1 - runs[::-1].index(first), runs


def test_a_runner_that_crashes_is_a_failed_row_with_its_exit(tmp_path: Path) -> None:
    crash = tmp_path / "crash.sh"
    crash.write_text("#!/bin/sh\necho '{\"event\":\"ready\",\"protocol\":1,\"load_s\":0.1,\"first_s\":0.01,"
                     "\"warmups\":1,\"rss_before_load_bytes\":1}'\nkill -SEGV $$\n")
    crash.chmod(0o755)
    toy = ToyTransport(DeviceEntry("toy-1", "toy"), tmp_path / "device")
    r = run_jobs(toy, [_job(tmp_path, crash)])[0]
    assert r.status == "failed" and r.reason == "runner ended before finishing (killed by signal SIGSEGV)"


class HotToy(ToyTransport):
    """A toy whose "device" reports a condition of its own around every config, as a phone's thermal status."""

    def result_extras(self, before: dict[str, Any] | None, after: dict[str, Any] | None) -> ResultExtras:
        return ResultExtras({"thermal_status": {"before": 3, "after": 4 if after is not None else None}},
                            ("the toy says it was hot",), throttled=True)


def test_a_transport_adds_its_own_extensions_notes_and_throttling_to_each_row(tmp_path: Path, runner: Path) -> None:
    crash = tmp_path / "crash.sh"
    crash.write_text("#!/bin/sh\nexit 3\n")
    crash.chmod(0o755)
    toy = HotToy(DeviceEntry("toy-1", "toy"), tmp_path / "device")
    ok, failed = run_jobs(toy, [_job(tmp_path, runner, "ok")])[0], run_jobs(toy, [_job(tmp_path, crash, "bad")])[0]
    assert ok.status == OK and failed.status == "failed", (ok.reason, failed.reason)
    for r in (ok, failed):  # the toy has no cpufreq, so only its own word makes the rows throttled
        assert r.ext["thermal_status"] == {"before": 3, "after": 4} and r.throttled is True
        assert "the toy says it was hot" in r.notes
    assert "iter_t_s" not in failed.ext and any("throttled during the measurement" in n for n in ok.notes)
    plain = run_jobs(ToyTransport(DeviceEntry("toy-1", "toy"), tmp_path / "device"), [_job(tmp_path, runner)])[0]
    assert plain.throttled is None and "thermal_status" not in plain.ext  # the default hook adds nothing


def test_a_job_of_a_rebuilt_label_environment_names_its_lock_on_every_row(tmp_path: Path, runner: Path) -> None:
    """A farm worker's job whose label environment was rebuilt from a lock (Job.env_lock): each row the session makes
    of it, ok or failed, is born saying which lock (ext.label_env_lock); a job without one says nothing. The key takes
    a sha256 and nothing else."""
    crash = tmp_path / "crash.sh"
    crash.write_text("#!/bin/sh\nexit 3\n")
    crash.chmod(0o755)
    toy = ToyTransport(DeviceEntry("toy-1", "toy"), tmp_path / "device")
    lock = "ab" * 32
    ok = run_jobs(toy, [dataclasses.replace(_job(tmp_path, runner, "ok"), env_lock=lock)])[0]
    failed = run_jobs(toy, [dataclasses.replace(_job(tmp_path, crash, "bad"), env_lock=lock)])[0]
    assert ok.status == OK and failed.status == "failed", (ok.reason, failed.reason)
    assert ok.ext["label_env_lock"] == failed.ext["label_env_lock"] == lock
    assert Result.from_dict(ok.to_dict()).ext["label_env_lock"] == lock  # as stored and read back
    assert "label_env_lock" not in run_jobs(toy, [_job(tmp_path, runner)])[0].ext
    with pytest.raises(ValueError, match="ext.label_env_lock"):
        dataclasses.replace(ok, ext={"label_env_lock": "not a sha256"})


V2_RUNNER = """#!/usr/bin/env python3
import json, sys
print(json.dumps({"event": "ready", "protocol": 2, "load_s": 0.01, "first_s": 0.01, "warmups": 0}), flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    if cmd["cmd"] in ("run", "warmup"):
        print("".join('{"event":"iter","s":0.01}\\n' for _ in range(cmd["iterations"])) + '{"event":"batch"}', flush=True)
    elif cmd["cmd"] == "stop":
        print(json.dumps({"event": "done", "peak_rss_bytes": 1}), flush=True)
        break
"""


class SlowClocks(ToyTransport):
    slow_clock_ramp = True


@pytest.mark.parametrize("kind, stopped", [(ToyTransport, "steady"), (SlowClocks, "cap")])
def test_a_device_whose_clocks_ramp_slowly_is_warmed_up_to_warmup_seconds(tmp_path: Path, kind: type,
                                                                         stopped: str) -> None:
    program = tmp_path / "v2_runner"
    program.write_text(V2_RUNNER)
    program.chmod(0o755)
    job = _job(tmp_path, program)
    job = dataclasses.replace(job, settings=dataclasses.replace(FAST, warmup_iterations=3, warmup_seconds=0.5))
    (row,) = run_jobs(kind(DeviceEntry("toy-1", "toy"), tmp_path / "device"), [job])
    assert row.status == OK, (row.reason, row.stderr_tail)
    warmup = row.protocol.warmup
    assert warmup is not None and warmup.by == "controller" and warmup.stopped == stopped
    # steady at 0.01 s an iteration: two 5-iteration windows (0.1 s); a phone: the whole 0.5 s, steady or not
    assert round(warmup.seconds, 6) == (0.5 if stopped == "cap" else 0.1)


def test_the_docs_page_names_every_method_of_the_contract() -> None:
    text = DOCS.read_text()
    for cls in (Transport, Process):
        for name in sorted(getattr(cls, "__abstractmethods__")):
            assert f"`{name}(" in text, f"docs/devices.md does not document {cls.__name__}.{name}"
    for hook in ("cooldown_zones", "energy_source", "profile_key", "close", "pin_method", "lockstep",
                 "missing_probe_note", "cooldown_poll_seconds", "begin_run", "result_extras", "spawn_python",
                 "zygotes", "slow_clock_ramp"):
        assert f"`{hook}" in text, hook


def test_a_malformed_runner_line_fails_its_row_naming_it_and_the_others_run(tmp_path: Path, runner: Path) -> None:
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/bin/sh\necho '{\"event\":\"ready\",\"protocol\":1,\"load_s\":0.1,\"first_s\":0.01,\"warmups\":1}'\n"
                   "read cmd\necho '{\"event\":\"iter\",\"s\":\"fast\"}'\necho '{\"event\":\"batch\"}'\nread cmd\n")
    bad.chmod(0o755)
    toy = ToyTransport(DeviceEntry("toy-1", "toy"), tmp_path / "device")
    broken, fine = run_jobs(toy, [_job(tmp_path, bad, "bad"), _job(tmp_path, runner, "fine")])
    assert broken.status == "failed" and '"s": "fast"' in str(broken.reason) and "'s' must be" in str(broken.reason)
    assert fine.status == OK


def test_artifact_bytes_of_a_folder_model_are_the_sum_of_its_files(tmp_path: Path) -> None:
    """A Core ML package is a folder: its artifact bytes are its files' (nested ones included), not the size of the
    folder entry."""
    from devicelab.session import artifact_bytes

    package = tmp_path / "m.mlpackage"
    (package / "Data" / "com.apple.CoreML" / "weights").mkdir(parents=True)
    sizes = {"Manifest.json": 300, "Data/com.apple.CoreML/model.mlmodel": 5000,
             "Data/com.apple.CoreML/weights/weight.bin": 123457}
    for name, size in sizes.items():
        (package / name).write_bytes(b"x" * size)
    assert artifact_bytes(PreparedModel(package)) == sum(sizes.values())
    single = tmp_path / "model.param"
    single.write_bytes(b"y" * 77)
    weights = tmp_path / "model.bin"
    weights.write_bytes(b"z" * 1000)
    assert artifact_bytes(PreparedModel(single, options={"weights": str(weights)})) == 1077


def test_a_device_gone_row_names_the_device_once() -> None:
    from devicelab import rows
    from devicelab.result import Config

    cfg = Config(device="phone-1", engine="ncnn", label="", engine_version="1", model="m", model_sha256="0" * 64,
                 model_bytes=1, precision="fp32", backend="cpu", threads=1, cpus=(0,), affinity="all")
    assert rows.device_gone("r", cfg, "device phone-1: not found").reason == "device phone-1: not found"
    assert rows.device_gone("r", cfg, "adb: gone").reason == "device phone-1: adb: gone"


def test_devicelabs_own_process_keys_never_reach_the_runner(tmp_path: Path) -> None:
    """The allocator's threshold is for the controller to set in the environment: a runner's config (a user's
    program reads it) holds the suite's other options only (docs/runner-protocol.md: "minus devicelab's own keys")."""
    from devicelab.session import runner_config

    job = dataclasses.replace(_job(tmp_path, tmp_path / "runner"),
                              options={"binary": "b", "mmap_threshold": "dynamic", "formats": ["onnx"]})
    assert runner_config(job, None)["options"] == {"binary": "b", "formats": ["onnx"]}
