"""Shared fixtures. Integration tests run the real CLI in subprocesses against real ONNX Runtime; every
test gets its own database, while the zoo cache is shared per session (building it is deterministic)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Test modules share helpers.py. Only this folder goes on sys.path, never the repository root: the tests
# must import the installed devicelab (what `pip install .` ships), not the source tree.
sys.path.insert(0, str(Path(__file__).parent))


def _free_port() -> int:
    import socket

    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port != 5037 and not 5555 <= port <= 5585:  # adb's default server port and its emulator range
            return port


# No test may talk to (or start) the machine's own adb server on 5037: every process of this session, the
# devicelab CLI's included, reads this port; whatever server a test started there is killed at the end.
os.environ["ANDROID_ADB_SERVER_PORT"] = str(_free_port())


def _empty_usbmuxd() -> tuple[str, Any]:
    """An emulated usbmuxd with no phone attached (it lives as long as this process); without the emulated
    iPhone's dependencies, a loopback port nothing listens on."""
    try:
        from devicelab.testing.emulated_ios import EmulatedUsbmuxd
    except ImportError:
        return f"127.0.0.1:{_free_port()}", None
    mux = EmulatedUsbmuxd()
    return mux.address, mux


# Likewise no test may reach the machine's own usbmuxd (and a real iPhone on it): every process of this session —
# `devicelab devices`, the sweep's discovery — lists iPhones from this empty one unless the test names its own.
os.environ["USBMUXD_SOCKET_ADDRESS"], _EMPTY_USBMUXD = _empty_usbmuxd()


@pytest.fixture
def empty_usbmuxd() -> Any:
    """The session's empty emulated usbmuxd (None without the emulated iPhone's dependencies)."""
    if _EMPTY_USBMUXD is None:  # the test extra always brings them: a missing one is a broken set-up, not a skip
        pytest.fail("the emulated iPhone needs the test extra's dependencies (pip install '.[test]')", pytrace=False)
    return _EMPTY_USBMUXD


@pytest.fixture(scope="session", autouse=True)
def _private_adb_server() -> Any:
    yield
    try:
        import adbutils

        adbutils.AdbClient(port=int(os.environ["ANDROID_ADB_SERVER_PORT"])).server_kill()
    except Exception:  # noqa: BLE001 - nothing was started there, or it is gone already
        pass


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("devicelab-data")


# Native builds (ncnn per version and target) are cached for the machine, not per test: the tests change
# HOME, so they pin the cache to the one the session started with.
BUILD_CACHE = os.environ.get("DEVICELAB_CACHE") or str(Path.home() / ".cache" / "devicelab")


@pytest.fixture
def env(data_dir: Path, tmp_path: Path) -> dict[str, str]:
    e = dict(os.environ)
    e.update({"DEVICELAB_DATA": str(data_dir), "DEVICELAB_DB": str(tmp_path / "db.sqlite"),
              "HOME": str(tmp_path / "home"), "COLUMNS": "200", "DEVICELAB_CACHE": BUILD_CACHE})
    e.pop("DEVICELAB_DEVICES", None)
    (tmp_path / "home").mkdir(exist_ok=True)  # adb keeps its keys there
    return e




def _build_native(target: str, data_dir: Path) -> dict[str, Any]:
    """`devicelab build-native --target TARGET` into the session's data folder, as a user runs it. The first
    run on a machine builds ncnn (minutes, cached under the build cache); later ones reuse it."""
    from helpers import DEVICELAB

    env = dict(os.environ, DEVICELAB_DATA=str(data_dir), DEVICELAB_CACHE=BUILD_CACHE)
    p = subprocess.run([DEVICELAB, "build-native", "--target", target, "--json"], env=env, capture_output=True,
                       text=True, timeout=3600)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout)


@pytest.fixture(scope="session")
def native_host(data_dir: Path) -> dict[str, Any]:
    return _build_native("host", data_dir)


@pytest.fixture(scope="session")
def native_arm64(data_dir: Path) -> dict[str, Any]:
    if shutil.which("aarch64-linux-gnu-g++") is None or shutil.which("qemu-aarch64-static") is None:
        pytest.skip("needs Debian's g++-aarch64-linux-gnu and qemu-user-static (scripts/test installs them as root)")
    return _build_native("arm64", data_dir)


def _build_llm(target: str, data_dir: Path) -> dict[str, Any]:
    """`devicelab build-native --target TARGET --llm`: llama.cpp from the llama-cpp-python sdist, cached under the build
    cache by version, flags and compiler (the first build on a machine takes minutes; later ones only relink)."""
    from helpers import DEVICELAB

    env = dict(os.environ, DEVICELAB_DATA=str(data_dir), DEVICELAB_CACHE=BUILD_CACHE)
    p = subprocess.run([DEVICELAB, "build-native", "--target", target, "--llm", "--json"], env=env, capture_output=True,
                       text=True, timeout=3 * 3600)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout)


@pytest.fixture(scope="session")
def llm_host(data_dir: Path) -> dict[str, Any]:
    return _build_llm("host", data_dir)


@pytest.fixture(scope="session")
def llm_arm64(data_dir: Path, llm_host: dict[str, Any]) -> dict[str, Any]:
    if shutil.which("aarch64-linux-gnu-g++") is None or shutil.which("qemu-aarch64-static") is None:
        pytest.skip("needs Debian's g++-aarch64-linux-gnu and qemu-user-static (scripts/test installs them as root)")
    return {**_build_llm("arm64", data_dir), "host_dlllm": llm_host["artifacts"]["dlllm"]["path"]}


# ---- the Android test modules' fixtures (an emulated phone on a private adb server)


@pytest.fixture(scope="module")
def runner_arm64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The README's example runner (runner protocol v1 in C), built static for arm64 as for a phone."""
    from android_env import build_example_runner

    return build_example_runner(tmp_path_factory.mktemp("arm64") / "protocol_runner")


@pytest.fixture(scope="module")
def server() -> Iterator[Any]:
    from android_env import AdbServer, adb_binaries

    # Debian's adb when installed (what PATH gives adbutils, as on a user's machine), else adbutils' own.
    with AdbServer(dict(adb_binaries()).get(next(label for label, _ in adb_binaries()))) as s:
        yield s


@pytest.fixture
def phone(server: Any, tmp_path: Path) -> Iterator[Any]:
    from android_env import EmulatedPhone

    with EmulatedPhone(server, tmp_path / "phone") as p:
        yield p


# ---- a real PostgreSQL server for the store tests (tests/pg_server.py)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """One PostgreSQL cluster for the session, started on first use. Missing binaries fail the test in one line
    (CI always has them: ./scripts/test installs Debian's postgresql as root) unless DEVICELAB_SKIP_PG=1 skips it."""
    from pg_server import SKIP_ENV, PgServer, missing_reason

    reason = missing_reason()
    if reason:
        if os.environ.get(SKIP_ENV) == "1":
            pytest.skip(f"{SKIP_ENV}=1: {reason}")
        pytest.fail(reason, pytrace=False)
    server = PgServer()
    try:
        server.start()
        # libpq in this process and in every child (the devicelab CLI) finds the password here, never in a URL.
        os.environ["PGPASSFILE"] = str(server.passfile)
        yield server
    finally:
        os.environ.pop("PGPASSFILE", None)
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """The same store test on both backends: a SQLite file, and a database of its own on the session's PostgreSQL."""
    from helpers import StoreTarget

    if request.param == "sqlite":
        return StoreTarget("sqlite", str(tmp_path / "db.sqlite"), str(tmp_path / "missing.sqlite"))
    server = request.getfixturevalue("pg_server")
    return StoreTarget("postgresql", server.url(server.create_database()), server.url(server.create_database()))

# ---- the iOS test module's fixtures (an emulated iPhone on its own emulated usbmuxd)


@pytest.fixture(scope="module")
def ios_runner_app(native_host: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The runner .app the tests install: its executable runs the host build of dlbench (tests/ios_env.py)."""
    from ios_env import build_runner_app

    return build_runner_app(tmp_path_factory.mktemp("ios-app"), Path(native_host["artifacts"]["dlbench"]["path"]))


@pytest.fixture
def iphone(tmp_path: Path) -> Iterator[Any]:
    from ios_env import start_iphone

    phone = start_iphone(tmp_path)
    yield phone
    phone.close()
