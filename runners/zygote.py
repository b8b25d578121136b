"""A zygote: one long-lived Python process per (interpreter, engine, environment) that imports numpy and the engine
once, then forks a fresh child per config. The child is devicelab's host runner (devicelab.runners.host) in its own
address space, heap and thread pools, with a cold first inference; only the interpreter's start and the imports are
shared (and with them the libraries' layout and the hash seed: the controller starts new zygotes for every repeat
round). docs/architecture.md, "the host's zygotes", describes the design; the control channel is below.

`python -m devicelab.runners.zygote FD MODULE...`: FD is a SOCK_SEQPACKET Unix socket to the controller (one message
per send, so a message and the file descriptors sent with it arrive together).

Forking is only safe from a single-threaded process (a thread holding a lock at fork time leaves that lock held
forever in the child), so the zygote counts its threads after every import; when an import starts a thread the
zygote says so and exits, and the controller starts a zygote that pre-imports less (or execs afresh). OpenBLAS starts
a pool at numpy's import unless OPENBLAS_NUM_THREADS=1 is set: the controller sets it (BLAS is on no timed path).
"""

from __future__ import annotations

import array
import importlib
import io
import json
import os
import re
import selectors
import signal
import socket
import sys
import time
from typing import Any

MAX_MESSAGE = 1 << 16


def threads() -> int:
    """This process's threads now (Linux: /proc/self/task); 0 when it cannot tell (then it never forks)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 0


PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
MADV_POPULATE_READ = 22  # Linux 5.14+: fault pages in as a read would, without reading them from Python
CHUNK_PAGES = 4096  # pagemap entries read at once: 32 KiB


_WANTED = bytes(ord("1") if b & 0xA0 == 0xA0 else ord("0") for b in range(256))
_RUN = re.compile(b"1+")


def resident_file_pages() -> array.array:
    """(address, length) runs of file-backed pages this process has mapped now (/proc/self/pagemap: present, and
    a file page rather than a copy-on-write one), e.g. the libraries' code the imports ran, as one flat array
    (address, length, address, length, ...).

    A forked child inherits the parent's anonymous pages in its page tables, but not its clean file pages: it would
    map those again only when it touches them, so its RSS would miss what a fresh process pays for its own imports.
    The child maps these runs again (`map_again`), and its RSS before load is then a fresh process's after the same
    imports (docs/architecture.md).

    Bytes and a regular expression, not numpy: numpy code run here would be resident in the zygote and so mapped
    again in every child, pages a fresh runner never touches before its load (~0.4 MB of numpy's core library,
    measured)."""
    runs = array.array("q")
    with open("/proc/self/maps") as maps, open("/proc/self/pagemap", "rb", buffering=0) as pagemap:
        for line in maps:
            fields = line.split()
            if len(fields) < 6 or fields[4] == "0" or not fields[1].startswith("r"):
                continue  # anonymous, or not readable (guard pages)
            start, end = (int(x, 16) for x in fields[0].split("-"))
            # In pieces below glibc's mmap threshold (128 KiB): a freed mmap'd block would raise the threshold, and
            # the children would inherit an allocator that places the engine's large buffers differently from a
            # fresh process's (peak RSS moved by ~5 MB for ONNX Runtime).
            for lo in range(start, end, CHUNK_PAGES * PAGE):
                hi = min(end, lo + CHUNK_PAGES * PAGE)
                pagemap.seek(lo // PAGE * 8)
                # Each entry is 8 little-endian bytes; its top byte holds bit 63 (present) and bit 61 (file page or
                # shared). One byte per page, mapped to b"1" when both are set: runs are then runs of b"1".
                flags = pagemap.read((hi - lo) // PAGE * 8)[7::8].translate(_WANTED)
                for found in _RUN.finditer(flags):
                    runs.extend((lo + found.start() * PAGE, (found.end() - found.start()) * PAGE))
    return runs


_OPENMP = re.compile(r"/(lib(?:gomp|iomp5|omp)[^/\s]*\.so[^/\s]*)$")


def openmp_runtimes() -> list[str]:
    """The OpenMP runtimes this process has mapped (libgomp, Intel's libiomp5, LLVM's libomp): each reads the CPU set
    and OMP_NUM_THREADS when it loads, so a zygote that maps one must be pinned to its configs' set."""
    found: set[str] = set()
    with open("/proc/self/maps") as maps:
        for line in maps:
            m = _OPENMP.search(line.rstrip("\n"))
            if m:
                found.add(m.group(1))
    return sorted(found)


def resident_bytes(runs: array.array) -> int:
    return sum(runs[1::2])


def map_again(runs: array.array) -> None:
    """In the child: map the zygote's resident file pages again (MADV_POPULATE_READ; else read a byte of each)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    for address, length in zip(runs[0::2], runs[1::2]):
        if libc.madvise(address, length, MADV_POPULATE_READ) != 0:
            for page in range(address, address + length, PAGE):
                ctypes.string_at(page, 1)


def _send(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.send(json.dumps(message).encode())


def _child(request: dict[str, Any], fds: list[int], zygote_fds: list[int], import_s: float, preloaded: list[str],
           resident: array.array) -> int:
    """In the forked child: become the runner for one config, on the controller's pipes."""
    # Pinned before anything else runs here (the page mapping below, its page tables, the runner): a shared zygote
    # is not pinned, and its child must not work on a CPU another config may be timing on.
    if request.get("cpus") and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, [int(c) for c in request["cpus"]])
    os.setsid()  # its own process group: the controller kills the runner and whatever it started, as with exec
    for target, fd in zip((0, 1, 2), fds):
        os.dup2(fd, target)
    for fd in (*fds, *zygote_fds):  # the zygote's socket, wake-up pipe and selector are not the runner's
        os.close(fd)
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    # Fresh text streams on the new descriptors (the zygote's own were /dev/null and a log file).
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", write_through=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8", write_through=True)
    map_again(resident)
    # The config's own variables (its thread count), which a zygote shared by several thread counts did not have;
    # through os.environ, so both Python and the C libraries' getenv see them from here on.
    os.environ.update({str(k): str(v) for k, v in (request.get("env") or {}).items()})
    if request.get("cwd"):
        os.chdir(request["cwd"])
    from devicelab.runners import host

    # The runner pins itself (its config's cpus) again, as after an exec; what was imported before the fork is timed
    # by the zygote and reported as part of import_s.
    return host.main(list(request.get("argv") or []), start={"exec_path": "zygote", "preimport_s": import_s,
                                                                 "preloaded": preloaded})


def serve(sock: socket.socket, modules: list[str]) -> int:
    # devicelab's own modules first, so that a child never pays for them (pure Python, no threads), and in the exec'd
    # runner's order: it imports them before numpy and the engine. The heap the child inherits then holds what a fresh
    # runner's holds at the same point, laid out alike. Engine first, OpenVINO's children started with 568 KiB more
    # heap (RSS before load +1-2 %: docs/architecture.md, "the host's zygotes"); in the exec'd runner's order the heap
    # was within 20-110 KiB of a fresh runner's. (The engine's plug-in module, devicelab.engines.NAME, which the
    # exec'd runner imports before numpy, is imported in the child: the zygote is keyed by modules, not by engine.)
    for name in ("devicelab.runners.host", "devicelab.engines"):
        importlib.import_module(name)
    preloaded: list[str] = []
    n = threads()
    if n != 1:  # never blame numpy for a thread devicelab's own modules started
        _send(sock, {"event": "ready", "forkable": False, "threads": n, "after": "devicelab.engines",
                     "preloaded": preloaded, "import_s": 0.0, "pid": os.getpid()})
        return 0
    t0 = time.perf_counter()
    for name in modules:
        importlib.import_module(name)
        preloaded.append(name)
        n = threads()
        if n != 1:
            _send(sock, {"event": "ready", "forkable": False, "threads": n, "after": name, "preloaded": preloaded,
                         "import_s": time.perf_counter() - t0, "pid": os.getpid()})
            return 0
    import_s = time.perf_counter() - t0
    openmp = openmp_runtimes()  # before the scan: whatever it touches is then among the pages a child maps again
    resident = resident_file_pages()
    n = threads()
    _send(sock, {"event": "ready", "forkable": n == 1, "resident_bytes": resident_bytes(resident), "threads": n,
                 "after": preloaded[-1] if preloaded else "devicelab.engines", "openmp": openmp,
                 "preloaded": preloaded, "import_s": import_s, "pid": os.getpid()})
    if n != 1:
        return 0

    # SIGCHLD wakes the loop through a pipe (no thread may exist here: the next fork must find one).
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children: set[int] = set()
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    sel.register(wake_r, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select():  # no timeout: an idle zygote never wakes beside a timed loop (SIGCHLD does)
            if key.fileobj is wake_r:
                try:
                    os.read(wake_r, 4096)
                except BlockingIOError:
                    pass
                continue
            try:
                data, fds, _flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, 3)
            except InterruptedError:
                continue
            if not data:  # the controller is gone: so is the zygote (its children notice their stdin closing)
                os._exit(0)  # nothing to flush, and the engines' teardown at exit is nobody's business
            request = json.loads(data)
            if request.get("cmd") != "fork" or len(fds) != 3:
                for fd in fds:
                    os.close(fd)
                _send(sock, {"event": "error", "message": f"bad request {data[:200]!r} with {len(fds)} descriptors"})
                continue
            n = threads()
            if n != 1:  # never fork from a process that has grown a thread since it said it was ready
                for fd in fds:
                    os.close(fd)
                _send(sock, {"event": "error", "message": f"the zygote has {n} threads: it cannot fork safely"})
                continue
            pid = os.fork()
            if pid == 0:
                code = 70
                try:
                    code = _child(request, fds, [sock.fileno(), wake_r, wake_w, sel.fileno()], import_s, preloaded,
                                  resident)
                except BaseException:  # noqa: BLE001 - said on the child's stderr (the row's tail), then exit 70
                    import traceback

                    traceback.print_exc()
                finally:
                    for stream in (sys.stdout, sys.stderr):
                        try:
                            stream.flush()
                        except (OSError, ValueError):
                            pass
                    os._exit(code)  # never the zygote's own exit path (its selector, its socket)
            for fd in fds:
                os.close(fd)
            children.add(pid)
            _send(sock, {"event": "forked", "pid": pid, "id": request.get("id")})
        # Reap every child that ended and say how (the controller is not their parent, so it cannot wait on them).
        for pid in list(children):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                children.discard(pid)
                continue
            if done:
                children.discard(pid)
                _send(sock, {"event": "exit", "pid": pid, "code": os.waitstatus_to_exitcode(status)})


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    sock = socket.socket(fileno=int(argv[0]))
    try:
        return serve(sock, argv[1:])
    except BrokenPipeError:  # the controller went away
        return 0
    except Exception as e:  # noqa: BLE001 - the controller must learn why, then fall back to exec
        try:
            _send(sock, {"event": "error", "message": f"{type(e).__name__}: {e}", "fatal": True})
        except OSError:
            pass
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
