"""The device side of AFC (Apple File Conduit), rooted at one host folder: the Media folder for com.apple.afc, an
app's container (or its Documents) for house_arrest.

Packets are a 40-byte little-endian header (magic "CFA6LPAA", entire length, this length, packet number, opcode)
and a body; every answer echoes the request's packet number, which is how pymobiledevice3 pairs them up. Paths
are confined to the root: anything resolving outside it is "object not found", as the sandbox makes it look.
"""

from __future__ import annotations

import os
import shutil
import stat
import struct
from pathlib import Path
from typing import IO

from devicelab.testing.emulated_ios._wire import Conn, ConnClosedError

MAGIC = b"CFA6LPAA"
HEADER = struct.Struct("<8sQQQQ")

# opcodes (pymobiledevice3 services/afc.py AfcOpcode)
OP_STATUS = 0x01
OP_DATA = 0x02
OP_READ_DIR = 0x03
OP_REMOVE_PATH = 0x08
OP_MAKE_DIR = 0x09
OP_GET_FILE_INFO = 0x0A
OP_GET_DEVINFO = 0x0B
OP_FILE_OPEN = 0x0D
OP_FILE_OPEN_RES = 0x0E
OP_READ = 0x0F
OP_WRITE = 0x10
OP_FILE_SEEK = 0x11
OP_FILE_TELL = 0x12
OP_FILE_TELL_RES = 0x13
OP_FILE_CLOSE = 0x14
OP_FILE_SET_SIZE = 0x15
OP_RENAME_PATH = 0x18
OP_FILE_LOCK = 0x1B
OP_SET_FILE_TIME = 0x1E

# status codes (AfcError)
SUCCESS = 0
UNKNOWN_ERROR = 1
INVALID_ARG = 7
OBJECT_NOT_FOUND = 8
OBJECT_IS_DIR = 9
PERM_DENIED = 10
OP_NOT_SUPPORTED = 15
OBJECT_EXISTS = 16
DIR_NOT_EMPTY = 33
UNKNOWN_PACKET_TYPE = 6

# fopen modes -> Python file modes (AfcFopenMode: r, r+, w, w+, a, a+)
_FOPEN_MODES = {1: "rb", 2: "r+b", 3: "wb", 4: "w+b", 5: "ab", 6: "a+b"}


class _AfcError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _cstrings(body: bytes) -> list[str]:
    return [part.decode("utf-8") for part in body.split(b"\0")[:-1]]


class AfcServer:
    """One AFC session over `conn`, rooted at `root`; with `only`, the root shows just that one folder (house_arrest's
    VendDocuments)."""

    def __init__(self, conn: Conn, root: Path, only: str | None = None) -> None:
        self.conn = conn
        self.root = root.resolve()
        self.only = only
        self.handles: dict[int, IO[bytes]] = {}
        self.next_handle = 1

    def serve(self) -> None:
        try:
            while True:
                try:
                    magic, entire, _this, packet_num, opcode = HEADER.unpack(self.conn.recv_exact(HEADER.size))
                except ConnClosedError:
                    return
                if magic != MAGIC or entire < HEADER.size:
                    return  # not AFC: a real afcd drops the connection
                body = self.conn.recv_exact(entire - HEADER.size)
                try:
                    operation, payload = self._dispatch(opcode, body)
                except _AfcError as e:
                    operation, payload = OP_STATUS, struct.pack("<Q", e.status)
                except OSError:
                    operation, payload = OP_STATUS, struct.pack("<Q", UNKNOWN_ERROR)
                self.conn.sendall(HEADER.pack(MAGIC, HEADER.size + len(payload), HEADER.size + len(payload),
                                              packet_num, operation) + payload)
        except ConnClosedError:
            return
        finally:
            for handle in self.handles.values():
                handle.close()
            self.handles.clear()

    # ------------------------------------------------------------------ paths

    def _path(self, device_path: str) -> Path:
        # AFC paths are absolute or relative to the root; normalise lexically, then refuse symlink escapes
        parts = [p for p in device_path.split("/") if p not in ("", ".")]
        stack: list[str] = []
        for part in parts:
            if part == "..":
                if stack:
                    stack.pop()
                continue
            stack.append(part)
        if self.only is not None and stack and stack[0] != self.only:
            raise _AfcError(OBJECT_NOT_FOUND)
        path = self.root.joinpath(*stack)
        resolved = path.resolve()
        if resolved != self.root and self.root not in resolved.parents:
            raise _AfcError(OBJECT_NOT_FOUND)
        return path

    @staticmethod
    def _ok() -> tuple[int, bytes]:
        return OP_STATUS, struct.pack("<Q", SUCCESS)

    # ------------------------------------------------------------------ operations

    def _dispatch(self, opcode: int, body: bytes) -> tuple[int, bytes]:
        if opcode == OP_READ_DIR:
            return self._read_dir(_cstrings(body)[0])
        if opcode == OP_GET_FILE_INFO:
            return self._file_info(_cstrings(body)[0])
        if opcode == OP_GET_DEVINFO:
            usage = shutil.disk_usage(self.root)
            fields = {"Model": "iPhone", "FSTotalBytes": str(usage.total), "FSFreeBytes": str(usage.free),
                      "FSBlockSize": "4096"}
            return OP_DATA, b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in fields.items())
        if opcode == OP_MAKE_DIR:
            path = self._path(_cstrings(body)[0])
            if path.exists() and not path.is_dir():
                raise _AfcError(OBJECT_EXISTS)
            path.mkdir(parents=True, exist_ok=True)  # afcd's MakeDir creates the missing parents
            return self._ok()
        if opcode == OP_REMOVE_PATH:
            return self._remove(_cstrings(body)[0])
        if opcode == OP_RENAME_PATH:
            source, target = _cstrings(body)[:2]
            src, dst = self._path(source), self._path(target)
            if not src.exists():
                raise _AfcError(OBJECT_NOT_FOUND)
            if not dst.parent.is_dir():
                raise _AfcError(OBJECT_NOT_FOUND)
            if dst.is_dir() and any(dst.iterdir()):
                raise _AfcError(DIR_NOT_EMPTY)
            os.replace(src, dst)
            return self._ok()
        if opcode == OP_FILE_OPEN:
            (mode,) = struct.unpack_from("<Q", body)
            return self._open(mode, _cstrings(body[8:])[0])
        if opcode == OP_READ:
            handle, size = struct.unpack_from("<QQ", body)
            return OP_DATA, self._handle(handle).read(size)
        if opcode == OP_WRITE:
            (handle,) = struct.unpack_from("<Q", body)
            self._handle(handle).write(body[8:])
            return self._ok()
        if opcode == OP_FILE_SEEK:
            handle, whence, offset = struct.unpack_from("<QQq", body)
            self._handle(handle).seek(offset, whence)
            return self._ok()
        if opcode == OP_FILE_TELL:
            (handle,) = struct.unpack_from("<Q", body)
            return OP_FILE_TELL_RES, struct.pack("<Q", self._handle(handle).tell())
        if opcode == OP_FILE_SET_SIZE:
            handle, size = struct.unpack_from("<QQ", body)
            self._handle(handle).truncate(size)
            return self._ok()
        if opcode == OP_FILE_CLOSE:
            (handle,) = struct.unpack_from("<Q", body)
            self._handle(handle).close()
            del self.handles[handle]
            return self._ok()
        if opcode == OP_FILE_LOCK:
            (handle,) = struct.unpack_from("<Q", body)
            self._handle(handle)  # one client per file here: the lock always succeeds
            return self._ok()
        if opcode == OP_SET_FILE_TIME:
            (mtime_ns,) = struct.unpack_from("<Q", body)
            path = self._path(_cstrings(body[8:])[0])
            if not path.exists():
                raise _AfcError(OBJECT_NOT_FOUND)
            os.utime(path, ns=(mtime_ns, mtime_ns))
            return self._ok()
        raise _AfcError(UNKNOWN_PACKET_TYPE)

    def _handle(self, handle: int) -> IO[bytes]:
        f = self.handles.get(handle)
        if f is None:
            raise _AfcError(INVALID_ARG)
        return f

    def _read_dir(self, device_path: str) -> tuple[int, bytes]:
        path = self._path(device_path)
        if not path.exists():
            raise _AfcError(OBJECT_NOT_FOUND)
        if not path.is_dir():
            raise _AfcError(INVALID_ARG)
        names = [".", "..", *sorted(entry.name for entry in path.iterdir()
                                    if self.only is None or path != self.root or entry.name == self.only)]
        return OP_DATA, b"".join(name.encode() + b"\0" for name in names)

    def _file_info(self, device_path: str) -> tuple[int, bytes]:
        path = self._path(device_path)
        try:
            st = path.lstat()
        except FileNotFoundError:
            raise _AfcError(OBJECT_NOT_FOUND) from None
        if stat.S_ISDIR(st.st_mode):
            kind = "S_IFDIR"
        elif stat.S_ISLNK(st.st_mode):
            kind = "S_IFLNK"
        else:
            kind = "S_IFREG"
        fields = {
            "st_size": str(st.st_size),
            "st_blocks": str(st.st_blocks),
            "st_nlink": str(st.st_nlink),
            "st_ifmt": kind,
            "st_mtime": str(st.st_mtime_ns),
            "st_birthtime": str(st.st_ctime_ns),
        }
        if kind == "S_IFLNK":
            fields["LinkTarget"] = os.readlink(path)
        return OP_DATA, b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in fields.items())

    def _remove(self, device_path: str) -> tuple[int, bytes]:
        path = self._path(device_path)
        if path == self.root or (self.only is not None and path == self.root / self.only):
            raise _AfcError(PERM_DENIED)
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            # RemovePath removes a file or an empty folder only; pymobiledevice3's rm() recurses itself
            if any(path.iterdir()):
                raise _AfcError(DIR_NOT_EMPTY)
            path.rmdir()
        else:
            raise _AfcError(OBJECT_NOT_FOUND)
        return self._ok()

    def _open(self, mode: int, device_path: str) -> tuple[int, bytes]:
        python_mode = _FOPEN_MODES.get(mode)
        if python_mode is None:
            raise _AfcError(INVALID_ARG)
        path = self._path(device_path)
        if path.is_dir():
            raise _AfcError(OBJECT_IS_DIR)
        if not path.exists():
            if mode == 1 or not path.parent.is_dir():
                raise _AfcError(OBJECT_NOT_FOUND)
            if mode == 2:
                path.touch()  # r+ creates (O_RDWR | O_CREAT), unlike Python's r+b
        handle = self.next_handle
        self.next_handle += 1
        self.handles[handle] = open(path, python_mode)
        return OP_FILE_OPEN_RES, struct.pack("<Q", handle)


def serve_afc(conn: Conn, root: Path) -> None:
    AfcServer(conn, root).serve()
