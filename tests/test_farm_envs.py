"""Label environments on the farm (docs/farm.md): the client records a label interpreter's lock, the store carries
it by sha256, a worker's host rebuilds the environment from it (once per lock and host) and runs the label there.
The parts without Dask take seconds (venvs without pip, no packages); the run on loopback — real Dask, the host's own
device as a farm worker, the client's label environment visible to the client alone — installs ONNX Runtime twice
from pip's cache and is marked slow."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from android_env import needs_namespace
from helpers import DEVICELAB, FAST_PROTOCOL
from test_farm import Proc, beats, plain_env, wait_for

from devicelab.errors import DevicelabError
from devicelab.farm import envs
from devicelab.store import ArtifactMismatch, open_store


def bare_venv(path: Path) -> Path:
    """A venv with no packages at all (no pip either): its lock pins nothing, and building it takes a second."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    return path / "bin" / "python"


def job_with(python: str) -> Any:
    from devicelab.engines.base import PreparedModel, SourceModel
    from devicelab.measure import ProtocolSettings
    from devicelab.result import Config
    from devicelab.session import Job

    model = Path(python).parent.parent / "m.onnx"
    model.write_bytes(b"model bytes")
    config = Config("farm-host", "onnxruntime", "env", "1", "m", "cd" * 32, 11, "fp32", "cpu", 1, (0,), "big")
    return Job("run-1", config, SourceModel("m", model, "cd" * 32, ()), PreparedModel(model, (), {}),
               ProtocolSettings(), options={"python": python})


def test_the_lock_is_the_environments_pins_and_python(tmp_path: Path) -> None:
    python = bare_venv(tmp_path / "env")
    lock = envs.lock_of(python)
    assert lock["format"] == envs.LOCK_FORMAT and lock["requirements"] == [] and lock["base"] == []
    assert lock["python"] == ".".join(map(str, sys.version_info[:3])) and lock["implementation"] == "cpython"
    assert lock["system_site_packages"] is False
    # this test's own interpreter: every distribution it sees, pinned exactly (its venv's own, pip left out)
    mine = envs.lock_of(sys.executable)
    from importlib.metadata import version

    assert f"pyyaml=={version('pyyaml')}" in mine["requirements"]
    assert not any(r.startswith(("pip==", "devicelab==")) for r in mine["requirements"] + mine["base"])
    assert envs.lock_bytes(mine) == envs.lock_bytes(json.loads(envs.lock_bytes(mine)))  # canonical: one sha256


def test_differences_name_python_and_each_package() -> None:
    lock = {"python": "3.11.2", "implementation": "cpython", "requirements": ["numpy==2.4.6", "onnxruntime==1.32.0"],
            "base": []}

    def found(py: str, **pkgs: str) -> dict[str, Any]:
        return {"python": py, "implementation": "cpython", "packages": {n: [v, "env"] for n, v in pkgs.items()}}

    assert envs.differences(lock, found("3.11.9", numpy="2.4.6", onnxruntime="1.32.0", pip="26.3")) == []
    assert envs.differences(lock, found("3.12.1", numpy="2.4.5", sympy="1.0")) == [
        "Python is cpython 3.12.1, the lock's cpython 3.11.2", "numpy is 2.4.5, the lock's 2.4.6",
        "onnxruntime 1.32.0 is missing", "sympy 1.0 is not in the lock"]


def test_a_worker_host_builds_each_lock_once_even_with_two_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                   ) -> None:
    data = envs.lock_bytes(envs.lock_of(bare_venv(tmp_path / "client-env")))
    sha = hashlib.sha256(data).hexdigest()
    built: list[str] = []
    real = envs._build

    def counting(*args: Any) -> None:
        built.append(str(args[1]))
        real(*args)

    monkeypatch.setattr(envs, "_build", counting)
    cache = tmp_path / "cache"
    got: list[Path] = []
    workers = [threading.Thread(target=lambda: got.append(envs.ensure(data, sha, cache))) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert built == [str(cache / sha)] and got == [cache / sha / "bin" / "python"] * 2
    assert envs.listing(got[0])["packages"] == {}  # what the lock says: nothing
    assert json.loads((cache / sha / envs.MARKER).read_text())["lock_sha256"] == sha
    assert envs.ensure(data, sha, cache) == got[0] and len(built) == 1  # cached: not built again


def test_an_environment_that_cannot_be_had_is_one_line_and_leaves_nothing(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    base = envs.lock_of(bare_venv(tmp_path / "env"))
    cache = tmp_path / "cache"
    # a pin the index does not have (pip told to use no index at all: it fails at once, offline)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    missing = envs.lock_bytes({**base, "requirements": ["devicelab-no-such-package==1.0"]})
    sha = hashlib.sha256(missing).hexdigest()
    with pytest.raises(envs.EnvError) as e:
        envs.ensure(missing, sha, cache)
    [line] = str(e.value).splitlines()
    assert line.startswith(f"label environment {sha[:12]}: pip install of its 1 pins failed: ") and \
        "devicelab-no-such-package" in line, line
    assert not (cache / sha).exists()  # no half-built environment is left to be mistaken for a built one
    # a Python this host does not have: refused before anything is made
    old = envs.lock_bytes({**base, "python": "2.7.18"})
    with pytest.raises(envs.EnvError, match=r"^label environment [0-9a-f]{12}: no cpython 2\.7 interpreter on this "
                                            r"host .*needs Python 2\.7\.18$"):
        envs.ensure(old, hashlib.sha256(old).hexdigest(), cache)
    assert not (cache / hashlib.sha256(old).hexdigest()).exists()


def test_a_damaged_stored_lock_is_refused_on_arrival(store_target: Any, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The lock travels as a task file: published by the client, checked by sha256 on the worker's host; a damaged
    stored copy is one line (ArtifactMismatch), and no environment is built from it."""
    from devicelab.farm import artifacts

    monkeypatch.setenv("DEVICELAB_DATA", str(tmp_path / "client-data"))
    python = str(bare_venv(tmp_path / "client-env"))
    job = job_with(python)
    store = store_target.open()
    try:
        shipment = artifacts.publish(store, [job])
        lock = shipment.envs[python]
        assert lock.name == envs.LOCK_NAME
        assert json.loads(store_bytes(store, lock.sha256, tmp_path)) == envs.lock_of(python)
        # a worker's host: its own data folder; the lock arrives, the environment is built, the job points at it
        monkeypatch.setenv("DEVICELAB_DATA", str(tmp_path / "worker-data"))
        [local], _ = artifacts.localize(store, [job], shipment)
        built = tmp_path / "worker-data" / "farm" / "envs" / lock.sha256 / "bin" / "python"
        assert local.options["python"] == str(built) and built.exists()

        def unreachable() -> Any:
            raise DevicelabError("cannot open the store: down")

        # the next task: files and environment cached, the store not even opened
        again, _ = artifacts.localize(unreachable, [job], shipment)
        assert again[0].options["python"] == str(built)
        # another host (an empty data folder) and the stored copy damaged: refused, nothing built
        monkeypatch.setenv("DEVICELAB_DATA", str(tmp_path / "other-host"))
        damage(store, lock.sha256)
        with pytest.raises(ArtifactMismatch, match=rf"failed its check on arrival: .*expected {lock.sha256}"):
            artifacts.localize(store, [job], shipment)
        assert not (tmp_path / "other-host" / "farm" / "envs").exists()
    finally:
        store.close()


def store_bytes(store: Any, sha256: str, tmp_path: Path) -> bytes:
    return store.get_artifact(sha256, tmp_path / "read-back" / sha256).read_bytes()  # type: ignore[no-any-return]


def damage(store: Any, sha256: str) -> None:
    with store._write():
        store._rows("UPDATE artifact_chunks SET content=? WHERE sha256=? AND seq=0", (b'{"format": "other"}', sha256))


# --------------------------------------------------------------------------------------------------
# End to end: a label environment only the client has, run by the host's own farm worker


@pytest.mark.slow
@needs_namespace()
def test_a_label_environment_travels_as_its_lock_and_the_worker_rebuilds_it(tmp_path: Path, data_dir: Path) -> None:
    from importlib.metadata import version

    env = plain_env(tmp_path, data_dir)
    env["DEVICELAB_DATA"] = str(tmp_path / "worker-data")  # this host's farm cache starts empty
    # The label's environment: ONNX Runtime (and what it needs) at this interpreter's versions, in a venv that
    # exists only in the client's mount namespace (a bind mount over a folder that is empty for every other process).
    staged = tmp_path / "staged-env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(staged)], check=True)
    pip = subprocess.run([sys.executable, "-m", "pip", "--python", str(staged / "bin" / "python"), "install", "-q",
                          f"onnxruntime=={version('onnxruntime')}", f"numpy=={version('numpy')}"],
                         capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr[-2000:]
    private = tmp_path / "client-only" / "label-env"
    private.mkdir(parents=True)
    label_python = private / "bin" / "python"
    suite = tmp_path / "ab.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "label-env", "models": ["squeezenet1_1"], "threads": [1], "repeats": 1, "seed": 3,
        "devices": ["farm-host"], "protocol": {**FAST_PROTOCOL, "accuracy_inputs": 0},
        "engines": [{"name": "onnxruntime", "label": "base"},
                    {"name": "onnxruntime", "label": "env", "options": {"python": str(label_python)}}]}))
    scheduler = Proc([DEVICELAB, "farm", "scheduler", "--port", "0"], env, tmp_path / "scheduler.log", True)
    agent = None
    try:
        # the host's own device as a farm worker (its agent has no phone: adb and usbmuxd list none here)
        agent = Proc([DEVICELAB, "farm", "agent", "--scheduler", scheduler.first_line, "--host-device", "farm-host",
                      "--beat-seconds", "1", "--scan-seconds", "1"], env, tmp_path / "agent.log")
        wait_for("the host's worker beating", lambda: (b := beats(env["DEVICELAB_DB"]).get("farm-host")) and
                 b.reachable, timeout=120)
        script = (f"mount --bind '{staged}' '{private}' && exec '{DEVICELAB}' run --farm '{scheduler.first_line}' "
                  f"--suite '{suite}' --json")
        p = subprocess.run(["unshare", "--map-root-user", "--mount", "sh", "-c", script], env=env,
                           capture_output=True, text=True, timeout=1200)
        log = agent.text()
    finally:
        if agent is not None:
            agent.stop()
        scheduler.stop()
    assert "worker farm-host (host) started" in log
    assert list(private.iterdir()) == []  # what the worker's process saw of the client's environment
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    results = json.loads(p.stdout)["results"]
    assert sorted(r["label"] for r in results) == ["base", "env"]
    assert all(r["status"] == "ok" for r in results), [(r["label"], r["status"], r["reason"]) for r in results]
    assert {r["engine_version"] for r in results} == {version("onnxruntime")}
    # the worker built the label's environment from the lock, in its host's cache, and it holds exactly the pins
    [built] = [d for d in (tmp_path / "worker-data" / "farm" / "envs").iterdir() if d.is_dir()]
    lock = envs.lock_of(staged / "bin" / "python")
    assert built.name == hashlib.sha256(envs.lock_bytes(lock)).hexdigest()
    assert envs.differences(lock, envs.listing(built / "bin" / "python")) == []
    assert "onnxruntime" in envs.listing(built / "bin" / "python")["packages"]
    store = open_store(env["DEVICELAB_DB"], create=False)
    try:
        assert store.has_artifact(built.name)  # the lock, stored by the client under its sha256
    finally:
        store.close()


def test_a_task_whose_environment_cannot_be_had_gives_one_line_infra_failed_rows(tmp_path: Path,
                                                                                  monkeypatch: pytest.MonkeyPatch
                                                                                  ) -> None:
    """The worker's side of a task (no Dask: the plugin's fetch step): a lock this host cannot build from makes the
    task's rows infra-failed with the one line, and nothing runs."""
    from devicelab.farm import artifacts
    from devicelab.farm.worker import PhonePlugin, Spool
    from devicelab.result import INFRA_FAILED

    monkeypatch.setenv("DEVICELAB_DATA", str(tmp_path / "data"))
    db = str(tmp_path / "db.sqlite")
    store = open_store(db)
    python = str(bare_venv(tmp_path / "client-env"))
    job = job_with(python)
    try:
        shipment = artifacts.publish(store, [job])
        lock = tmp_path / envs.LOCK_NAME
        lock.write_bytes(envs.lock_bytes({**envs.lock_of(python), "python": "2.7.18"}))  # a Python no host here has
        shipment.envs[python] = artifacts.Shipped(store.put_artifact(lock, envs.LOCK_NAME), envs.LOCK_NAME)
    finally:
        store.close()
    plugin = PhonePlugin("farm-host", db, 1.0, Spool(tmp_path / "spool.jsonl"))
    rows = plugin._fetch(db, [job], shipment)
    assert isinstance(rows, list) and [r.status for r in rows] == [INFRA_FAILED]
    [line] = rows[0].reason.splitlines()
    assert line.startswith(f"label environment {shipment.envs[python].sha256[:12]}: no cpython 2.7 interpreter"), line
    assert rows[0].samples_s == () or list(rows[0].samples_s) == []
