"""The controller's side of the host's zygotes (docs/architecture.md, "A fresh process per config, without the
import"): one long-lived Python process per (interpreter, pre-imported modules, environment) that forks the host
runner for each config. A child is driven exactly like an exec'd runner: its stdin, stdout and stderr are pipes
created here and handed to the zygote over a Unix socket; the zygote, its parent, reports when it exits.

A zygote is pinned to its configs' CPU set before its exec and has their environment, so its imports decide nothing
an exec'd runner's would not; an engine whose import was traced to read neither (Engine.zygote_any_cpus) has one
unpinned zygote per round instead, whose children pin themselves and take their thread count first. The pool tries the engine's full import first; when that import leaves a thread behind
(a fork would copy a process whose other thread may hold a lock), it falls back to a zygote that pre-imports numpy
only, and when even that is not single-threaded, to a fresh exec. Every Result says which path its runner took and
why.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import IO, Any

from devicelab.devices.base import Exit, Process, Start
from devicelab.measure import ChannelClosedError

ZYGOTE_MODULE = "devicelab.runners.zygote"
START_TIMEOUT_S = 120.0  # the imports of the heaviest engine on a loaded machine, with a wide margin
MAX_MESSAGE = 1 << 16
# What devicelab sets differently for configs of one engine (the thread count): a zygote shared by every CPU set and
# thread count starts without these, and each child sets its config's after the fork.
PER_CONFIG = ("OMP_NUM_THREADS",)


def _per_config(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k in PER_CONFIG}


class ZygoteError(OSError):
    """A zygote could not start or fork (the caller execs instead)."""


def _read_pump(fd: int, sink: Any, done: Any = None) -> None:
    with os.fdopen(fd, "rb", buffering=0) as f:
        for chunk in iter(lambda: f.read(65536), b""):
            sink(chunk)
    if done is not None:
        done()


class ZygoteChild(Process):
    """A runner forked by a zygote: pipes like an exec'd one; its exit comes from the zygote."""

    def __init__(self, zygote: Zygote, pid: int, stdin: int, stdout: int, stderr: int) -> None:
        super().__init__()
        self.zygote, self.pid = zygote, pid
        self._stdin: IO[bytes] | None = os.fdopen(stdin, "wb", buffering=0)
        self._partial = b""
        threading.Thread(target=_read_pump, args=(stdout, self._out, self._out_end), daemon=True).start()
        threading.Thread(target=_read_pump, args=(stderr, self._stderr), daemon=True).start()

    def _out(self, chunk: bytes) -> None:
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            self._line(line)

    def _out_end(self) -> None:
        if self._partial:
            self._line(self._partial)
        self._ended()

    def write(self, data: bytes) -> None:
        if self._stdin is None:
            raise ChannelClosedError("runner closed its input")
        try:
            self._stdin.write(data)
        except OSError:
            raise ChannelClosedError("runner closed its input") from None

    def close_stdin(self) -> None:
        if self._stdin is not None:
            try:
                self._stdin.close()
            except OSError:
                pass
            self._stdin = None

    def wait(self, timeout: float) -> Exit | None:
        deadline = time.monotonic() + timeout
        code = self.zygote.wait_child(self.pid, timeout)
        if code is None:
            return None
        if isinstance(code, str):
            # The zygote went, so nobody reports this child's exit: it has ended only once its pid is gone (it was
            # reparented); until then it is still running, and a caller that must be rid of it kills it.
            while _alive(self.pid):
                if time.monotonic() >= deadline:
                    return None
                time.sleep(0.05)
            return Exit(None, detail=f"its exit status is unknown: {code}")
        return Exit(128 - code, -code) if code < 0 else Exit(code)

    def kill(self) -> str:
        if self.zygote.exited(self.pid):
            self.close_stdin()
            return "it had already ended"
        try:
            os.killpg(self.pid, signal.SIGKILL)  # the child and whatever it started
        except (ProcessLookupError, PermissionError):
            try:  # not its own group yet (killed before its setsid): the child alone
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.wait(30.0)
        self.close_stdin()
        return "its process group was killed"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie nobody reaped yet has ended too
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@dataclass
class Zygote:
    """One zygote process and the dispatcher of its events."""

    python: str
    modules: tuple[str, ...]
    env: Mapping[str, str]
    cpus: tuple[int, ...] = ()
    proc: subprocess.Popen[bytes] = field(init=False)
    sock: socket.socket = field(init=False)
    ready: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()  # one fork request at a time
        self._cond = threading.Condition()
        self._replies: list[dict[str, Any]] = []
        self._exits: dict[int, int | str] = {}
        self._gone: str | None = None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock = ours
        # What the zygote prints (MNN announces the CPU's features at import) is kept for an error message.
        self._log = tempfile.TemporaryFile()
        # `python -m` puts its working folder first on sys.path: an empty one, so that a `devicelab` folder where the
        # user stands (a checkout) never shadows the installed package, as the run folder does for an exec'd runner.
        self._cwd = tempfile.mkdtemp(prefix="devicelab-zygote-")
        try:
            self.proc = subprocess.Popen([self.python, "-m", ZYGOTE_MODULE, str(theirs.fileno()), *self.modules],
                                         pass_fds=[theirs.fileno()], env=dict(self.env), stdin=subprocess.DEVNULL,
                                         stdout=self._log, stderr=self._log, start_new_session=True, cwd=self._cwd,
                                         preexec_fn=self._pin)
        except OSError as e:
            ours.close()
            os.rmdir(self._cwd)
            raise ZygoteError(f"could not start a zygote: {e}") from e
        finally:
            theirs.close()
        ours.settimeout(START_TIMEOUT_S)
        try:
            data = ours.recv(MAX_MESSAGE)
        except OSError as e:
            self._fail(f"the zygote did not say it was ready ({e})")
        if not data:
            self._fail("the zygote ended before it was ready")
        self.ready = json.loads(data)
        if self.ready.get("event") != "ready":
            self._fail(f"the zygote failed: {self.ready.get('message')}")
        ours.settimeout(None)
        if self.ready.get("forkable"):
            threading.Thread(target=self._dispatch, daemon=True).start()

    def _pin(self) -> None:
        # Pinned before exec, like an exec'd runner, so that the imports see the config's CPU set: libgomp (ncnn,
        # MNN) counts the CPUs it may use when it loads, and a count taken on more CPUs than the child will have
        # makes its waiting threads spin against each other (ncnn at 2 threads on 1 CPU: ~100x slower).
        if self.cpus:
            os.sched_setaffinity(0, self.cpus)

    def _fail(self, why: str) -> None:
        message = f"{why}{self._tail()}"
        self.close()
        raise ZygoteError(message)

    def _tail(self) -> str:
        try:
            self._log.seek(0)
            text = self._log.read()[-400:].decode(errors="replace").strip()
        except (OSError, ValueError):
            return ""
        return f": {text}" if text else ""

    def _dispatch(self) -> None:
        while True:
            try:
                data = self.sock.recv(MAX_MESSAGE)
            except OSError:
                data = b""
            with self._cond:
                if not data:
                    self._gone = f"the zygote (pid {self.proc.pid}) ended{self._tail()}"
                    self._cond.notify_all()
                    return
                event = json.loads(data)
                if event.get("event") == "exit":
                    self._exits[int(event["pid"])] = int(event["code"])
                else:
                    self._replies.append(event)
                self._cond.notify_all()

    def fork(self, argv: Sequence[str], cwd: str | None, cpus: Sequence[int] = (),
             env: Mapping[str, str] | None = None) -> ZygoteChild:
        """A child running the host runner with `argv` in `cwd`, pinned to `cpus` as the first thing it does, with the
        zygote's environment and `env` set in it (a shared zygote's children take their config's thread count)."""
        stdin_r, stdin_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        theirs, ours = (stdin_r, out_w, err_w), (stdin_w, out_r, err_r)
        try:
            with self._lock:
                message = json.dumps({"cmd": "fork", "argv": list(argv), "cwd": cwd, "cpus": [int(c) for c in cpus],
                                      "env": dict(env or {})}).encode()
                try:
                    socket.send_fds(self.sock, [message], list(theirs))
                except OSError as e:
                    raise ZygoteError(f"the zygote is gone ({e})") from e
                reply = self._reply(START_TIMEOUT_S)
        except BaseException:
            for fd in (*theirs, *ours):
                os.close(fd)
            raise
        for fd in theirs:
            os.close(fd)
        if reply.get("event") != "forked":
            for fd in ours:
                os.close(fd)
            raise ZygoteError(f"the zygote could not fork: {reply.get('message', reply)}")
        return ZygoteChild(self, int(reply["pid"]), *ours)

    def _reply(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._replies:
                if self._gone:
                    raise ZygoteError(self._gone)
                if not self._cond.wait(deadline - time.monotonic()) and time.monotonic() >= deadline:
                    raise ZygoteError("the zygote did not answer a fork request")
            return self._replies.pop(0)

    def exited(self, pid: int) -> bool:
        with self._cond:
            return pid in self._exits

    def wait_child(self, pid: int, timeout: float) -> int | str | None:
        """The child's exit code (negative: the signal that ended it), a reason when the zygote went, or None."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while pid not in self._exits:
                if self._gone:
                    return self._gone
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            return self._exits[pid]

    def close(self) -> None:
        self.shutdown()
        self.wait_closed()

    def shutdown(self) -> None:
        try:
            # shutdown, not just close: the dispatcher thread is blocked in recv on this socket, which keeps it open
            # (and the zygote waiting) until that recv returns; shutdown ends both at once.
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()  # the zygote exits when its socket closes

    def wait_closed(self) -> None:
        proc = getattr(self, "proc", None)
        if proc is not None:
            try:
                proc.wait(5.0)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self._log.close()
        shutil.rmtree(self._cwd, ignore_errors=True)


class ZygotePool:
    """The zygotes of one transport, by (interpreter, engine imports, environment, CPU set, repeat round); for an
    engine whose import reads neither environment nor CPU set, by (interpreter, engine imports, repeat round)."""

    def __init__(self) -> None:
        self._zygotes: dict[tuple[Any, ...], Zygote | None] = {}
        self._notes: dict[tuple[Any, ...], Start] = {}
        # Shared zygotes found unfit (an OpenMP runtime mapped), by their key without the round: why. Kept across
        # rounds: the engine's build does not change within a run, so later rounds go straight to pinned zygotes.
        self._split: dict[tuple[Any, ...], str] = {}
        self._lock = threading.Lock()

    def spawn(self, python: str, module_argv: Sequence[str], env: Mapping[str, str], cwd: str | None,
              preload: Sequence[str], key: Mapping[str, str], cpus: Sequence[int] = (), generation: int = 0,
              any_cpus: bool = False) -> tuple[ZygoteChild, Start] | Start:
        """A forked runner, or how it must start instead (exec, with the reason). `env` is the zygote's whole
        environment; `key` the part that devicelab sets per config (OMP_NUM_THREADS: libgomp reads it when it loads,
        at the engine's import) and `cpus` the config's CPU set (the zygote imports pinned to it), which pick the
        zygote: nothing an import decides from either differs from an exec'd runner's.

        `any_cpus` (Engine.zygote_any_cpus: the engine's import was shown to read neither): one zygote serves every
        CPU set and thread count of the round. It starts unpinned and without PER_CONFIG's variables, so that no
        import can see a config's values at all; each child pins itself and sets its PER_CONFIG variables first thing
        after the fork. If that zygote maps an OpenMP runtime after all (another build of the engine), it is closed and every
        config of the engine gets a pinned zygote of its own, with a note saying why."""
        # `generation`: the repeat round. Children of one zygote share its libraries' layout and hash seed, so the
        # processes of one config in different rounds must come from different zygotes, as fresh execs would: a new
        # round closes the last one's zygotes and starts its own.
        self._new_round(generation)
        note = self._shared(python, preload, env, key, generation) if any_cpus else None
        if any_cpus and note is None:
            zkey, child_env = self._shared_key(python, preload, key, generation), _per_config(key)
        else:
            zkey, child_env = self.key(python, preload, key, cpus, generation), {}
            with self._lock:
                if zkey not in self._zygotes:
                    self._zygotes[zkey], self._notes[zkey] = self._start(python, tuple(preload), env, tuple(cpus))
        with self._lock:
            zygote, start = self._zygotes[zkey], self._notes[zkey]
        if note is not None:
            start = replace(start, note="; ".join(n for n in (note, start.note) if n))
        if zygote is None:
            return start
        try:
            return zygote.fork(module_argv, cwd, cpus, child_env), start
        except ZygoteError as e:
            with self._lock:
                self._zygotes[zkey] = None
                self._notes[zkey] = Start("exec", (), f"started afresh: {e}")
            zygote.close()
            return self._notes[zkey]

    def _shared(self, python: str, preload: Sequence[str], env: Mapping[str, str], key: Mapping[str, str],
                generation: int) -> str | None:
        """Make sure the round's shared zygote exists (unpinned, without PER_CONFIG's variables); None when it can
        serve, else why this engine's zygotes are pinned instead (it maps an OpenMP runtime)."""
        zkey = self._shared_key(python, preload, key, generation)
        with self._lock:
            if zkey not in self._zygotes and zkey[:-1] not in self._split:
                z, start = self._start(python, tuple(preload), {k: v for k, v in env.items() if k not in PER_CONFIG},
                                       ())
                openmp = z.ready.get("openmp") if z is not None else None
                if z is not None and openmp:
                    z.close()
                    self._split[zkey[:-1]] = (f"the engine's import maps an OpenMP runtime ({', '.join(openmp)}), "
                                              "so its zygotes are pinned to each config's CPU set")
                else:
                    self._zygotes[zkey] = z
                    self._notes[zkey] = replace(start, any_cpus=True) if z is not None else start
            return self._split.get(zkey[:-1])

    def _shared_key(self, python: str, preload: Sequence[str], key: Mapping[str, str], generation: int
                    ) -> tuple[Any, ...]:
        """A shared zygote's key: what every config of the engine has in common (no CPU set, no PER_CONFIG); the
        round last, as in every key (`_split` holds it without the round)."""
        common = {k: v for k, v in key.items() if k not in PER_CONFIG}
        return self.key(python, preload, common, None, generation)

    @staticmethod
    def key(python: str, preload: Sequence[str], key: Mapping[str, str], cpus: Sequence[int] | None, generation: int
            ) -> tuple[Any, ...]:
        """cpus None: any CPU set (a shared zygote)."""
        return (python, tuple(preload), tuple(sorted(key.items())), "any" if cpus is None else tuple(sorted(cpus)),
                generation)

    def _new_round(self, generation: int) -> None:
        with self._lock:
            stale = [k for k in self._zygotes if k[-1] != generation]
            old = [z for k in stale if (z := self._zygotes.pop(k)) is not None]
            for k in stale:
                self._notes.pop(k, None)
        for z in old:
            z.close()

    @staticmethod
    def _start(python: str, preload: tuple[str, ...], env: Mapping[str, str], cpus: tuple[int, ...]
               ) -> tuple[Zygote | None, Start]:
        """The lightest-touch zygote that is single-threaded after its imports: the engine's, else numpy's only."""
        why: list[str] = []
        for modules in dict.fromkeys((preload, preload[:1])):
            try:
                z = Zygote(python, modules, env, cpus)
            except ZygoteError as e:
                why.append(str(e))
                break
            if z.ready.get("forkable"):
                note = None
                if why:
                    note = f"{why[-1]}: the engine is imported after the fork, in the child, pinned"
                return z, Start("zygote", tuple(z.ready.get("preloaded") or modules), note)
            why.append(f"importing {z.ready.get('after')} leaves {z.ready.get('threads')} threads")
            z.close()
        return None, Start("exec", (), f"started afresh: {'; '.join(why)}")

    def close(self) -> None:
        with self._lock:
            zygotes = [z for z in self._zygotes.values() if z is not None]
            self._zygotes.clear()
        for z in zygotes:  # all told first, then waited for: they exit together
            z.shutdown()
        for z in zygotes:
            z.wait_closed()
