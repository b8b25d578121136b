"""The emulated iPhone's apps: installed bundles with their data containers, and "app processes" — the bundle's
CFBundleExecutable run as a host subprocess, as DVT ProcessControl would launch it on a phone."""

from __future__ import annotations

import os
import plistlib
import shutil
import signal
import stat
import subprocess
import threading
import time
import uuid
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

# LaunchError is the DVT server's: it answers one with FrontBoard's NSError, as processcontrol does
from devicelab.testing.emulated_ios.dvt import LaunchError as LaunchError
from devicelab.testing.emulated_ios.dvt import phys_footprint_bytes, resident_bytes

CONTAINER_FOLDERS = ("Documents", "Library/Caches", "Library/Preferences", "tmp")
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class InstallError(Exception):
    """installd rejected a package: `code` is the Error key installation_proxy sends, the message its
    ErrorDescription."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description


@dataclass
class InstalledApp:
    bundle_id: str
    executable: str
    bundle_path: Path  # <root>/Bundles/<UUID>/<Name>.app, as /private/var/containers/Bundle/Application/<UUID>
    container: Path  # <root>/Containers/<UUID>, as /private/var/mobile/Containers/Data/Application/<UUID>
    info: dict[str, Any]
    # signed with get-task-allow (a development build): house_arrest vends the whole container only to these
    development_signed: bool = True

    @property
    def file_sharing(self) -> bool:
        """UIFileSharingEnabled: house_arrest vends Documents only for apps that declare it."""
        return bool(self.info.get("UIFileSharingEnabled", False))

    def lookup_entry(self) -> dict[str, Any]:
        """What installation_proxy's Lookup/Browse report: the Info.plist keys plus installd's own."""
        entry = dict(self.info)
        entry.update({
            "ApplicationType": "User",
            "Path": f"/private/var/containers/Bundle/Application/{self.bundle_path.parent.name}/"
                    f"{self.bundle_path.name}",
            "Container": f"/private/var/mobile/Containers/Data/Application/{self.container.name}",
            "EnvironmentVariables": {"HOME": f"/private/var/mobile/Containers/Data/Application/"
                                             f"{self.container.name}"},
            # what get_apps(calculate_sizes=True) asks for: the bundle's and the container's bytes
            "StaticDiskUsage": _tree_bytes(self.bundle_path),
            "DynamicDiskUsage": _tree_bytes(self.container),
            "SignerIdentity": "Apple Development" if self.development_signed else "Apple Distribution",
            "Entitlements": {"get-task-allow": self.development_signed, "application-identifier": self.bundle_id},
        })
        return entry


@dataclass
class AppProcess:
    pid: int
    bundle_id: str
    name: str
    popen: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    # last CPU sample per consumer ("sysmontap", "energy"): (wall seconds, cpu seconds)
    cpu_marks: dict[str, tuple[float, float]] = field(default_factory=dict)


def _tree_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def _safe_member(name: str) -> PurePosixPath | None:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        return None
    return path


class Apps:
    """Installed apps and their processes, all under the phone's root folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._apps: dict[str, InstalledApp] = {}
        self._processes: dict[int, AppProcess] = {}
        self._log_counter = 0

    # ------------------------------------------------------------------ install

    def get(self, bundle_id: str) -> InstalledApp | None:
        with self._lock:
            return self._apps.get(bundle_id)

    def all(self) -> list[InstalledApp]:
        with self._lock:
            return sorted(self._apps.values(), key=lambda app: app.bundle_id)

    def install_package(self, package: Path) -> InstalledApp:
        """Install what the client staged: an .ipa (zip with Payload/<Name>.app/) — pymobiledevice3 zips an .app
        folder into one before uploading — or an .app folder itself."""
        if package.is_dir():
            return self.install_bundle(package if package.suffix == ".app" else self._find_app(package))
        staging = self.root / "installd" / uuid.uuid4().hex
        try:
            try:
                with zipfile.ZipFile(package) as archive:
                    for member in archive.infolist():
                        relative = _safe_member(member.filename)
                        if relative is None:
                            raise InstallError("PackageExtractionFailed",
                                               f"Unsafe path in package: {member.filename}")
                        archive.extract(member, staging)
                        # zip keeps Unix permissions in the high 16 bits; extract() drops them, and the
                        # executable must stay executable
                        mode = (member.external_attr >> 16) & 0o777
                        if mode and not member.is_dir():
                            (staging / relative).chmod(mode)
            except zipfile.BadZipFile as e:
                raise InstallError("PackageExtractionFailed", f"Failed to extract package: {e}") from e
            return self.install_bundle(self._find_app(staging / "Payload"))
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    @staticmethod
    def _find_app(folder: Path) -> Path:
        apps = sorted(p for p in folder.glob("*.app") if p.is_dir()) if folder.is_dir() else []
        if not apps:
            raise InstallError("PackageInspectionFailed", "Failed to find an .app bundle in the package's Payload")
        return apps[0]

    def install_bundle(self, app_dir: Path) -> InstalledApp:
        info_path = app_dir / "Info.plist"
        try:
            info = plistlib.loads(info_path.read_bytes())
        except (OSError, plistlib.InvalidFileException, ValueError) as e:
            raise InstallError("PackageInspectionFailed", f"Failed to load Info.plist from bundle at path "
                                                          f"{app_dir.name}: {e}") from e
        if not isinstance(info, dict):
            raise InstallError("PackageInspectionFailed", f"Info.plist of {app_dir.name} is not a dictionary")
        for key in ("CFBundleIdentifier", "CFBundleExecutable"):
            if not isinstance(info.get(key), str) or not info[key]:
                raise InstallError("PackageInspectionFailed",
                                   f"Bundle at path {app_dir.name} has no valid {key} in its Info.plist")
        bundle_id = str(info["CFBundleIdentifier"])
        executable = str(info["CFBundleExecutable"])
        if _safe_member(executable) is None or not (app_dir / executable).is_file():
            raise InstallError("PackageInspectionFailed",
                               f"Bundle at path {app_dir.name} is missing its executable {executable}")
        with self._lock:
            previous = self._apps.get(bundle_id)
        # an upgrade replaces the bundle and keeps the data container, as installd does
        container = previous.container if previous else self.root / "Containers" / str(uuid.uuid4()).upper()
        bundle_home = self.root / "Bundles" / str(uuid.uuid4()).upper()
        bundle_home.mkdir(parents=True)
        bundle_path = bundle_home / app_dir.name
        shutil.copytree(app_dir, bundle_path, symlinks=False)
        exe = bundle_path / executable
        exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
        for folder in CONTAINER_FOLDERS:
            (container / folder).mkdir(parents=True, exist_ok=True)
        app = InstalledApp(bundle_id, executable, bundle_path, container, info)
        with self._lock:
            self._apps[bundle_id] = app
        if previous is not None:
            shutil.rmtree(previous.bundle_path.parent, ignore_errors=True)
        return app

    def uninstall(self, bundle_id: str) -> bool:
        with self._lock:
            app = self._apps.pop(bundle_id, None)
        if app is None:
            return False
        for process in self._running(bundle_id):
            self.kill(process.pid)
        shutil.rmtree(app.bundle_path.parent, ignore_errors=True)
        shutil.rmtree(app.container, ignore_errors=True)
        return True

    # ------------------------------------------------------------------ processes

    def _running(self, bundle_id: str | None = None) -> list[AppProcess]:
        with self._lock:
            processes = list(self._processes.values())
        return [p for p in processes
                if p.popen.poll() is None and (bundle_id is None or p.bundle_id == bundle_id)]

    def launch(self, bundle_id: str, arguments: list[str], environment: dict[str, str], kill_existing: bool,
               expired_signature: bool = False) -> int:
        app = self.get(bundle_id)
        if app is None:
            raise LaunchError(f'Application info provider (FBSApplicationLibrary) returned nil for "{bundle_id}"')
        if expired_signature:
            # FrontBoard's words when the provisioning profile has expired (or was never trusted)
            raise LaunchError(f"The operation couldn\u2019t be completed. Unable to launch {bundle_id} because it has "
                              "an invalid code signature, inadequate entitlements or its profile has not been "
                              "explicitly trusted by the user.", "Security")
        if kill_existing:
            for process in self._running(bundle_id):
                self.kill(process.pid)
        env = {
            "HOME": str(app.container),
            "CFFIXED_USER_HOME": str(app.container),
            "TMPDIR": str(app.container / "tmp") + "/",
            # the app is a host program (often a script exec-ing the host dlbench): it needs the host's PATH
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        }
        env.update({str(k): str(v) for k, v in environment.items()})
        logs = self.root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._log_counter += 1
            stem = f"{bundle_id}.{self._log_counter}"
        stdout_path, stderr_path = logs / f"{stem}.stdout", logs / f"{stem}.stderr"
        with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
            popen = subprocess.Popen([str(app.bundle_path / app.executable), *map(str, arguments)],
                                     cwd=app.container, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                     # its own process group, so kill() takes whatever the app spawned too
                                     start_new_session=True)
        process = AppProcess(popen.pid, bundle_id, app.executable, popen, stdout_path, stderr_path)
        with self._lock:
            self._processes[popen.pid] = process
        return popen.pid

    def process(self, pid: int) -> AppProcess | None:
        with self._lock:
            return self._processes.get(pid)

    def kill(self, pid: int) -> None:
        process = self.process(pid)
        if process is None:
            return  # only app processes this phone launched are ever signalled
        if process.popen.poll() is None:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            process.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def is_running(self, pid: int) -> bool:
        process = self.process(pid)
        return process is not None and process.popen.poll() is None

    def kill_all(self) -> None:
        for process in self._running():
            self.kill(process.pid)

    def _cpu_fraction(self, process: AppProcess, consumer: str) -> float | None:
        """CPU used since this consumer's previous sample, in cores (1.0 = one core busy); None on the first."""
        cpu = _cpu_seconds(process.pid)
        now = time.monotonic()
        if cpu is None:
            return None
        previous = process.cpu_marks.get(consumer)
        process.cpu_marks[consumer] = (now, cpu)
        if previous is None or now <= previous[0]:
            return None
        return max(0.0, (cpu - previous[1]) / (now - previous[0]))

    def busy(self, cores: float) -> bool:
        """Whether any running app process used at least `cores` of CPU since the previous call (the battery's
        reads): what makes the emulated battery draw its test-set extra current."""
        fractions = [self._cpu_fraction(process, "battery") for process in self._running()]
        return any(f is not None and f >= cores for f in fractions)

    def processes(self) -> list[dict[str, Any]]:
        """Sysmontap rows for the running app processes, read from the host's /proc with the DVT module's
        definitions (physFootprint = Private_Dirty + Swap: see docs/emulated-iphone-dvt.md)."""
        rows: list[dict[str, Any]] = []
        for process in self._running():
            try:
                footprint, resident = phys_footprint_bytes(process.pid), resident_bytes(process.pid)
            except (OSError, ValueError, IndexError):
                continue  # exited between the listing and the read
            fraction = self._cpu_fraction(process, "sysmontap")
            rows.append({
                "pid": process.pid,
                "name": process.name,
                "physFootprint": footprint,
                "memResidentSize": resident,
                "cpuUsage": None if fraction is None else fraction * 100.0,
            })
        return rows

    def energy(self, pids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """EnergyMonitor rows: unitless scores. The emulator has no energy model of a phone, so only the CPU
        component is reported: the process's CPU use (% of one core) since the previous energy sample, 0 the first
        time; the total equals it. Never joules."""
        result: dict[int, dict[str, Any]] = {}
        for pid in pids:
            process = self.process(pid)
            if process is None or process.popen.poll() is not None:
                continue
            fraction = self._cpu_fraction(process, "energy")
            score = 0.0 if fraction is None else fraction * 100.0
            result[pid] = {"energy.cost": score, "energy.cpu.cost": score}
        return result


def _cpu_seconds(pid: int) -> float | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name may contain spaces and parentheses: fields start after the last ")"
    fields = raw[raw.rfind(")") + 2:].split()
    try:
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime
    except (IndexError, ValueError):
        return None
