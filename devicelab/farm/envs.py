"""Label environments on the farm (docs/farm.md, "Label environments"): a label whose engine build lives in another
Python environment (`options.python`) names an interpreter on the client, which no worker host has. The client
records that environment's *lock* — its Python (implementation, version, platform) and the exact `name==version` of
every distribution it imports from — and stores it content-addressed with the task's other files; a worker fetches
it (sha256 checked on arrival), finds the environment built from that lock in its host's cache or builds it (a venv,
`pip install --no-deps --only-binary=:all:` of the exact pins from the index pip is configured with), checks what got
installed against the lock, and runs the label with that interpreter. Anything else is a one-line EnvError: the task's
rows say it, nothing runs with other versions. A package that did not come from an index (installed from a path, a
local wheel, a VCS or a URL) or whose version has a local label (`1.2+local`) cannot be rebuilt from a pin — the
index's release of that version would take its place — so the client refuses to make a lock of such an environment."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from devicelab import paths
from devicelab.errors import DevicelabError

LOCK_FORMAT = "devicelab-env-lock/1"
LOCK_NAME = "env-lock.json"
MARKER = "devicelab-env.json"  # written last into a built environment: without it, the folder is an unfinished build
# Neither pinned nor checked: pip is how an environment is made, not what it measures; devicelab is lent to the
# label's interpreter by the session (a package shim first on its PYTHONPATH), so a copy installed there never runs.
NOT_PINNED = frozenset({"pip", "devicelab"})
LIST_TIMEOUT_S = 120.0
BUILD_TIMEOUT_S = 1800.0

# Run by the label's interpreter (isolated: no PYTHONPATH, user site or current folder): what it imports from.
# A distribution counts as the environment's own when it lives under sys.prefix, else as its base's (a venv with
# system site packages, or an interpreter that is no venv at all); of two with one name, the first on sys.path wins.
_LIST = r"""
import importlib.metadata as m, json, os, platform, re, sys, sysconfig
prefix = os.path.realpath(sys.prefix)
found = {}
origins = {}
for d in m.distributions():
    name = d.metadata["Name"]
    if not name:
        continue
    key = re.sub(r"[-_.]+", "-", name).lower()
    if key in found:
        continue
    where = os.path.realpath(str(d.locate_file("")))
    found[key] = [d.version, "env" if where == prefix or where.startswith(prefix + os.sep) else "base"]
    direct = d.read_text("direct_url.json")  # PEP 610: written by an installer for anything not from an index
    if direct:
        try:
            url = str(json.loads(direct).get("url") or "a direct URL")
        except ValueError:
            url = "a direct URL"
        origins[key] = url
cfg = os.path.join(sys.prefix, "pyvenv.cfg")
venv = sys.prefix != sys.base_prefix
system = True
if venv and os.path.isfile(cfg):
    for line in open(cfg):
        k, _, v = line.partition("=")
        if k.strip() == "include-system-site-packages":
            system = v.strip().lower() == "true"
print(json.dumps({"python": platform.python_version(), "implementation": sys.implementation.name,
                  "platform": sysconfig.get_platform(), "venv": venv, "system_site_packages": system,
                  "packages": found, "origins": origins}))
"""


# Run by a built environment's interpreter (isolated): every file its own distributions' RECORDs list with a hash,
# hashed again as it is on disk; prints the files that are missing or differ ("name version: path (why)").
_VERIFY = r"""
import base64, hashlib, importlib.metadata as m, json, os, sys
prefix = os.path.realpath(sys.prefix)
bad = []
for d in m.distributions():
    where = os.path.realpath(str(d.locate_file("")))
    if not (where == prefix or where.startswith(prefix + os.sep)):
        continue
    for f in d.files or ():
        if f.hash is None:
            continue
        h = hashlib.new(f.hash.mode)
        try:
            with open(d.locate_file(f), "rb") as content:
                for chunk in iter(lambda: content.read(1 << 20), b""):
                    h.update(chunk)
        except FileNotFoundError:
            bad.append(f"{d.metadata['Name']} {d.version}: {f} (missing)")
            continue
        if base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode() != f.hash.value:
            bad.append(f"{d.metadata['Name']} {d.version}: {f} (its {f.hash.mode} is not its RECORD's)")
print(json.dumps(bad))
"""


def record_mismatches(python: str | Path) -> list[str]:
    """The files of the environment `python` runs in (its own distributions, not its base's) that are missing or
    whose content is not what their distribution's RECORD says (the hash pip wrote for each file it installed): one
    phrase each, empty when every file matches."""
    try:
        p = subprocess.run([str(python), "-I", "-c", _VERIFY], capture_output=True, text=True,
                           timeout=BUILD_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as e:
        raise EnvError(f"{python}: cannot be run to check its files: {e}") from None
    if p.returncode != 0:
        raise EnvError(f"{python}: checking its files against their RECORDs failed: {_last_line(p.stderr)}")
    return [str(x) for x in json.loads(p.stdout)]


class EnvError(DevicelabError):
    """A label environment that cannot be had on this host as its lock says (one line)."""


def listing(python: str | Path) -> dict[str, Any]:
    """What the interpreter `python` is and imports from (see _LIST)."""
    try:
        p = subprocess.run([str(python), "-I", "-c", _LIST], capture_output=True, text=True, timeout=LIST_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as e:
        raise EnvError(f"{python}: cannot be run to list its packages: {e}") from None
    if p.returncode != 0:
        raise EnvError(f"{python}: listing its packages failed: {_last_line(p.stderr)}")
    return dict(json.loads(p.stdout))


def lock_of(python: str | Path) -> dict[str, Any]:
    """The lock of the environment `python` runs in: its own distributions as `name==version` pins (NOT_PINNED left
    out), the base's it sees as well when it sees any (checked on the worker, never installed there). Raises EnvError
    (one line) when a package cannot travel as a pin (not_portable)."""
    found = listing(python)
    refused = not_portable(found)
    if refused:
        more = f" (and {len(refused) - 1} more: {', '.join(n for n, _ in refused[1:])})" if len(refused) > 1 else ""
        raise EnvError(f"{python}: {refused[0][1]}{more}; an environment with it cannot travel to farm workers (a "
                       "worker installs name==version from its index): run this label locally, or publish the build "
                       "to an index the farm's hosts use, under a version of its own")
    pins: dict[str, list[str]] = {"env": [], "base": []}
    for name, (version, where) in sorted(found["packages"].items()):
        if name not in NOT_PINNED:
            pins[where].append(f"{name}=={version}")
    return {"format": LOCK_FORMAT, "python": found["python"], "implementation": found["implementation"],
            "platform": found["platform"], "system_site_packages": bool(found["system_site_packages"]),
            "requirements": pins["env"], "base": pins["base"]}


def not_portable(found: dict[str, Any]) -> list[tuple[str, str]]:
    """The pinned packages of a listing that a worker could not get back from a `name==version` pin, with why: one
    installed from a path, a local wheel, a VCS or a URL (its PEP 610 direct_url.json) — a worker would install the
    index's release of that version in its place, and the check after the build compares versions only — and one whose
    version carries a local label (`+…`), which no public index serves."""
    out: list[tuple[str, str]] = []
    origins = found.get("origins") or {}
    for name, (version, _where) in sorted(found["packages"].items()):
        if name in NOT_PINNED:
            continue
        if name in origins:
            out.append((name, f"{name} {version} was installed from {origins[name]}, not from an index "
                              "(direct_url.json)"))
        elif "+" in version:
            out.append((name, f"{name} {version} has a local version label (+{version.partition('+')[2]})"))
    return out


def lock_bytes(lock: dict[str, Any]) -> bytes:
    """The lock as stored: canonical JSON, so one environment is one artifact (one sha256, one cache entry)."""
    return (json.dumps(lock, sort_keys=True, indent=1) + "\n").encode()


# An exact pin and nothing else: a normalised name, `==`, a release's version (no wildcard `*`, no second clause `,`,
# no other operator, no environment marker `;`, no local label `+`), so pip can install only that one release.
PIN = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?==[0-9a-zA-Z][0-9a-zA-Z.!_-]*")


def read_lock(data: bytes, where: str) -> dict[str, Any]:
    """A lock as the store carried it, checked field by field before anything is made from it (one-line EnvError)."""
    try:
        lock = json.loads(data)
    except ValueError as e:
        raise EnvError(f"{where}: not a label-environment lock ({e})") from None
    if not isinstance(lock, dict) or lock.get("format") != LOCK_FORMAT:
        raise EnvError(f"{where}: not a label-environment lock of format {LOCK_FORMAT}")
    checks = {"python": lambda v: isinstance(v, str) and re.fullmatch(r"\d+\.\d+(\.\d+)?[0-9a-z.+]*", v) is not None,
              "implementation": lambda v: isinstance(v, str) and re.fullmatch(r"[a-z][a-z0-9_]*", v) is not None,
              "platform": lambda v: isinstance(v, str),
              "system_site_packages": lambda v: isinstance(v, bool),
              "requirements": lambda v: isinstance(v, list) and all(isinstance(r, str) and PIN.fullmatch(r) for r in v),
              "base": lambda v: isinstance(v, list) and all(isinstance(r, str) and PIN.fullmatch(r) for r in v)}
    allowed = {"python": "a version such as 3.11.2", "implementation": "an implementation name such as cpython",
               "platform": "a string", "system_site_packages": "true or false",
               "requirements": "a list of exact name==version pins", "base": "a list of exact name==version pins"}
    for key, ok in checks.items():
        if key not in lock:
            raise EnvError(f"{where}: {key} is missing; allowed: {allowed[key]}")
        if not ok(lock[key]):
            raise EnvError(f"{where}: {key} {json.dumps(lock[key])[:120]} is not allowed; allowed: {allowed[key]}")
    return lock


def _pins(lock: dict[str, Any]) -> dict[str, str]:
    return dict(r.split("==", 1) for r in [*lock["requirements"], *lock["base"]])


def differences(lock: dict[str, Any], found: dict[str, Any]) -> list[str]:
    """How the environment `found` (a listing) differs from `lock`, one phrase each: Python first, then each package
    missing, extra or of another version."""
    out: list[str] = []
    if found["implementation"] != lock["implementation"] or _minor(found["python"]) != _minor(lock["python"]):
        out.append(f"Python is {found['implementation']} {found['python']}, the lock's {lock['implementation']} "
                   f"{lock['python']}")
    want = _pins(lock)
    have = {n: v for n, (v, _) in found["packages"].items() if n not in NOT_PINNED}
    for name in sorted(set(want) | set(have)):
        if name not in have:
            out.append(f"{name} {want[name]} is missing")
        elif name not in want:
            out.append(f"{name} {have[name]} is not in the lock")
        elif have[name] != want[name]:
            out.append(f"{name} is {have[name]}, the lock's {want[name]}")
    return out


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[-1] if lines else "no output")[:300]


def cache_dir() -> Path:
    return paths.data_dir() / "farm" / "envs"


def base_interpreter(lock: dict[str, Any], where: str) -> str:
    """An interpreter of this host with the lock's implementation and Python major.minor: the worker's own base
    first, then pythonX.Y and python3 on PATH."""
    want = f"{lock['implementation']} {_minor(lock['python'])}"
    seen: list[str] = []
    names = [getattr(sys, "_base_executable", None), sys.executable, shutil.which(f"python{_minor(lock['python'])}"),
             shutil.which("python3")]
    for candidate in names:
        if not candidate or candidate in seen:
            continue
        seen.append(candidate)
        try:
            p = subprocess.run([candidate, "-I", "-c", "import platform, sys; print(sys.implementation.name, "
                                "'.'.join(platform.python_version().split('.')[:2]))"],
                               capture_output=True, text=True, timeout=LIST_TIMEOUT_S)
        except (OSError, subprocess.SubprocessError):
            continue
        if p.returncode == 0 and p.stdout.strip() == want:
            return candidate
    raise EnvError(f"{where}: no {want} interpreter on this host (looked at {', '.join(seen)}): the label's environment "
                   f"needs Python {lock['python']}")


def built(sha256: str, cache: Path | None = None) -> Path | None:
    """The interpreter of the environment built on this host from the lock `sha256`, if there is one: its marker
    names that lock and its interpreter is there (a cheap look, no listing: the full check was made when it was
    built; a folder failing this one is built again)."""
    home = (cache or cache_dir()) / sha256
    python = home / "bin" / "python"
    try:
        marker = json.loads((home / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("lock_sha256") != sha256 or not os.access(python, os.X_OK):
        return None
    return python


def ensure(data: bytes, sha256: str, cache: Path | None = None) -> Path:
    """The interpreter of the environment built from the lock `data` (content `sha256`, checked on arrival by the
    caller and again here) on this host: the cached one, or one built now. One build per lock and host: a second
    worker of the host waits for the first one's build (a file lock), then uses it. Raises EnvError (one line) when it
    cannot be had."""
    cache = cache or cache_dir()
    # The cache is keyed by the sha256: a lock's bytes under another lock's key would serve that one's tasks.
    if hashlib.sha256(data).hexdigest() != sha256:
        raise EnvError(f"lock {sha256[:12]}: its bytes are not that sha256")
    home = cache / sha256
    python = home / "bin" / "python"
    if built(sha256, cache) is not None:
        return python
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"{sha256}.lock", "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        if built(sha256, cache) is not None:  # built by another worker while this one waited
            return python
        lock = read_lock(data, f"lock {sha256[:12]}")
        where = f"label environment {sha256[:12]}"
        base = base_interpreter(lock, where)
        if lock["base"] and not lock["system_site_packages"]:
            raise EnvError(f"{where}: the lock lists base packages without system site packages")
        shutil.rmtree(home, ignore_errors=True)  # an unfinished build (no marker): start again
        try:
            _build(base, home, lock, where)
            found = listing(python)
            wrong = differences(lock, found)
            if wrong:
                more = f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
                raise EnvError(f"{where}: built on this host, but {wrong[0]}{more}")
            # The versions match; so must the files: a file changed or missing since pip wrote its RECORD (an
            # interrupted install, a cache or disk that gave other bytes, a hand edit) would run under the lock's name.
            wrong = record_mismatches(python)
            if wrong:
                more = f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
                raise EnvError(f"{where}: built on this host, but a file does not match its RECORD: {wrong[0]}{more}")
        except BaseException:
            shutil.rmtree(home, ignore_errors=True)
            raise
        fd, tmp = tempfile.mkstemp(prefix=f".{MARKER}.", dir=home)
        with os.fdopen(fd, "w") as f:
            json.dump({"lock_sha256": sha256, "python": found["python"], "base": base}, f)
            f.flush()
            os.fsync(f.fileno())  # the marker says "built": it must not reach the disk before its content does
        os.replace(tmp, home / MARKER)
    return python


def _build(base: str, home: Path, lock: dict[str, Any], where: str) -> None:
    """A venv at `home` from `base` with the lock's pins installed as they are (`--no-deps`: the lock is the whole
    set, the resolver adds nothing; `--only-binary=:all:`: wheels only, so nothing is built and no build dependency
    is fetched unpinned), by the pip of the interpreter running devicelab (`--python`), so the new environment holds
    no installer of its own."""
    venv = [base, "-m", "venv", "--without-pip", *(["--system-site-packages"] if lock["system_site_packages"] else []),
            str(home)]
    _run(venv, f"{where}: making the venv failed")
    if lock["requirements"]:
        pip = [sys.executable, "-m", "pip", "--python", str(home / "bin" / "python"), "install", "--no-deps",
               "--only-binary=:all:", "--no-input", "--quiet", *lock["requirements"]]
        _run(pip, f"{where}: pip install of its {len(lock['requirements'])} pins failed")


def _run(argv: list[str], what: str) -> None:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as e:
        raise EnvError(f"{what}: {e}") from None
    if p.returncode != 0:
        raise EnvError(f"{what}: {_last_line(p.stderr or p.stdout)}")
