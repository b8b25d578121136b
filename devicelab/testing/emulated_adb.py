"""An emulated Android phone for tests: the device side of the ADB wire protocol on loopback TCP, so that the
real adb server (`adb connect 127.0.0.1:PORT`) and adbutils shell, push, pull and read exit codes end to end.

    python -m devicelab.testing.emulated_adb --port 0 [--root DIR] [--profile FILE.yaml] [--connect]
                                             [--drop-on TEXT[@SECONDS] | TEXT@input=INPUT[#N]] [--no-namespace]

The first line on stdout is the address (127.0.0.1:PORT); everything else goes to stderr. SIGUSR1 drops the
transport (as a pulled USB cable does) until SIGUSR2; SIGTERM/SIGINT kill every command and exit 0.

Services: shell: (v1), shell,v2,...: (the shell protocol: stdin streamed in, stdout/stderr out as produced,
exit code), exec:, sync: (STAT, LIST, SEND, RECV, QUIT; only /data/local/tmp is writable). The phone's body
(profile, sandbox, namespace, thermal and battery model) is in emulated_device.py.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import posixpath
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devicelab.testing.signals import catch_signals, serve_signals
from devicelab.errors import DevicelabError
from devicelab.testing.emulated_device import (EnergySample, Model, Profile, Runner, Sandbox, kill_session,
                                               session_members)

A_CNXN = 0x4E584E43
A_OPEN = 0x4E45504F
A_OKAY = 0x59414B4F
A_WRTE = 0x45545257
A_CLSE = 0x45534C43
A_VERSION = 0x01000001  # skips checksums both ways; neither adb 29 nor 36 checks them
MAX_PAYLOAD = 1 << 20
HEADER = struct.Struct("<6I")
FEATURES = "shell_v2,cmd,fixed_push_mkdir"

# Shell protocol v2 packet ids (adb's shell_protocol.h).
SH_STDIN, SH_STDOUT, SH_STDERR, SH_EXIT, SH_CLOSE_STDIN, SH_WINDOW = 0, 1, 2, 3, 4, 5
SH_HEADER = struct.Struct("<BI")

SYNC_DATA_MAX = 64 * 1024
EXEC_GRACE_S = 10.0  # how long an exec: command may finish its input after the host closed the stream
RESERVED_PORTS = frozenset({5037, *range(5555, 5586)})  # the adb server's own port, and the ports it auto-attaches


class EmulatorError(DevicelabError):
    """The emulated device cannot start as asked (a reserved port, a busy port...)."""


class _StreamClosedError(Exception):
    """The host closed the stream, or the transport went away."""


class _ProtocolError(Exception):
    pass


@dataclass(frozen=True)
class DropRule:
    """Drop the transport once, while a command containing `text` runs: after it has run `seconds`, or — tied to an
    event, so a test fails the same way every time — when the `count`-th stdin packet containing `on_input` reaches
    such commands (e.g. the second `"run"` command a runner receives)."""

    text: str
    seconds: float = 0.5
    on_input: str | None = None
    count: int = 1

    @classmethod
    def parse(cls, spec: str) -> DropRule:
        """`TEXT@SECONDS`, `TEXT` (0.5 s), or `TEXT@input=INPUT[#N]`."""
        text, sep, rest = spec.partition("@input=")
        if sep:
            wanted, hash_, n = rest.rpartition("#")
            if not hash_:
                wanted, n = rest, "1"
            if not text or not wanted or not n.isdigit() or int(n) < 1:
                raise EmulatorError(f"--drop-on {spec!r}: expected TEXT@input=INPUT[#N] (N >= 1)")
            return cls(text, on_input=wanted, count=int(n))
        text, sep, secs = spec.rpartition("@")
        try:
            seconds = float(secs) if sep else None
        except ValueError:
            seconds = None  # an @ that is part of the text
        if seconds is None:
            return cls(spec)
        if not text or seconds < 0:
            raise EmulatorError(f"--drop-on {spec!r}: expected TEXT or TEXT@SECONDS")
        return cls(text, seconds)


# ----------------------------------------------------------------------------------------------- transport


class _Stream:
    """One ADB stream: one WRTE in flight (the next waits for the host's OKAY); host WRTEs are acknowledged as the
    service takes them, so a command that does not read its stdin holds the host back as on a phone."""

    def __init__(self, transport: _Transport, local_id: int, remote_id: int) -> None:
        self.transport = transport
        self.local_id = local_id
        self.remote_id = remote_id
        self.closed = False
        self.task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._ready.set()
        self._inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._write_lock = asyncio.Lock()

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        async with self._write_lock:
            step = self.transport.max_payload
            for off in range(0, len(view), step):
                while not self._ready.is_set():
                    await self._ready.wait()
                if self.closed:
                    raise _StreamClosedError
                self._ready.clear()
                self.transport.send(A_WRTE, self.local_id, self.remote_id, view[off:off + step])
                await self.transport.drain()

    async def read(self) -> bytes:
        """The next chunk the host wrote; b"" once the stream is closed."""
        if self.closed and self._inbox.empty():
            return b""
        data = await self._inbox.get()
        if data is None:
            return b""
        if not self.closed:
            self.transport.send(A_OKAY, self.local_id, self.remote_id)
        return data

    def on_okay(self) -> None:
        self._ready.set()

    def on_data(self, data: bytes) -> None:
        self._inbox.put_nowait(data)

    def on_gone(self) -> None:
        """The host closed it or the transport died: wake every waiter, cancel the service."""
        self.closed = True
        self._ready.set()
        self._inbox.put_nowait(None)
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def close(self) -> None:
        """Our side is done: CLSE once (the host's echoed CLSE is ignored)."""
        if self.closed:
            return
        self.closed = True
        self.transport.streams.pop(self.local_id, None)
        self.transport.send(A_CLSE, self.local_id, self.remote_id)
        self._ready.set()


class _Transport:
    """One TCP connection from an adb server: the CNXN handshake, then streams."""

    def __init__(self, device: EmulatedDevice, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.device = device
        self.reader = reader
        self.writer = writer
        self.max_payload = MAX_PAYLOAD
        self.streams: dict[int, _Stream] = {}
        self.dead = False

    def send(self, command: int, arg0: int, arg1: int, data: bytes | memoryview = b"") -> None:
        if self.dead:
            return
        self.writer.write(HEADER.pack(command, arg0, arg1, len(data), 0, command ^ 0xFFFFFFFF))
        if data:
            self.writer.write(data)

    async def drain(self) -> None:
        if self.dead:
            raise _StreamClosedError
        try:
            await self.writer.drain()
        except (ConnectionError, OSError):
            raise _StreamClosedError from None

    async def run(self) -> None:
        try:
            while True:
                head = await self.reader.readexactly(HEADER.size)
                command, arg0, arg1, length, _check, magic = HEADER.unpack(head)
                if magic != command ^ 0xFFFFFFFF or length > MAX_PAYLOAD:
                    raise _ProtocolError(f"bad message header {head.hex()}")
                data = await self.reader.readexactly(length) if length else b""
                self._dispatch(command, arg0, arg1, data)
        except (asyncio.IncompleteReadError, ConnectionError, OSError, _ProtocolError):
            pass
        finally:
            self.abort()

    def _dispatch(self, command: int, arg0: int, arg1: int, data: bytes) -> None:
        if command == A_CNXN:
            # A second CNXN on a live connection is the host starting over: its old streams are gone.
            for s in list(self.streams.values()):
                s.on_gone()
            self.streams.clear()
            self.max_payload = max(min(arg1, MAX_PAYLOAD), 4096)
            self.send(A_CNXN, A_VERSION, MAX_PAYLOAD, self.device.banner().encode())
        elif command == A_OPEN:
            name = data.rstrip(b"\0").decode("utf-8", "replace")
            service = self.device._service(name)
            if service is None:
                self.send(A_CLSE, 0, arg0)
                return
            local_id = self.device._next_stream_id()
            stream = _Stream(self, local_id, arg0)
            self.streams[local_id] = stream
            self.send(A_OKAY, local_id, arg0)
            stream.task = asyncio.get_running_loop().create_task(self._serve(stream, service))
            return
        known = self.streams.get(arg1)
        if known is None:
            return  # late messages for a stream we closed; the host's echo of our CLSE
        if command == A_OKAY:
            known.on_okay()
        elif command == A_WRTE:
            known.on_data(data)
        elif command == A_CLSE:
            del self.streams[arg1]
            if not known.closed:
                self.send(A_CLSE, known.local_id, known.remote_id)  # adbd answers a close with its own
                known.on_gone()
        # AUTH never comes (CNXN is answered at once); anything else is ignored as adbd does.

    async def _serve(self, stream: _Stream, service: Callable[[_Stream], Awaitable[None]]) -> None:
        try:
            await service(stream)
        except (_StreamClosedError, asyncio.CancelledError):
            pass
        except Exception:  # a bug in a service must not take the transport down; show it
            traceback.print_exc(file=sys.stderr)
        finally:
            stream.close()

    def abort(self) -> None:
        """Abrupt end (drop, host gone): no CLSE, every command of this connection killed by its service."""
        if self.dead:
            return
        self.dead = True
        self.writer.transport.abort()
        for s in list(self.streams.values()):
            s.on_gone()
        self.streams.clear()


# ----------------------------------------------------------------------------------------------- device


class EmulatedDevice:
    """The emulated phone, in-process. Its asyncio loop runs on a thread of its own; every public method is
    thread-safe. `start()` returns the address for `adb connect`."""

    def __init__(self, root: Path | None = None, profile: Profile | None = None, host: str = "127.0.0.1",
                 port: int = 0, namespace: bool = True, drop_on: Sequence[DropRule] = ()) -> None:
        if port in RESERVED_PORTS:
            raise EmulatorError(f"port {port} is reserved (5037 is the adb server's, 5555-5585 are auto-attached "
                                "by every adb server on the machine): pick another, or 0 for any free port")
        self.profile = profile if profile is not None else Profile()
        self._temp_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="devicelab-emu-")) if root is None else Path(root).resolve()
        self.host = host
        self.port = port
        self.address = ""
        self._drop_rules = list(drop_on)
        self._inputs_seen: dict[DropRule, int] = {}  # stdin matches per event-tied rule
        self.sandbox = Sandbox(self.root, self.profile)
        self.runner = Runner(self.sandbox, namespace)
        self.model: Model | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._transports: set[_Transport] = set()
        self._accepting: set[asyncio.Task[Any]] = set()  # the connection handlers
        self._sessions: set[int] = set()  # session ids of commands that may still have processes
        self._sessions_lock = threading.Lock()
        self._stream_id = 0
        self._restore_handle: asyncio.TimerHandle | None = None
        self._started = False
        self._tasks: set[asyncio.Task[Any]] = set()  # fire-and-forget tasks, referenced until done (asyncio keeps weak refs)

    # -- facts the runner found at start
    @property
    def namespace(self) -> bool:
        return self.runner.namespace

    @property
    def namespace_reason(self) -> str:
        return self.runner.namespace_reason

    @property
    def arm64_reason(self) -> str:
        return self.runner.arm64_reason

    @property
    def serial(self) -> str:
        return self.profile.serial

    def banner(self) -> str:
        props = self.profile.properties()
        keys = ("ro.product.name", "ro.product.model", "ro.product.device")
        return "device::" + "".join(f"{k}={props[k]};" for k in keys) + f"features={FEATURES}"

    # -- lifecycle
    def start(self) -> str:
        if self._started:
            return self.address
        self._started = True
        try:
            self.runner.start()
            self.model = Model(self.sandbox, self.profile, self._live_sessions)
            self.model.start()
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._thread = threading.Thread(target=loop.run_forever, name="emulated-adb", daemon=True)
            self._thread.start()
            self._call(self._listen())
        except OSError as e:
            self.stop()
            raise EmulatorError(f"cannot listen on {self.host}:{self.port}: {e.strerror}") from None
        except BaseException:
            self.stop()  # the namespace holder and the model thread must not outlive a failed start
            raise
        return self.address

    def stop(self) -> None:
        """Kill every command's process group, close everything; a temporary root is deleted."""
        if self._loop is not None:
            if self._loop.is_running():
                self._call(self._shutdown())
                self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join()
            self._loop.close()
            self._loop = None
        with self._sessions_lock:
            sids = set(self._sessions)
            self._sessions.clear()
        for sid in sids:
            kill_session(sid)
        if self.model is not None:
            self.model.stop()
            self.model = None
        self.runner.stop()
        if self._temp_root:
            shutil.rmtree(self.root, ignore_errors=True)
        self._started = False

    def drop(self, down_for: float | None = None) -> None:
        """Drop the transport now, as a pulled cable: sockets closed without CLSE, commands killed. New
        connections are refused for `down_for` seconds, or until restore() when None."""
        self._call(self._drop(down_for))

    def restore(self) -> None:
        """Listen again (on the same port) after drop()."""
        self._call(self._restore())

    def _background(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def energy_log(self) -> list[EnergySample]:
        """The model's true energy, one sample per ~100 ms tick, since this start (see read_energy_log)."""
        model = self.model  # stop() may clear it from another thread
        return model.energy_log() if model is not None else []

    def __enter__(self) -> EmulatedDevice:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, coro: Awaitable[Any]) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()  # type: ignore[arg-type]

    # -- on the loop
    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        self.address = f"{self.host}:{self.port}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        t = _Transport(self, reader, writer)
        task = asyncio.current_task()
        assert task is not None
        self._transports.add(t)
        self._accepting.add(task)
        try:
            await t.run()
        finally:
            self._transports.discard(t)
            self._accepting.discard(task)

    async def _drop(self, down_for: float | None) -> None:
        if self._server is not None:
            self._server.close()  # refuse: a phone that is gone does not accept connections
            self._server = None
        for t in list(self._transports):
            t.abort()
        if self._restore_handle is not None:
            self._restore_handle.cancel()
            self._restore_handle = None
        if down_for is not None:
            loop = asyncio.get_running_loop()
            self._restore_handle = loop.call_later(down_for, lambda: self._background(self._restore()))

    async def _restore(self) -> None:
        if self._server is None:
            await self._listen()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        services = [s.task for t in self._transports for s in t.streams.values() if s.task is not None]
        for t in list(self._transports):
            t.abort()  # cancels the services, whose cleanup kills their commands' groups
        await asyncio.gather(*services, return_exceptions=True)
        # An aborted connection's handler ends by itself (EOF); cancelling it makes asyncio's start_server log
        # the cancellation as an error on Python 3.11.
        await asyncio.gather(*self._accepting, return_exceptions=True)
        others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    def _next_stream_id(self) -> int:
        self._stream_id = self._stream_id % 0x7FFFFFFF + 1
        return self._stream_id

    def _live_sessions(self) -> set[int]:
        with self._sessions_lock:
            return set(self._sessions)

    # -- services
    def _service(self, name: str) -> Callable[[_Stream], Awaitable[None]] | None:
        if name.startswith("shell"):
            head, sep, cmd = name.partition(":")
            opts = head.split(",")
            if not sep or opts[0] != "shell" or not cmd.strip():
                return None  # an interactive shell needs a pty: not emulated
            mode = "v2" if "v2" in opts[1:] else "v1"
            return lambda s: self._command(s, cmd, mode)
        if name.startswith("exec:") and name[5:].strip():
            return lambda s: self._command(s, name[5:], "raw")
        if name == "sync:":
            return self._sync
        return None

    async def _command(self, stream: _Stream, cmd: str, mode: str) -> None:
        argv, env, cwd = self.runner.command(cmd)
        v2 = mode == "v2"
        spawn = asyncio.get_running_loop().create_task(asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if v2 else subprocess.STDOUT, env=env, cwd=cwd,
            start_new_session=True, limit=MAX_PAYLOAD))
        closed_early = False
        try:
            # A fast host (exec-in of a small file) may send its data and CLSE before the command exists; the
            # close must not abort the spawn, or that input is lost. It is handled below like any other close.
            try:
                proc = await asyncio.shield(spawn)
            except asyncio.CancelledError:
                proc = await spawn
                closed_early = True
        except OSError as e:
            # adbd reports a shell it cannot start on the stream, with 126 as the exit code.
            message = f"emulated_adb: cannot start {argv[0]}: {e.strerror}\n".encode()
            if v2:
                await stream.write(SH_HEADER.pack(SH_STDERR, len(message)) + message
                                   + SH_HEADER.pack(SH_EXIT, 1) + bytes([126]))
            else:
                await stream.write(message)
            return
        sid = proc.pid  # session leader: its pid is the session and the process group
        with self._sessions_lock:
            self._sessions.add(sid)
        self._arm_drop_rules(cmd, proc)
        stdin_task = asyncio.get_running_loop().create_task(self._pump_stdin(stream, proc, v2, cmd))
        finished = False
        try:
            if closed_early:
                return  # to the cleanup below, as for a close during the command
            pumps = [self._pump_output(stream, proc.stdout, SH_STDOUT if v2 else None)]
            if v2:
                pumps.append(self._pump_output(stream, proc.stderr, SH_STDERR))
            await asyncio.gather(*pumps)
            rc = await proc.wait()
            finished = True
            if v2:
                code = 0x80 | -rc if rc < 0 else rc & 0xFF  # adbd: 128 + signal for a killed command
                await stream.write(SH_HEADER.pack(SH_EXIT, 1) + bytes([code]))
        finally:
            try:
                if not finished and mode == "raw" and not stream.transport.dead:
                    await self._finish_exec(proc, stdin_task)
            finally:
                stdin_task.cancel()
            if not finished:
                # The host closed the stream or the transport went: kill the whole group.
                kill_session(sid)
                try:
                    await asyncio.shield(proc.wait())
                except asyncio.CancelledError:
                    pass
                self._forget_session(sid)
            elif not session_members({sid}):
                self._forget_session(sid)
            else:
                # Background children outlive the command (as on a phone); they still heat it, and stop() kills them.
                self._background(self._reap_session_later(sid))

    async def _finish_exec(self, proc: asyncio.subprocess.Process, stdin_task: asyncio.Task[None]) -> None:
        """`adb exec-in` ends its input by closing the stream (raw exec has no close-stdin packet): as adbd's
        socketpair does, the command gets the rest of its input and EOF, and a grace period to finish."""
        assert proc.stdout is not None
        stdout = proc.stdout

        async def drain() -> None:
            while await stdout.read(MAX_PAYLOAD):
                pass  # nobody is listening any more; keep the pipe moving
            await proc.wait()

        try:
            await asyncio.wait_for(asyncio.gather(stdin_task, drain()), timeout=EXEC_GRACE_S)
        except (TimeoutError, OSError):
            pass

    def _forget_session(self, sid: int) -> None:
        with self._sessions_lock:
            self._sessions.discard(sid)

    async def _reap_session_later(self, sid: int) -> None:
        while await asyncio.to_thread(session_members, {sid}):
            await asyncio.sleep(1.0)
        self._forget_session(sid)

    async def _pump_output(self, stream: _Stream, pipe: asyncio.StreamReader | None, packet_id: int | None) -> None:
        assert pipe is not None
        # A v2 packet never spans two WRTEs, so stdout and stderr packets may interleave safely.
        limit = stream.transport.max_payload - (SH_HEADER.size if packet_id is not None else 0)
        while True:
            data = await pipe.read(limit)
            if not data:
                return
            if packet_id is None:
                await stream.write(data)
            else:
                await stream.write(SH_HEADER.pack(packet_id, len(data)) + data)

    async def _pump_stdin(self, stream: _Stream, proc: asyncio.subprocess.Process, v2: bool, cmd: str) -> None:
        assert proc.stdin is not None
        stdin: asyncio.StreamWriter | None = proc.stdin
        buf = bytearray()

        async def feed(data: bytes) -> None:
            nonlocal stdin
            if stdin is None:
                return
            try:
                stdin.write(data)
                await stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                stdin = None  # the command closed its stdin; keep acknowledging the host

        while True:
            data = await stream.read()
            if not data:
                if stdin is not None:
                    stdin.close()  # EOF for exec:, whose host ends input by closing the stream
                return
            if not v2:
                await feed(data)
                continue
            buf += data
            while len(buf) >= SH_HEADER.size:
                packet_id, length = SH_HEADER.unpack_from(buf)
                if len(buf) < SH_HEADER.size + length:
                    break
                payload = bytes(buf[SH_HEADER.size:SH_HEADER.size + length])
                del buf[:SH_HEADER.size + length]
                if packet_id == SH_STDIN:
                    self._input_event(cmd, payload)
                    await feed(payload)
                elif packet_id == SH_CLOSE_STDIN and stdin is not None:
                    stdin.close()
                    stdin = None
                # SH_WINDOW and others: no pty here, nothing to resize

    def _input_event(self, cmd: str, payload: bytes) -> None:
        """Event-tied drop rules: count the stdin packets that match, drop the transport at the rule's count."""
        for rule in list(self._drop_rules):
            if rule.on_input is None or rule.text not in cmd or rule.on_input.encode() not in payload:
                continue
            self._inputs_seen[rule] = self._inputs_seen.get(rule, 0) + 1
            if self._inputs_seen[rule] == rule.count:
                self._drop_rules.remove(rule)
                print(f"emulated_adb: --drop-on {rule.text!r}@input={rule.on_input!r}#{rule.count}: dropping the "
                      "transport for good", file=sys.stderr, flush=True)
                self._background(self._drop(None))

    def _arm_drop_rules(self, cmd: str, proc: asyncio.subprocess.Process) -> None:
        loop = asyncio.get_running_loop()
        for rule in list(self._drop_rules):
            if rule.on_input is None and rule.text in cmd:
                def fire(rule: DropRule = rule) -> None:
                    if proc.returncode is None and rule in self._drop_rules:
                        self._drop_rules.remove(rule)
                        print(f"emulated_adb: --drop-on {rule.text!r}: dropping the transport for good",
                              file=sys.stderr, flush=True)
                        self._background(self._drop(None))
                loop.call_later(rule.seconds, fire)

    # -- sync
    async def _sync(self, stream: _Stream) -> None:
        reader = _ByteReader(stream)
        while True:
            try:
                head = await reader.readexactly(8)
            except _StreamClosedError:
                return
            cid, length = head[:4], struct.unpack_from("<I", head, 4)[0]
            if cid == b"QUIT":
                return
            if length > 4096:
                await _sync_fail(stream, "path too long")
                return
            path = (await reader.readexactly(length)).decode("utf-8", "surrogateescape")
            if cid == b"STAT":
                await stream.write(b"STAT" + struct.pack("<III", *_stat_triple(self.sandbox.host_path(path))))
            elif cid == b"LIST":
                await self._sync_list(stream, path)
            elif cid == b"RECV":
                if not await self._sync_recv(stream, path):
                    return
            elif cid == b"SEND":
                if not await self._sync_send(stream, reader, path):
                    return
            else:
                await _sync_fail(stream, f"unknown sync command {cid!r}")
                return

    async def _sync_list(self, stream: _Stream, path: str) -> None:
        host = self.sandbox.host_path(path)
        out = bytearray()
        names: list[str] = []
        if host is not None and host.is_dir():
            if posixpath.normpath("/" + path.lstrip("/")) == "/":
                names = [".", "..", *self.sandbox.ROOT_ENTRIES]
            else:
                try:
                    names = [".", "..", *sorted(os.listdir(host))]
                except OSError:
                    names = []
        for name in names:
            target = host if name in (".", "..") else self.sandbox.host_path(posixpath.join(path, name))
            mode, size, mtime = _stat_triple(target)
            if mode == 0:
                continue
            raw = name.encode("utf-8", "surrogateescape")
            out += b"DENT" + struct.pack("<IIII", mode, size, mtime, len(raw)) + raw
        out += b"DONE" + bytes(16)  # a whole dirent, as adbd sends
        await stream.write(out)

    async def _sync_recv(self, stream: _Stream, path: str) -> bool:
        host = self.sandbox.host_path(path)
        try:
            if host is None:
                raise FileNotFoundError(2, "No such file or directory")
            f = open(host, "rb")
        except OSError as e:
            await _sync_fail(stream, f"open failed: {e.strerror}")
            return False
        with f:
            out = bytearray()
            while True:
                try:
                    chunk = f.read(SYNC_DATA_MAX)
                except OSError as e:
                    await _sync_fail(stream, f"read failed: {e.strerror}")
                    return False
                if not chunk:
                    break
                out += b"DATA" + struct.pack("<I", len(chunk)) + chunk
                if len(out) >= stream.transport.max_payload:
                    await stream.write(out)
                    out = bytearray()
        out += b"DONE" + bytes(4)
        await stream.write(out)
        return True

    async def _sync_send(self, stream: _Stream, reader: _ByteReader, spec: str) -> bool:
        path, _, mode_text = spec.rpartition(",")
        if not path:
            path, mode_text = spec, "33188"
        try:
            mode = int(mode_text)
        except ValueError:
            mode = 0o100644
        target = self.sandbox.writable_path(path)
        error: str | None = None
        tmp: Path | None = None
        f = None
        if target is None:
            error = "couldn't create file: Permission denied"  # what a phone's shell user gets outside /data/local/tmp
        else:
            try:
                target.parent.mkdir(parents=True, exist_ok=True)  # fixed_push_mkdir
                if target.is_dir():
                    raise IsADirectoryError(21, "Is a directory")
                fd, name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
                tmp = Path(name)
                f = os.fdopen(fd, "wb")
            except OSError as e:
                error = f"couldn't create file: {e.strerror}"
        if error is not None:
            # adbd reports at once, then swallows the data the host keeps sending until DONE.
            await _sync_fail(stream, error)
        try:
            while True:
                head = await reader.readexactly(8)
                cid, n = head[:4], struct.unpack_from("<I", head, 4)[0]
                if cid == b"DATA":
                    if n > SYNC_DATA_MAX:
                        error = error or "data chunk too large"
                        await _sync_fail(stream, error)
                        return False
                    data = await reader.readexactly(n)
                    if f is not None and error is None:
                        f.write(data)
                elif cid == b"DONE":
                    if error is not None:
                        return False
                    assert f is not None and tmp is not None and target is not None
                    f.close()
                    f = None
                    os.chmod(tmp, stat.S_IMODE(mode) or 0o644)
                    os.utime(tmp, (n, n))
                    os.replace(tmp, target)  # a new inode: pushing over a running binary works, as on a phone
                    tmp = None
                    await stream.write(b"OKAY" + bytes(4))
                    return True
                else:
                    await _sync_fail(stream, f"invalid data message {cid!r}")
                    return False
        finally:
            if f is not None:
                f.close()
            if tmp is not None:
                tmp.unlink(missing_ok=True)


class _ByteReader:
    """The host packs sync messages into WRTEs of up to 1 MiB regardless of message boundaries: read a stream."""

    def __init__(self, stream: _Stream) -> None:
        self.stream = stream
        self.buf = bytearray()

    async def readexactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            data = await self.stream.read()
            if not data:
                raise _StreamClosedError
            self.buf += data
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out


async def _sync_fail(stream: _Stream, message: str) -> None:
    raw = message.encode()
    await stream.write(b"FAIL" + struct.pack("<I", len(raw)) + raw)


def _stat_triple(path: Path | None) -> tuple[int, int, int]:
    """(mode, size, mtime) as sync STAT reports it: lstat, zeros when missing."""
    if path is None:
        return 0, 0, 0
    try:
        st = os.lstat(path)
    except OSError:
        return 0, 0, 0
    return st.st_mode & 0xFFFFFFFF, st.st_size & 0xFFFFFFFF, int(st.st_mtime) & 0xFFFFFFFF


# ----------------------------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m devicelab.testing.emulated_adb",
                                description="An emulated Android phone speaking the device side of the ADB protocol.")
    p.add_argument("--port", type=int, default=0, help="TCP port (0: any free one; never 5037 or 5555-5585)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--root", type=Path, help="sandbox root, kept and reused (default: a temporary folder)")
    p.add_argument("--profile", type=Path, help="profile YAML (serial, props, clusters, thermal, battery...)")
    p.add_argument("--connect", action="store_true", help="run `adb connect` to the address once listening")
    p.add_argument("--drop-on", action="append", default=[], metavar="TEXT[@SECONDS]|TEXT@input=INPUT[#N]",
                   help="drop the transport for good when a command containing TEXT has run SECONDS (0.5), or when "
                        "such commands have received INPUT on stdin for the N-th time (1)")
    p.add_argument("--no-namespace", action="store_true", help="run commands with the host's /bin/sh, paths rewritten")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    wake_r = catch_signals()  # before the server's threads (the loop thread may be the one interrupted)
    device: EmulatedDevice | None = None
    try:
        profile = Profile.from_yaml(args.profile) if args.profile else Profile()
        rules = [DropRule.parse(spec) for spec in args.drop_on]
        device = EmulatedDevice(args.root, profile, host=args.host, port=args.port,
                                namespace=not args.no_namespace, drop_on=rules)
        address = device.start()
    except DevicelabError as e:
        print(f"emulated_adb: {e}", file=sys.stderr)
        if device is not None:
            device.stop()
        return 2
    print(address, flush=True)
    err = sys.stderr
    print(f"emulated_adb: listening on {address}; serial {profile.serial}; root {device.root}", file=err)
    print(f"emulated_adb: namespace {device.namespace_reason}", file=err)
    print(f"emulated_adb: arm64 binaries {device.arm64_reason}", file=err)
    if not device.namespace:
        print("emulated_adb: without a namespace, /data/local/tmp, /sys/ and /system/ in command text are rewritten "
              "to the root; paths inside files and programs are not", file=err)
    err.flush()
    if args.connect:
        from devicelab.devices.android import connect  # the driver's own `adb connect` (the server it starts)

        try:
            print(f"emulated_adb: adb connect: {connect(address).strip()}", file=err, flush=True)
        except OSError as e:
            print(f"emulated_adb: adb connect failed: {e}", file=err, flush=True)
    def drop() -> None:
        print("emulated_adb: SIGUSR1: transport dropped until SIGUSR2", file=err, flush=True)
        device.drop()

    def restore() -> None:
        print("emulated_adb: SIGUSR2: listening again", file=err, flush=True)
        try:
            device.restore()
        except OSError as e:
            print(f"emulated_adb: cannot listen again: {e}", file=err, flush=True)

    try:
        return serve_signals(wake_r, drop, restore)
    finally:
        device.stop()


if __name__ == "__main__":
    sys.exit(main())
