"""`devicelab farm agent`: on a host with phones, one Dask worker process per phone adb lists (its own process, so
one can die, or be killed, alone). Phones that appear later get a worker at the next scan; a worker that exits is
started again while its phone is attached."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Callable


class Agent:
    def __init__(self, scheduler: str, location: str, beat_s: float, scan_s: float,
                 tls: tuple[str, str, str] | None, log: Callable[[str], None]) -> None:
        self.scheduler, self.location, self.beat_s, self.scan_s, self.tls, self.log = \
            scheduler, location, beat_s, scan_s, tls, log
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self._stop = threading.Event()

    def argv(self, serial: str) -> list[str]:
        # -P: the worker imports the installed devicelab, never a checkout that happens to be the current folder
        argv = [sys.executable, "-P", "-m", "devicelab.farm.worker", "--scheduler", self.scheduler, "--serial", serial,
                "--db", self.location, "--beat-seconds", str(self.beat_s)]
        if self.tls:
            argv += ["--tls-ca", self.tls[0], "--tls-cert", self.tls[1], "--tls-key", self.tls[2]]
        return argv

    def scan(self) -> None:
        """Start a worker for each attached phone without a live one; say which workers ended."""
        from devicelab.devices import discovered

        for serial, proc in list(self.workers.items()):
            if proc.poll() is not None:
                self.log(f"worker {serial} (pid {proc.pid}) exited with code {proc.returncode}")
                del self.workers[serial]
        entries, notes = discovered(set())
        for entry in entries:
            if entry.id not in self.workers and not self._stop.is_set():
                # stdout is the worker's own business (its address line); its stderr is the agent's log
                proc = subprocess.Popen(self.argv(entry.id), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
                self.workers[entry.id] = proc
                self.log(f"worker {entry.id} started (pid {proc.pid})")
        for note in notes:
            self.log(f"note: {note}")

    def serve(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self._stop.set())
        try:
            while not self._stop.is_set():
                self.scan()
                self._stop.wait(self.scan_s)
        finally:
            self.stop()

    def stop(self) -> None:
        """Every worker this agent started, asked to close (each closes its phone), then killed if it hangs."""
        for proc in self.workers.values():
            if proc.poll() is None:
                proc.terminate()
        for serial, proc in self.workers.items():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            self.log(f"worker {serial} (pid {proc.pid}) stopped")
        self.workers.clear()
