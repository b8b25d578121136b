"""Where devicelab keeps its data: XDG data folder by default, overridable for tests and farms."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def data_dir() -> Path:
    """The data folder: zoo cache, converted models, reports, and the default SQLite store."""
    override = os.environ.get("DEVICELAB_DATA")
    if override:
        return Path(override).expanduser()
    import platformdirs  # lazily: engine modules import this module inside runners, whose env may lack it

    path = Path(platformdirs.user_data_dir("devicelab"))
    return path.expanduser()


def default_db() -> Path:
    override = os.environ.get("DEVICELAB_DB")
    return Path(override).expanduser() if override else data_dir() / "devicelab.sqlite"


def reports_dir() -> Path:
    return data_dir() / "reports"


def zoo_dir() -> Path:
    return data_dir() / "zoo"


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename: readers see the old file or the new one, never half of one.
    Permissions follow the umask like a plain open() (mkstemp alone would leave 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def cached_file(cache_dir: Path, key: str, build: Callable[[Path], None]) -> Path:
    """The cache's file named `key`, built once by build(tmp_path) and renamed into place, so a crash or a
    concurrent build never leaves half a file under the final name. Used for every converted model."""
    final = cache_dir / key
    if final.is_file():
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".build-", suffix=final.suffix)
    os.close(fd)
    try:
        build(Path(tmp))
        if os.path.getsize(tmp) == 0:
            raise RuntimeError(f"building {key} produced an empty file")
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return final


_HASHES: dict[tuple[str, int, int], str] = {}


def sha256_file(path: Path) -> str:
    """A file's content hash, remembered per (path, size, mtime): the same model or runner is hashed for many
    configs (content-addressed pushes, model identity), and re-reading it each time costs seconds on big models.
    A folder (a Core ML .mlpackage) hashes its files' relative names and hashes, in order."""
    if Path(path).is_dir():
        h = hashlib.sha256()
        for f in sorted(p for p in Path(path).rglob("*") if p.is_file()):
            h.update(f"{f.relative_to(path).as_posix()}\0{sha256_file(f)}\n".encode())
        return h.hexdigest()
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]
