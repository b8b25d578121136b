"""Blocking socket plumbing shared by the emulated iPhone's daemons: one `Conn` per accepted socket, which may
be upgraded to TLS in place (lockdownd's StartSession) and aborted from another thread (a pulled cable)."""

from __future__ import annotations

import plistlib
import socket
import ssl
import struct
import threading
from typing import Any


class ConnClosedError(Exception):
    """The peer went away (EOF, reset, or the connection was aborted by a detach)."""


class Conn:
    """A blocking stream socket with the two calls the services need: `recv(n)` (b"" at EOF, never raises) and
    `sendall(data)`. The DVT server (serve_dvt) receives one of these too."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock: socket.socket = sock
        self._lock = threading.Lock()
        self.closed = False

    def recv(self, n: int) -> bytes:
        if self.closed:
            return b""
        try:
            return self.sock.recv(n)
        except (OSError, ValueError):
            # OSError covers ssl.SSLError and resets; ValueError is a socket closed under us by abort()
            return b""

    def recv_exact(self, n: int) -> bytes:
        chunks: list[bytes] = []
        left = n
        while left:
            chunk = self.recv(min(left, 1 << 20))
            if not chunk:
                raise ConnClosedError()
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def sendall(self, data: bytes) -> None:
        if self.closed:
            raise ConnClosedError()
        try:
            self.sock.sendall(data)
        except (OSError, ValueError) as e:
            raise ConnClosedError() from e

    def start_tls(self, context: ssl.SSLContext) -> None:
        """Upgrade to TLS as the server (the device side); the socket object changes, so abort() follows it."""
        with self._lock:
            self.sock = context.wrap_socket(self.sock, server_side=True)

    def abort(self) -> None:
        """Cut the connection as an unplugged cable does: the peer sees EOF/reset, blocked reads here return."""
        with self._lock:
            self.closed = True
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except (OSError, ValueError):
                pass
            try:
                self.sock.close()
            except OSError:
                pass

    close = abort


def recv_plist_be(conn: Conn) -> dict[str, Any] | None:
    """One lockdown-style message (4-byte big-endian length + plist); None when the peer closed."""
    try:
        (size,) = struct.unpack(">I", conn.recv_exact(4))
        payload = conn.recv_exact(size)
    except ConnClosedError:
        return None
    value = plistlib.loads(payload)
    if not isinstance(value, dict):
        raise ValueError(f"expected a dictionary-rooted plist, got {type(value).__name__}")
    return value


def send_plist_be(conn: Conn, message: dict[str, Any]) -> None:
    payload = plistlib.dumps(message, fmt=plistlib.FMT_XML)
    conn.sendall(struct.pack(">I", len(payload)) + payload)
