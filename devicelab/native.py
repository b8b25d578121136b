"""Building devicelab's native programs (dlprobe, dlbench) for a target, and the registry of what was built.

`devicelab build-native --target host|arm64|android-arm64` calls `build()` (`--target ios` prints `ios_steps()`
instead: the iOS runner app is built and signed with Xcode on a Mac, never here):

1. the ncnn library, from the ncnn source distribution on PyPI (pip download under faketime: the sdist's
   setup.py stamps today's date into its version, so the metadata only matches at the release date), built
   static with CMake into ``<cache>/ncnn-<version>-<target>/`` — keyed by version and target, so a machine
   builds it once (~7.5 min on 2 cores for the host);
2. dlprobe and dlbench from the sources shipped in the package (devicelab.native_src), cached by a hash of
   those sources, the ncnn version and the target;
3. the registry: ``<data>/native/registry.json`` maps each target to its artifacts (copied to
   ``<data>/native/<target>/``) with their sha256, which devices use to find and push them.

Also here, because the host device and the Android driver both need them: the dlprobe command line and
reading its JSON (`probe_argv`, `ProbeReport`, `peak_memory`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import platformdirs

from devicelab import paths
from devicelab.errors import DevicelabError, unknown_name_message
from devicelab.paths import sha256_file

TARGETS = ("host", "arm64", "android-arm64")
# Targets build-native cannot build on this machine: it prints the steps to run where they can be built.
PRINTED_TARGETS = ("ios",)
# The ncnn the pip engine uses when it is installed (so dlbench and the Python engine compare like for like);
# this one otherwise. Its sdist is shown to download under faketime at the date in its version.
DEFAULT_NCNN_VERSION = "1.0.20261020"
REGISTRY_VERSION = 1
# ncnn options for every target: the library only (the sdist has no tools/benchmark), CPU only, static.
NCNN_OPTIONS = ("-DNCNN_BUILD_TOOLS=OFF", "-DNCNN_BUILD_BENCHMARK=OFF", "-DNCNN_BUILD_EXAMPLES=OFF",
                "-DNCNN_BUILD_TESTS=OFF", "-DNCNN_PYTHON=OFF", "-DNCNN_VULKAN=OFF", "-DNCNN_SHARED_LIB=OFF",
                # as the pip wheel is built (its setup.py), so both run the same code
                "-DNCNN_DISABLE_RTTI=OFF", "-DNCNN_DISABLE_EXCEPTION=OFF")
ARTIFACTS = ("dlprobe", "dlbench")

Log = Callable[[str], None]


class NativeBuildError(DevicelabError):
    """A build step failed; the message names the step and the log to read."""


# --------------------------------------------------------------------------------------------------
# Where things live


def cache_dir() -> Path:
    """Build caches (ncnn per version and target, native builds): DEVICELAB_CACHE, else ~/.cache/devicelab."""
    override = os.environ.get("DEVICELAB_CACHE")
    return Path(override).expanduser() if override else Path(platformdirs.user_cache_dir("devicelab"))


def registry_path() -> Path:
    return paths.data_dir() / "native" / "registry.json"


def sources_dir() -> Path:
    """The native/ sources as installed (package data of devicelab.native_src)."""
    return Path(str(resources.files("devicelab.native_src")))


_SOURCE_SUFFIXES = (".c", ".cpp", ".hpp", ".h", ".cmake", ".txt")


def sources_sha256() -> str:
    """A hash of the native sources: a changed source means a new build (and a new dlbench version)."""
    root = sources_dir()
    h = hashlib.sha256()
    # native/llm (dlllm over llama.cpp) is built by native_llm with a hash of its own: a change there must not
    # rebuild dlbench.
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in _SOURCE_SUFFIXES
                       and p.relative_to(root).parts[0] != "llm"):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def ncnn_version() -> str:
    """DEVICELAB_NCNN_VERSION, else the installed pip ncnn's version, else DEFAULT_NCNN_VERSION."""
    override = os.environ.get("DEVICELAB_NCNN_VERSION")
    if override:
        return check_ncnn_version(override, "DEVICELAB_NCNN_VERSION")
    try:
        installed = importlib.metadata.version("ncnn")
    except importlib.metadata.PackageNotFoundError:
        return DEFAULT_NCNN_VERSION
    return installed if _NCNN_VERSION.fullmatch(installed) else DEFAULT_NCNN_VERSION


_NCNN_VERSION = re.compile(r"1\.0\.(\d{4})(\d{2})(\d{2})")


def check_ncnn_version(version: str, field: str) -> str:
    if not _NCNN_VERSION.fullmatch(version):
        raise DevicelabError(f"{field}: ncnn version {version!r} is not allowed; allowed: versions like "
                             f"{DEFAULT_NCNN_VERSION} (1.0.YYYYMMDD, the sdists on PyPI)")
    return version


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One build of a given thing at a time on this machine (parallel test sessions, two shells)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run(cmd: Sequence[str], log_path: Path, what: str, env: dict[str, str] | None = None,
         cwd: Path | None = None) -> None:
    with open(log_path, "a") as log:
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        p = subprocess.run(list(cmd), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    if p.returncode != 0:
        lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
        last = lines[-1].strip() if lines else ""
        raise NativeBuildError(f"{what} failed (exit {p.returncode}): {last[:300]} — full log: {log_path}")


# --------------------------------------------------------------------------------------------------
# Targets


@dataclass(frozen=True)
class Toolchain:
    target: str
    cmake_args: tuple[str, ...]  # toolchain and platform arguments, for ncnn and for devicelab's sources
    static: bool
    identity: str  # what else the build depends on (compiler, NDK revision), recorded and compared

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "cmake_args": list(self.cmake_args), "static": self.static,
                "identity": self.identity}


def _compiler_identity(compiler: str) -> str:
    try:
        out = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    except OSError:
        return f"{compiler} (not found)"
    return out.splitlines()[0].strip() if out else compiler


def toolchain(target: str) -> Toolchain:
    if target in PRINTED_TARGETS:
        raise DevicelabError(f"--target {target}: built with Xcode on a Mac; `devicelab build-native --target {target}` "
                             "prints the steps")
    if target not in TARGETS:
        raise DevicelabError("--target: " + unknown_name_message("target", target, TARGETS + PRINTED_TARGETS))
    if target == "host":
        return Toolchain(target, (), False, _compiler_identity(os.environ.get("CXX", "c++")))
    if target == "arm64":
        if shutil.which("aarch64-linux-gnu-g++") is None:
            raise DevicelabError("--target arm64 needs Debian's cross compiler: apt-get install gcc-aarch64-linux-gnu "
                                 "g++-aarch64-linux-gnu")
        file = sources_dir() / "cmake" / "aarch64-linux-gnu.cmake"
        return Toolchain(target, (f"-DCMAKE_TOOLCHAIN_FILE={file}",), True,
                         _compiler_identity("aarch64-linux-gnu-g++"))
    ndk = os.environ.get("ANDROID_NDK_HOME") or os.environ.get("ANDROID_NDK_ROOT")
    if not ndk:
        raise DevicelabError("--target android-arm64 needs ANDROID_NDK_HOME (the Android NDK's folder); it is not set")
    file = Path(ndk) / "build" / "cmake" / "android.toolchain.cmake"
    if not file.is_file():
        raise DevicelabError(f"ANDROID_NDK_HOME: {ndk} has no build/cmake/android.toolchain.cmake; is it an NDK?")
    revision = "unknown"
    props = Path(ndk) / "source.properties"
    if props.is_file():
        for line in props.read_text().splitlines():
            if line.startswith("Pkg.Revision"):
                revision = line.split("=", 1)[1].strip()
    # API 24 (Android 7): the oldest devicelab targets; static libc++ so nothing needs pushing beside the binary.
    return Toolchain(target, (f"-DCMAKE_TOOLCHAIN_FILE={file}", "-DANDROID_ABI=arm64-v8a",
                              "-DANDROID_PLATFORM=android-24", "-DANDROID_STL=c++_static"), True,
                     f"Android NDK {revision}")


def _cmake_generator() -> tuple[str, ...]:
    return ("-G", "Ninja") if shutil.which("ninja") else ()


def _jobs(jobs: int | None) -> int:
    return jobs or max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


# --------------------------------------------------------------------------------------------------
# ncnn


def ncnn_sdist(version: str, log: Log) -> Path:
    """The ncnn source distribution, downloaded once into <cache>/src."""
    match = _NCNN_VERSION.fullmatch(check_ncnn_version(version, "ncnn version"))
    assert match is not None
    dest = cache_dir() / "src"
    archive = dest / f"ncnn-{version}.tar.gz"
    if archive.is_file():
        return archive
    with _locked(dest / f".ncnn-{version}.lock"):
        if archive.is_file():
            return archive
        faketime = shutil.which("faketime")
        if faketime is None:
            raise DevicelabError("downloading the ncnn sources needs faketime (apt-get install faketime): the sdist's "
                                 "setup.py stamps today's date into its version")
        log(f"downloading the ncnn {version} source distribution (pip download under faketime)")
        when = f"{match.group(1)}-{match.group(2)}-{match.group(3)} 12:00:00"
        with tempfile.TemporaryDirectory(dir=dest, prefix=".download-") as tmp:
            log_path = dest / f"ncnn-{version}-download.log"
            log_path.write_text("")
            _run([faketime, when, sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                  f"ncnn=={version}", "-d", tmp], log_path, f"pip download ncnn=={version}")
            got = list(Path(tmp).glob("ncnn-*.tar.gz"))
            if not got:
                raise NativeBuildError(f"pip download ncnn=={version} left no .tar.gz — full log: {log_path}")
            os.replace(got[0], archive)
    return archive


def ncnn_prefix(version: str, target: str) -> Path:
    return cache_dir() / f"ncnn-{version}-{target}"


def build_ncnn(version: str, chain: Toolchain, log: Log, jobs: int | None = None) -> Path:
    """libncnn.a + headers + ncnnConfig.cmake for one target, under <cache>/ncnn-<version>-<target>/install."""
    root = ncnn_prefix(version, chain.target)
    install = root / "install"
    stamp = root / "devicelab-build.json"
    wanted = {"version": version, "options": list(NCNN_OPTIONS), "toolchain": chain.identity}
    with _locked(cache_dir() / f".ncnn-{version}-{chain.target}.lock"):
        if stamp.is_file() and (install / "lib" / "cmake" / "ncnn" / "ncnnConfig.cmake").is_file():
            recorded = json.loads(stamp.read_text())
            if all(recorded.get(k) == v for k, v in wanted.items()):
                return install
            log(f"rebuilding ncnn {version} for {chain.target}: the cached build used other options or compiler")
        archive = ncnn_sdist(version, log)
        if root.exists():
            shutil.rmtree(root)
        src, build = root / "src", root / "build"
        src.mkdir(parents=True)
        with tarfile.open(archive) as tar:
            top = tar.getnames()[0].split("/")[0]
            tar.extractall(root / "unpack", filter="data")
        os.replace(root / "unpack" / top, src)
        shutil.rmtree(root / "unpack", ignore_errors=True)
        log_path = root / "build.log"
        log(f"building ncnn {version} for {chain.target} (once per machine; ~8 min for the host on 2 cores): {log_path}")
        start = time.monotonic()
        _run(["cmake", "-S", str(src), "-B", str(build), *_cmake_generator(), "-DCMAKE_BUILD_TYPE=Release",
              f"-DCMAKE_INSTALL_PREFIX={install}", *chain.cmake_args, *NCNN_OPTIONS], log_path,
             f"configuring ncnn for {chain.target}")
        _run(["cmake", "--build", str(build), "--target", "install", "--parallel", str(_jobs(jobs))], log_path,
             f"building ncnn for {chain.target}")
        seconds = round(time.monotonic() - start, 1)
        # The source and objects are only needed to build the library: keep the cache small.
        shutil.rmtree(build, ignore_errors=True)
        shutil.rmtree(src, ignore_errors=True)
        stamp.write_text(json.dumps({**wanted, "build_seconds": seconds, "built_at": _now()}, indent=1))
        log(f"ncnn {version} for {chain.target} built in {seconds:.0f} s")
    return install


def _now() -> str:
    from devicelab.result import utc_now

    return utc_now()


# --------------------------------------------------------------------------------------------------
# devicelab's own programs and the registry


@dataclass(frozen=True)
class Artifact:
    name: str
    path: Path
    sha256: str
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "sha256": self.sha256, "bytes": self.bytes}


@dataclass(frozen=True)
class BuildRecord:
    """One target's registry entry."""

    target: str
    artifacts: dict[str, Artifact]
    ncnn_version: str
    sources_sha256: str
    toolchain: dict[str, Any]
    built_at: str
    backends: tuple[str, ...] = ("ncnn",)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def dlbench_version(self) -> str:
        return f"dlbench-{self.sources_sha256[:12]}+ncnn-{self.ncnn_version}"

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "artifacts": {k: a.to_dict() for k, a in self.artifacts.items()},
                "ncnn_version": self.ncnn_version, "sources_sha256": self.sources_sha256,
                "dlbench_version": self.dlbench_version, "toolchain": self.toolchain, "built_at": self.built_at,
                "backends": list(self.backends), "seconds": self.seconds}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BuildRecord:
        arts = {k: Artifact(k, Path(a["path"]), a["sha256"], int(a["bytes"])) for k, a in d["artifacts"].items()}
        return cls(d["target"], arts, d["ncnn_version"], d["sources_sha256"], d.get("toolchain", {}),
                   d.get("built_at", ""), tuple(d.get("backends", ("ncnn",))), d.get("seconds", {}))


OPTIONAL_BACKENDS = ("openvino",)


def openvino_cmake_dir() -> tuple[Path, str]:
    """The openvino wheel's CMake config folder and version: it ships headers, libraries and OpenVINOConfig.cmake."""
    import importlib.util

    spec = importlib.util.find_spec("openvino")
    if spec is None or not spec.submodule_search_locations:
        raise DevicelabError("--with openvino needs the openvino wheel in this environment (pip install openvino)")
    folder = Path(list(spec.submodule_search_locations)[0]) / "cmake"
    if not (folder / "OpenVINOConfig.cmake").is_file():
        raise DevicelabError(f"--with openvino: {folder} has no OpenVINOConfig.cmake (a wheel without the C++ SDK?)")
    return folder, importlib.metadata.version("openvino")


def build(target: str, *, ncnn: str | None = None, jobs: int | None = None, log: Log | None = None,
          extra_backends: Sequence[str] = ()) -> BuildRecord:
    """Build (or reuse from the cache) everything for `target` and register it in the data folder.

    `extra_backends`: dlbench backends besides ncnn; "openvino" links the openvino wheel's libraries
    (host only: the binary then needs that wheel installed to start).
    """
    say = log or (lambda _msg: None)
    chain = toolchain(target)
    extra_args: list[str] = []
    suffix = ""
    for name in dict.fromkeys(extra_backends):
        if name not in OPTIONAL_BACKENDS:
            raise DevicelabError("--with: " + unknown_name_message("backend", name, OPTIONAL_BACKENDS))
        if target != "host":
            raise DevicelabError(f"--with {name}: only for --target host (the wheel's libraries are host libraries)")
        folder, ov_version = openvino_cmake_dir()
        extra_args += ["-DDLBENCH_WITH_OPENVINO=ON", f"-DOpenVINO_DIR={folder}"]
        suffix += f"-openvino-{ov_version}"
    if shutil.which("cmake") is None:
        raise DevicelabError("build-native needs cmake (apt-get install cmake ninja-build)")
    version = check_ncnn_version(ncnn, "--ncnn-version") if ncnn else ncnn_version()
    seconds: dict[str, float] = {}
    t0 = time.monotonic()
    prefix = build_ncnn(version, chain, say, jobs)
    seconds["ncnn"] = round(time.monotonic() - t0, 1)
    digest = sources_sha256()
    out = cache_dir() / f"native-{digest[:16]}-{target}-ncnn-{version}{suffix}"
    t0 = time.monotonic()
    with _locked(cache_dir() / f".native-{target}.lock"):
        if not all((out / "bin" / name).is_file() for name in ARTIFACTS):
            if out.exists():
                shutil.rmtree(out)
            build_dir = out / "build"
            log_path = out / "build.log"
            out.mkdir(parents=True)
            say(f"building dlprobe and dlbench for {target}: {log_path}")
            _run(["cmake", "-S", str(sources_dir()), "-B", str(build_dir), *_cmake_generator(),
                  "-DCMAKE_BUILD_TYPE=Release", f"-DCMAKE_INSTALL_PREFIX={out}", *chain.cmake_args,
                  f"-Dncnn_DIR={prefix / 'lib' / 'cmake' / 'ncnn'}", f"-DDEVICELAB_STATIC={'ON' if chain.static else 'OFF'}",
                  f"-DDLBENCH_VERSION=dlbench-{digest[:12]}+ncnn-{version}", *extra_args], log_path,
                 f"configuring dlprobe/dlbench for {target}")
            _run(["cmake", "--build", str(build_dir), "--target", "install", "--parallel", str(_jobs(jobs))], log_path,
                 f"building dlprobe/dlbench for {target}")
            shutil.rmtree(build_dir, ignore_errors=True)
            # Builds of older sources for this target are never used again (registries hold copies);
            # every build of a target takes this lock, so none is in progress.
            for old in cache_dir().glob(f"native-*-{target}-ncnn-*"):
                if not old.name.startswith(f"native-{digest[:16]}-"):
                    shutil.rmtree(old, ignore_errors=True)
    seconds["native"] = round(time.monotonic() - t0, 1)
    backends = ("ncnn", *dict.fromkeys(extra_backends))
    return register(target, out / "bin", version, digest, chain, seconds, backends)


def register(target: str, bin_dir: Path, version: str, digest: str, chain: Toolchain,
             seconds: dict[str, float], backends: tuple[str, ...] = ("ncnn",)) -> BuildRecord:
    """Copy the artifacts into the data folder and record them (path, sha256) for the devices to use."""
    dest = paths.data_dir() / "native" / target
    dest.mkdir(parents=True, exist_ok=True)
    artifacts: dict[str, Artifact] = {}
    for name in ARTIFACTS:
        src = bin_dir / name
        tmp = dest / f".{name}.tmp"
        shutil.copy2(src, tmp)
        os.replace(tmp, dest / name)  # atomic: a runner starting now sees the old or the new binary, never half
        artifacts[name] = Artifact(name, dest / name, sha256_file(dest / name), (dest / name).stat().st_size)
    with _locked(registry_path().with_suffix(".lock")):
        data = read_registry()
        # Programs other builds added to this target (dlllm and llama-bench, native_llm) stay registered.
        previous = data["targets"].get(target) or {}
        for name, a in (previous.get("artifacts") or {}).items():
            if name not in artifacts and Path(a["path"]).is_file():
                artifacts[name] = Artifact(name, Path(a["path"]), a["sha256"], int(a["bytes"]))
        record = BuildRecord(target, artifacts, version, digest, chain.to_dict(), _now(), backends, seconds)
        data["targets"][target] = record.to_dict()
        tmp_path = registry_path().with_suffix(".tmp")
        tmp_path.write_text(json.dumps(data, indent=1))
        os.replace(tmp_path, registry_path())
    return record


def read_registry() -> dict[str, Any]:
    try:
        data = json.loads(registry_path().read_text())
    except (FileNotFoundError, ValueError):
        return {"version": REGISTRY_VERSION, "targets": {}}
    if not isinstance(data, dict) or data.get("version") != REGISTRY_VERSION:
        return {"version": REGISTRY_VERSION, "targets": {}}
    data.setdefault("targets", {})
    return data


# Builds that came with a farm task (devicelab.farm.artifacts): the client's programs, fetched into this host's
# cache, used in place of this data folder's registry while the task runs, so a farm phone runs what was planned.
_shipped: dict[str, BuildRecord] = {}


@contextlib.contextmanager
def shipped_builds(records: dict[str, BuildRecord]) -> Iterator[None]:
    """`registered` answers with `records` (by target) first, for the duration."""
    saved = dict(_shipped)
    _shipped.update(records)
    try:
        yield
    finally:
        _shipped.clear()
        _shipped.update(saved)


def registered(target: str) -> BuildRecord | None:
    """The target's registry entry, if it was built into this data folder and its files are still there (a build
    shipped with a farm task first)."""
    if target in _shipped:
        return _shipped[target]
    entry = read_registry()["targets"].get(target)
    if not entry:
        return None
    try:
        record = BuildRecord.from_dict(entry)
    except (KeyError, TypeError, ValueError):
        return None
    if not all(a.path.is_file() for a in record.artifacts.values()):
        return None
    return record


# --------------------------------------------------------------------------------------------------
# The iOS runner app: steps for a Mac (nothing here can build or sign it)

IOS_DEPLOYMENT_TARGET = "16.0"  # MLComputeUnitsCPUAndNeuralEngine and the iOS 16 DVT paths devicelab drives
IOS_APP = "DevicelabRunner.app"


@dataclass(frozen=True)
class Step:
    title: str
    commands: tuple[str, ...]  # shell lines (or a devices.yaml fragment) to run or paste, in order


def ios_steps(ncnn: str | None = None) -> list[Step]:
    """How to build and sign the iOS runner app (runners/ios, CMake's Xcode generator) and name it in devices.yaml.

    Printed by `devicelab build-native --target ios`; the project lives in a checkout of the repository (the pip
    package does not carry it), so every path is relative to that checkout.
    """
    version = check_ncnn_version(ncnn, "--ncnn-version") if ncnn else ncnn_version()
    match = _NCNN_VERSION.fullmatch(version)
    assert match is not None
    when = f"{match.group(1)}-{match.group(2)}-{match.group(3)} 12:00:00"
    ios = (f"-DCMAKE_SYSTEM_NAME=iOS -DCMAKE_OSX_ARCHITECTURES=arm64 "
           f"-DCMAKE_OSX_DEPLOYMENT_TARGET={IOS_DEPLOYMENT_TARGET}")
    return [
        Step("On a Mac with Xcode 15 or newer, CMake 3.21 or newer and an Apple developer team (the app cannot be "
             "built or signed on Linux); in a checkout of devicelab's repository:",
             ("git clone <devicelab repository URL> devicelab && cd devicelab",)),
        Step(f"Optional, for the ncnn backend (Core ML needs nothing): ncnn {version} for iOS, static, with ncnn's own "
             "OpenMP stand-in; for its Vulkan GPU path add -DNCNN_VULKAN=ON -DVulkan_LIBRARY=<MoltenVK.xcframework>/"
             "ios-arm64/libMoltenVK.a (MoltenVK from the Vulkan SDK):",
             (f"faketime '{when}' pip download --no-deps --no-binary :all: ncnn=={version} && tar xzf ncnn-{version}.tar.gz",
              f"cmake -S ncnn-{version} -B build-ncnn-ios {ios} -DCMAKE_BUILD_TYPE=Release "
              "-DCMAKE_INSTALL_PREFIX=$PWD/ncnn-ios " + " ".join(o for o in NCNN_OPTIONS if "VULKAN" not in o)
              + " -DNCNN_SIMPLEOMP=ON",
              "cmake --build build-ncnn-ios --target install --parallel")),
        Step("Generate the Xcode project (your team's ID from developer.apple.com → Membership; add "
             "-DDLBENCH_WITH_NCNN=ON -Dncnn_DIR=$PWD/ncnn-ios/lib/cmake/ncnn for ncnn; -DDLBENCH_WITH_MNN=ON "
             "-DMNN_ROOT=<the folder holding MNN.framework> for MNN, built with MNN's package_scripts/ios/buildiOS.sh; "
             "-DRUNNER_BUNDLE_ID=... when the default bundle ID is taken):",
             (f"cmake -S runners/ios -B build-ios -G Xcode {ios} -DDEVELOPMENT_TEAM=<TEAM_ID>",)),
        Step("Build and sign (automatic signing registers the phone and the app's capabilities with the team; the "
             "same project opens in Xcode: build-ios/DevicelabRunner.xcodeproj). iOS 16+ needs Developer Mode on the "
             "phone, and a first launch may ask you to trust the developer in Settings → General → VPN & Device "
             "Management:",
             ("cmake --build build-ios --config Release -- -allowProvisioningUpdates",)),
        Step(f"The signed app lands in build-ios/Release-iphoneos/{IOS_APP}; name it in devices.yaml (devicelab "
             "installs it on the phone when its hash changed; its engine version is that hash):",
             ("devices:", "  - id: iphone", "    kind: ios",
              "    udid: <the phone's UDID, as `devicelab devices` lists it>",
              f"    runner_app: <path of the checkout>/build-ios/Release-iphoneos/{IOS_APP}")),
    ]


def artifact(target: str, name: str) -> Path | None:
    record = registered(target)
    return record.artifacts[name].path if record and name in record.artifacts else None


# --------------------------------------------------------------------------------------------------
# dlprobe: the command line and its report (shared by the host device and the Android driver)

PROBE_INTERVAL_MS = 10  # memory and frequencies; see benchmarks/probe_overhead for what it costs
PROBE_SLOW_INTERVAL_MS = 500  # thermal zones and battery


def probe_argv(dlprobe: str, command: Sequence[str], cpus: Sequence[int], out: str,
               interval_ms: int = PROBE_INTERVAL_MS, slow_interval_ms: int = PROBE_SLOW_INTERVAL_MS) -> list[str]:
    """`dlprobe [--cpus L] --interval-ms N --slow-interval-ms M --out FILE -- COMMAND...`.

    Paths are strings, as the target sees them: the Android driver passes the pushed (remote) dlprobe,
    runner and output paths, the host its local ones. An empty `cpus` leaves the affinity alone.
    """
    argv = [dlprobe]
    if cpus:
        argv += ["--cpus", ",".join(str(int(c)) for c in cpus)]
    return argv + ["--interval-ms", str(int(interval_ms)), "--slow-interval-ms", str(int(slow_interval_ms)),
                   "--out", out, "--", *command]


@dataclass(frozen=True)
class ProbeReport:
    """What dlprobe measured around one runner process (its JSON document, parsed)."""

    ru_maxrss_bytes: int | None
    vmhwm_bytes: int | None  # the last VmHWM dlprobe read (it can miss growth in the last interval)
    exit_code: int | None
    exit_signal: int | None
    probe_cpu_s_per_s: float | None
    probe_shares_cpus: bool
    raw: dict[str, Any]

    @classmethod
    def parse(cls, doc: dict[str, Any]) -> ProbeReport:
        peak = doc.get("peak") or {}
        exit_ = doc.get("exit") or {}
        probe = doc.get("probe") or {}
        return cls(peak.get("ru_maxrss_bytes"), peak.get("vmhwm_bytes"), exit_.get("code"), exit_.get("signal") or None,
                   probe.get("cpu_s_per_s"), bool(doc.get("probe_shares_cpus")), doc)

    @classmethod
    def read(cls, path: Path) -> ProbeReport | None:
        try:
            return cls.parse(json.loads(path.read_text()))
        except (OSError, ValueError, AttributeError):
            return None

    def summary(self) -> dict[str, Any]:
        """Compact figures for a Result (the full series stay out of the database)."""
        doc = self.raw
        samples = doc.get("samples") or {}
        slow = doc.get("slow_samples") or {}

        def span(values: list[Any]) -> list[float] | None:
            got = [v for v in values if v is not None]
            return [min(got), max(got)] if got else None

        return {
            "interval_ms": doc.get("interval_ms"), "cpus": doc.get("cpus"), "probe_cpus": doc.get("probe_cpus"),
            "probe_shares_cpus": self.probe_shares_cpus, "wall_s": doc.get("wall_s"),
            "probe_cpu_s_per_s": self.probe_cpu_s_per_s,
            "samples": len(samples.get("t_s") or []), "ru_maxrss_bytes": self.ru_maxrss_bytes,
            "vmhwm_bytes": self.vmhwm_bytes, "vmrss_max_bytes": (doc.get("peak") or {}).get("vmrss_max_bytes"),
            "rusage": doc.get("rusage"), "exit": doc.get("exit"),
            "freq_khz_range": {cpu: span(v) for cpu, v in (samples.get("freq_khz") or {}).items()},
            "temp_c_range": {zone: span(v) for zone, v in (slow.get("temp_c") or {}).items()},
            "battery": (slow.get("battery") or {}).get("supply") if slow.get("battery") else None,
        }


# Two honest measurements of one peak disagree by a few pages; more than this deserves a note.
PEAK_AGREEMENT = 0.05


def peak_memory(report: ProbeReport | None, runner_peak: int | None, runner_method: str | None
                ) -> tuple[int | None, str, str | None]:
    """(peak bytes, memory_method, note or None) from dlprobe's wait4 ru_maxrss and the runner's own peak.

    ru_maxrss is the kernel's high-water mark over the runner's whole life (under the small dlprobe, the
    launcher's own mark carried in at exec is negligible); the runner's VmHWM is read by the runner at stop.
    Both come from the same counter: they must agree, and the method says so, or says which was used and why.
    """
    runner_method = runner_method or "VmHWM"
    maxrss = report.ru_maxrss_bytes if report else None
    if not maxrss:
        return runner_peak, f"{runner_method} of the runner process at stop", None
    if not runner_peak:
        return maxrss, "wait4 ru_maxrss of the runner under dlprobe (the runner reported no peak)", None
    diff = (maxrss - runner_peak) / runner_peak
    if abs(diff) <= PEAK_AGREEMENT:
        return maxrss, (f"wait4 ru_maxrss of the runner under dlprobe, cross-checked with the runner's {runner_method} "
                        f"at stop ({runner_peak} bytes, {diff * 100:+.1f} %)"), None
    return maxrss, (f"wait4 ru_maxrss of the runner under dlprobe; the runner's {runner_method} at stop differs "
                    f"({runner_peak} bytes, {diff * 100:+.1f} %)"), (
        f"peak memory: dlprobe's ru_maxrss {maxrss} and the runner's {runner_method} {runner_peak} differ by "
        f"{diff * 100:+.1f} % (memory grew after stop, or before the runner's own count began)")
