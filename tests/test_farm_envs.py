"""Label environments on the farm (docs/farm.md): the client records a label interpreter's lock, the store carries
it by sha256, a worker's host rebuilds the environment from it (once per lock and host) and runs the label there.
The parts without Dask take seconds (venvs without pip; the packages are wheels and an sdist the tests write, installed
by pip offline); the refusals of a client and a host worker on loopback take a scheduler and an agent; the run on
loopback — real Dask, the host's own device as a farm worker, the client's label environment visible to the client
alone — installs another ONNX Runtime release twice (from the index the first time, then pip's cache) and is marked
slow."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from android_env import needs_namespace
from helpers import DEVICELAB, FAST_PROTOCOL
from test_farm import host_farm, plain_env

from devicelab.errors import DevicelabError
from devicelab.farm import envs
from devicelab.store import ArtifactMismatch, open_store


def bare_venv(path: Path) -> Path:
    """A venv with no packages at all (no pip either): its lock pins nothing, and building it takes a second."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    return path / "bin" / "python"


def job_with(python: str, folder: Path | None = None) -> Any:
    from devicelab.engines.base import PreparedModel, SourceModel
    from devicelab.measure import ProtocolSettings
    from devicelab.result import Config
    from devicelab.session import Job

    model = (folder or Path(python).parent.parent) / "m.onnx"
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
    # canonical: one environment is one sha256, whatever order its dict was built in
    reordered = {k: mine[k] for k in reversed(list(mine))}
    assert list(reordered) != list(mine) and envs.lock_bytes(reordered) == envs.lock_bytes(mine)


def test_differences_name_python_and_each_package() -> None:
    lock = {"python": "3.11.2", "implementation": "cpython", "requirements": ["numpy==2.4.6", "onnxruntime==1.32.0"],
            "base": []}

    def found(py: str, **pkgs: str) -> dict[str, Any]:
        return {"python": py, "implementation": "cpython", "packages": {n: [v, "env"] for n, v in pkgs.items()}}

    assert envs.differences(lock, found("3.11.9", numpy="2.4.6", onnxruntime="1.32.0", pip="26.3")) == []
    assert envs.differences(lock, found("3.12.1", numpy="2.4.5", sympy="1.0")) == [
        "Python is cpython 3.12.1, the lock's cpython 3.11.2", "numpy is 2.4.5, the lock's 2.4.6",
        "onnxruntime 1.32.0 is missing", "sympy 1.0 is not in the lock"]


def wheel_files(name: str, version: str) -> dict[str, bytes]:
    """The files of a pure-Python wheel: a module and its dist-info (RECORD added by write_wheel)."""
    dist = f"{name}-{version}.dist-info"
    return {f"{name}/__init__.py": f"VERSION = {version!r}\n".encode(),
            f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
            f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: devicelab-test\nRoot-Is-Purelib: true\n"
                             b"Tag: py3-none-any\n"}


def write_wheel(path: str, files: dict[str, bytes], dist: str) -> None:
    """A wheel: the files and their RECORD (also the in-archive build backend of `sdist`: self-contained)."""
    import base64
    import hashlib
    import zipfile

    def digest(data: bytes) -> str:
        return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()

    record = "".join(f"{p},sha256={digest(b)},{len(b)}\n" for p, b in files.items()) + f"{dist}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as z:
        for p, b in files.items():
            z.writestr(p, b)
        z.writestr(f"{dist}/RECORD", record)


def wheel(folder: Path, name: str, version: str) -> Path:
    """A pure-Python wheel written by hand (no build tool, no index): installed by pip as any wheel is."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{version}-py3-none-any.whl"
    write_wheel(str(path), wheel_files(name, version), f"{name}-{version}.dist-info")
    return path


def sdist(folder: Path, name: str, version: str) -> Path:
    """A source distribution whose build needs nothing from an index (its PEP 517 backend is in the archive, with no
    build requirements): pip builds it into the wheel `wheel_files` describes unless told to take wheels only."""
    import inspect
    import io
    import tarfile

    dist = f"{name}-{version}.dist-info"
    backend = (inspect.getsource(write_wheel) + f"\nFILES = {wheel_files(name, version)!r}\nDIST = {dist!r}\n"
               "def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):\n"
               f"    name = {f'{name}-{version}-py3-none-any.whl'!r}\n"
               "    write_wheel(wheel_directory + '/' + name, FILES, DIST)\n"
               "    return name\n")
    files = {"pyproject.toml": '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n',
             "backend.py": backend, "PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{version}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for rel, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{name}-{version}/{rel}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def pip_install(python: Path, *args: str) -> None:
    p = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", *args],
                       capture_output=True, text=True, env={**os.environ, "PIP_NO_INDEX": "1"})
    assert p.returncode == 0, p.stderr[-2000:]


def test_a_package_not_from_an_index_makes_no_lock(tmp_path: Path) -> None:
    """A locally built package (a path, a local wheel, a VCS: pip's PEP 610 direct_url.json) or a local version label
    would be replaced on a worker by the index's release of that version: the client refuses the lock, in one line."""
    wheels = tmp_path / "wheels"
    python = bare_venv(tmp_path / "from-a-file")
    pip_install(python, str(wheel(wheels, "dlmark", "1.0")))  # a wheel file named on the command line
    with pytest.raises(envs.EnvError) as e:
        envs.lock_of(python)
    [line] = str(e.value).splitlines()
    assert line.startswith(f"{python}: dlmark 1.0 was installed from file://{wheels}/dlmark-1.0-py3-none-any.whl, not "
                           "from an index") and "cannot travel to farm workers" in line, line
    # from an index (a folder of wheels pip reads as one: no direct_url.json), but with a local version label
    wheel(wheels, "dlmark", "1.0+mine")
    python = bare_venv(tmp_path / "local-version")
    pip_install(python, "--find-links", str(wheels), "dlmark==1.0+mine")
    assert envs.listing(python)["origins"] == {}
    with pytest.raises(envs.EnvError, match=r"^\S+: dlmark 1\.0\+mine has a local version label \(\+mine\); an "
                                            r"environment with it cannot travel"):
        envs.lock_of(python)
    # the release itself from an index that has no local version (pip's `==1.0` would take 1.0+mine too): pinned
    python = bare_venv(tmp_path / "release")
    pip_install(python, "--find-links", str(wheel(tmp_path / "releases", "dlmark", "1.0").parent), "dlmark==1.0")
    assert envs.lock_of(python)["requirements"] == ["dlmark==1.0"]


def test_a_lock_is_installed_from_wheels_only_and_a_broken_build_is_made_again(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's pip takes wheels only (an sdist would be built, with whatever build dependencies the index
    gives); a built environment is looked at cheaply before use, and one whose marker is gone or names another lock
    is built again."""
    index = tmp_path / "index"
    sdist(index, "dlsource", "1.0")
    wheel(index, "dlmark", "1.0")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    base = envs.lock_of(bare_venv(tmp_path / "env"))
    cache = tmp_path / "cache"
    source = envs.lock_bytes({**base, "requirements": ["dlsource==1.0"]})
    sha = hashlib.sha256(source).hexdigest()
    with pytest.raises(envs.EnvError) as e:
        envs.ensure(source, sha, cache)
    [line] = str(e.value).splitlines()
    assert line.startswith(f"label environment {sha[:12]}: pip install of its 1 pins failed: ") and "dlsource" in line
    assert not (cache / sha).exists()
    # a wheel: built, and looked at again before each use
    data = envs.lock_bytes({**base, "requirements": ["dlmark==1.0"]})
    sha = hashlib.sha256(data).hexdigest()
    python = envs.ensure(data, sha, cache)
    assert envs.listing(python)["packages"] == {"dlmark": ["1.0", "env"]}
    marker = cache / sha / envs.MARKER
    for broken in ("gone", "another lock"):
        if broken == "gone":
            marker.unlink()
        else:
            marker.write_text(json.dumps({"lock_sha256": "0" * 64}))
        assert envs.built(sha, cache) is None
        (cache / sha / "leftover").write_text("from the cut build")
        assert envs.ensure(data, sha, cache) == python and not (cache / sha / "leftover").exists()  # made again
        assert json.loads(marker.read_text())["lock_sha256"] == sha


def test_a_built_environment_whose_files_are_not_their_records_is_refused(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """After the build, every file of the environment's own distributions is hashed against its RECORD: a changed or
    missing file is named; a build with one is refused in one line and leaves nothing."""
    import shutil

    index = tmp_path / "index"
    wheel(index, "dlmark", "1.0")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    data = envs.lock_bytes({**envs.lock_of(bare_venv(tmp_path / "env")), "requirements": ["dlmark==1.0"]})
    sha = hashlib.sha256(data).hexdigest()
    cache = tmp_path / "cache"
    python = envs.ensure(data, sha, cache)
    assert envs.record_mismatches(python) == []
    [module] = (cache / sha).glob("lib/python*/site-packages/dlmark/__init__.py")
    module.write_text("VERSION = 'not the wheel'\n")
    assert envs.record_mismatches(python) == ["dlmark 1.0: dlmark/__init__.py (its sha256 is not its RECORD's)"]
    module.unlink()
    assert envs.record_mismatches(python) == ["dlmark 1.0: dlmark/__init__.py (missing)"]
    # a build whose file changed between pip and the check (here: the test, right after pip): refused, nothing left
    shutil.rmtree(cache)
    real = envs._build

    def tampered(base: str, home: Path, lock: dict[str, Any], where: str) -> None:
        real(base, home, lock, where)
        next(home.glob("lib/python*/site-packages/dlmark/__init__.py")).write_text("VERSION = '1.0'  # edited\n")

    monkeypatch.setattr(envs, "_build", tampered)
    with pytest.raises(envs.EnvError) as e:
        envs.ensure(data, sha, cache)
    [line] = str(e.value).splitlines()
    assert line == (f"label environment {sha[:12]}: built on this host, but a file does not match its RECORD: "
                    "dlmark 1.0: dlmark/__init__.py (its sha256 is not its RECORD's)"), line
    assert not (cache / sha).exists() and envs.built(sha, cache) is None


def test_a_stored_lock_must_hold_exact_pins_and_every_field(tmp_path: Path) -> None:
    good = {"format": envs.LOCK_FORMAT, "python": "3.11.2", "implementation": "cpython", "platform": "linux-x86_64",
            "system_site_packages": False, "requirements": ["numpy==2.4.6", "onnxruntime==1.32.0"], "base": []}
    assert envs.read_lock(envs.lock_bytes(good), "lock x") == good
    for pin in ("numpy==2.*", "numpy==2.4.6,>0", "numpy==2.4.6; python_version > '3'", "numpy<>2.4.6",
                "numpy==2.4.6+local", "numpy>=2.4.6", "numpy===2.4.6", "NumPy==2.4.6", "numpy == 2.4.6", "numpy"):
        with pytest.raises(envs.EnvError, match=r"^lock x: requirements \[.*\] is not allowed; allowed: a list of "
                                                r"exact name==version pins$"):
            envs.read_lock(envs.lock_bytes({**good, "requirements": [pin]}), "lock x")
    with pytest.raises(envs.EnvError, match=r"^lock x: base is missing; allowed: a list of exact name==version pins$"):
        envs.read_lock(envs.lock_bytes({k: v for k, v in good.items() if k != "base"}), "lock x")
    with pytest.raises(envs.EnvError, match=r'^lock x: system_site_packages "false" is not allowed; allowed: true or '
                                            r'false$'):
        envs.read_lock(envs.lock_bytes({**good, "system_site_packages": "false"}), "lock x")
    with pytest.raises(envs.EnvError, match=r"^lock x: python .* is not allowed"):
        envs.read_lock(envs.lock_bytes({**good, "python": "3.11; rm -rf /"}), "lock x")


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
    with pytest.raises(envs.EnvError, match=rf"^lock {sha[:12]}: its bytes are not that sha256$"):
        envs.ensure(data + b" ", sha, cache)  # another lock's bytes under this one's key: refused, even when cached


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
        assert local.env_lock == lock.sha256 and job.env_lock is None  # its rows will say which lock they ran in

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


# Another ONNX Runtime release than the test extra's, for the label's environment (a wheel for every platform CI runs).
OTHER_ONNXRUNTIME = "1.31.0"


@pytest.mark.slow
@needs_namespace()
def test_a_label_environment_travels_as_its_lock_and_the_worker_rebuilds_it(tmp_path: Path, data_dir: Path) -> None:
    from importlib.metadata import version

    env = plain_env(tmp_path, data_dir)
    env["DEVICELAB_DATA"] = str(tmp_path / "worker-data")  # this host's farm cache starts empty
    # The label's environment: another ONNX Runtime release than this interpreter's (so its rows say which
    # interpreter ran them), with this interpreter's numpy, in a venv that exists only in the client's mount namespace
    # (a bind mount over a folder that is empty for every other process).
    assert OTHER_ONNXRUNTIME != version("onnxruntime")
    staged = tmp_path / "staged-env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(staged)], check=True)
    pip = subprocess.run([sys.executable, "-m", "pip", "--python", str(staged / "bin" / "python"), "install", "-q",
                          "--only-binary=:all:", f"onnxruntime=={OTHER_ONNXRUNTIME}", f"numpy=={version('numpy')}"],
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
    with host_farm(env, tmp_path) as (scheduler, agent):
        script = (f"mount --bind '{staged}' '{private}' && exec '{DEVICELAB}' run --farm '{scheduler.first_line}' "
                  f"--suite '{suite}' --json")
        p = subprocess.run(["unshare", "--map-root-user", "--mount", "sh", "-c", script], env=env,
                           capture_output=True, text=True, timeout=1200)
        log = agent.text()
    assert "worker farm-host (host) started" in log
    assert list(private.iterdir()) == []  # what the worker's process saw of the client's environment
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    results = json.loads(p.stdout)["results"]
    assert sorted(r["label"] for r in results) == ["base", "env"]
    assert all(r["status"] == "ok" for r in results), [(r["label"], r["status"], r["reason"]) for r in results]
    # the label's row is of its own environment's release; the worker read that version from the interpreter it
    # rebuilt, before running it (a row of another interpreter would be infra-failed, naming both versions)
    assert {r["label"]: r["engine_version"] for r in results} == {"base": version("onnxruntime"),
                                                                   "env": OTHER_ONNXRUNTIME}
    # the worker built the label's environment from the lock, in its host's cache, and it holds exactly the pins
    [built] = [d for d in (tmp_path / "worker-data" / "farm" / "envs").iterdir() if d.is_dir()]
    lock = envs.lock_of(staged / "bin" / "python")
    assert built.name == hashlib.sha256(envs.lock_bytes(lock)).hexdigest()
    assert envs.differences(lock, envs.listing(built / "bin" / "python")) == []
    assert "onnxruntime" in envs.listing(built / "bin" / "python")["packages"]
    # each row of the label names the lock it ran in; the run's record names each label interpreter's lock
    assert {r["label"]: r["ext"].get("label_env_lock") for r in results} == {"base": None, "env": built.name}
    store = open_store(env["DEVICELAB_DB"], create=False)
    try:
        assert store.has_artifact(built.name)  # the lock, stored by the client under its sha256
        run_id = json.loads(p.stdout)["run_id"]
        assert store.get_run(run_id).host["label_env_locks"] == {str(label_python): built.name}
    finally:
        store.close()


def test_a_worker_applies_the_plans_version_rule_on_its_own_side(tmp_path: Path) -> None:
    """engine_mismatch, no Dask: the version a device's facts name (an iPhone's runner app), a user's runner binary
    by its content (the same bytes at the worker's cached path), and a label environment's interpreter asked."""
    import dataclasses
    import platform

    from devicelab.engines.base import binary_version
    from devicelab.facts import DeviceFacts
    from devicelab.farm.worker import engine_mismatch

    facts = DeviceFacts("phone", "ios", "iPhone", "iOS 17", "arm64", (0, 1), (), extra={
        "engine_versions": {"dlbench": "app-1234"}})
    job = job_with(sys.executable, tmp_path)
    app = dataclasses.replace(job, config=dataclasses.replace(job.config, engine="dlbench", label="",
                                                              engine_version="app-1234"), options={})
    assert engine_mismatch([app], facts) is None
    old = dataclasses.replace(app, config=dataclasses.replace(app.config, engine_version="app-0000"))
    assert engine_mismatch([old], facts) == (
        f"dlbench is version app-1234 on worker farm-host's host {platform.node()}, the run planned "
        "app-0000: nothing of the task ran (install that version there, or give the label options.python: a label "
        "environment travels as its lock)")
    runner = tmp_path / "client" / "runner"
    runner.parent.mkdir()
    runner.write_bytes(b"#!/bin/sh\nexit 0\n")
    cached = tmp_path / "cache" / "runner"
    cached.parent.mkdir()
    cached.write_bytes(runner.read_bytes())
    planned = binary_version({"binary": str(runner)})
    assert planned
    user = dataclasses.replace(job, config=dataclasses.replace(job.config, engine="protocol", label="",
                                                               engine_version=planned), options={"binary": str(cached)})
    assert engine_mismatch([user], facts) is None
    cached.write_bytes(b"#!/bin/sh\nexit 1\n")
    assert "protocol is version sha256:" in (engine_mismatch([user], facts) or "")
    # a label environment: its interpreter is asked (this test's own, whose onnxruntime is the one imported here)
    from importlib.metadata import version

    label = dataclasses.replace(job, config=dataclasses.replace(job.config, engine_version=version("onnxruntime")))
    assert engine_mismatch([label], facts) is None
    other = dataclasses.replace(label, config=dataclasses.replace(label.config, engine_version="0.0.1"))
    assert engine_mismatch([label, other], facts) == (
        f"onnxruntime [env] is version {version('onnxruntime')} in its label environment {sys.executable}, the run "
        "planned 0.0.1: nothing of the task ran")


# --------------------------------------------------------------------------------------------------
# The client and a host worker: what each refuses before anything is measured (no label environment is built)


def test_a_host_worker_runs_only_the_engine_version_planned_and_an_unlistable_label_records_nothing(
        tmp_path: Path, data_dir: Path) -> None:
    """A `--host-device` worker runs its own host's engines: a config planned with another version (the client's)
    is refused by the worker in one line naming both, nothing measured. A label interpreter the client cannot list
    is one line before the run is recorded (no run left without rows or end status)."""
    import platform
    from importlib.metadata import version

    env = plain_env(tmp_path, data_dir)
    # The client's own onnxruntime, as importlib.metadata reports it, is "0.0.1": a dist-info first on its sys.path
    # (the module it would import is the same; only the version it plans with differs from the worker's host's).
    fake = tmp_path / "client-site" / "onnxruntime-0.0.1.dist-info"
    fake.mkdir(parents=True)
    (fake / "METADATA").write_text("Metadata-Version: 2.1\nName: onnxruntime\nVersion: 0.0.1\n")
    client_env = {**env, "PYTHONPATH": str(fake.parent)}
    # A label interpreter that runs (its engine's version is read) but cannot be listed (isolated mode fails).
    label_python = tmp_path / "label-env" / "bin" / "python"
    label_python.parent.mkdir(parents=True)
    label_python.write_text(f'#!/bin/sh\nif [ "$1" = "-I" ]; then echo "isolated mode is broken here" >&2; exit 3; '
                            f'fi\nexec "{sys.executable}" "$@"\n')
    label_python.chmod(0o755)

    def suite(name: str, engines: list[Any]) -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"name": name, "models": ["squeezenet1_1"], "threads": [1], "repeats": 1,
                                        "seed": 3, "devices": ["farm-host"], "engines": engines,
                                        "protocol": {**FAST_PROTOCOL, "accuracy_inputs": 0}}))
        return path

    with host_farm(env, tmp_path) as (scheduler, _agent):
        unlistable = subprocess.run(
            [DEVICELAB, "run", "--farm", scheduler.first_line, "--json", "--suite",
             str(suite("unlistable", [{"name": "onnxruntime", "label": "base"},
                                      {"name": "onnxruntime", "label": "env", "options": {"python": str(label_python)}}
                                      ]))], env=env, capture_output=True, text=True, timeout=600)
        runs_after = subprocess.run([DEVICELAB, "runs", "--json"], env=env, capture_output=True, text=True, timeout=120)
        other = subprocess.run([DEVICELAB, "run", "--farm", scheduler.first_line, "--json", "--suite",
                                str(suite("other-version", ["onnxruntime"]))], env=client_env, capture_output=True,
                               text=True, timeout=600)
    assert unlistable.returncode == 2, unlistable.stdout[-2000:] + unlistable.stderr[-3000:]
    [line] = unlistable.stderr.strip().splitlines()
    assert line == f"error: {label_python}: listing its packages failed: isolated mode is broken here", line
    assert json.loads(runs_after.stdout) == []  # nothing was recorded
    assert other.returncode == 1, other.stdout[-2000:] + other.stderr[-3000:]
    [row] = json.loads(other.stdout)["results"]
    assert row["status"] == "infra-failed" and row["engine_version"] == "0.0.1", row
    assert row["reason"] == (f"onnxruntime is version {version('onnxruntime')} on worker farm-host's host "
                             f"{platform.node()}, the run planned 0.0.1: nothing of the task ran (install that version "
                             "there, or give the label options.python: a label environment travels as its lock)"), row


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
    assert rows[0].config == job.config and rows[0].run_id == job.run_id  # the row of the task's own config
    assert not (tmp_path / "data" / "farm" / "envs" / shipment.envs[python].sha256).exists()  # nothing was built
