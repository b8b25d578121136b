"""`devicelab farm agent`: on a host with phones, one Dask worker process per device discovery lists — adb phones and
the iPhones usbmuxd lists — and, when asked, one for the host itself (each its own process, so one can die, or be
killed, alone). Each worker is told its device's kind and the options of the host's inventory entry that names it
(docs/farm.md). Devices that appear later get a worker at the next scan; a worker that exits is started again while
its device is attached."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections.abc import Callable

from devicelab.config import Inventory
from devicelab.facts import DeviceEntry


class Agent:
    def __init__(self, scheduler: str, location: str, beat_s: float, scan_s: float,
                 tls: tuple[str, str, str] | None, log: Callable[[str], None], inventory: Inventory | None = None,
                 host_device: str | None = None) -> None:
        self.scheduler, self.location, self.beat_s, self.scan_s, self.tls, self.log = \
            scheduler, location, beat_s, scan_s, tls, log
        self.inventory = inventory  # this host's devices.yaml: an iPhone's runner app and pair records live there
        self.host_device = host_device  # the id of a worker for this host itself (None: none)
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self._stop = threading.Event()

    def argv(self, entry: DeviceEntry) -> list[str]:
        # -P: the worker imports the installed devicelab, never a checkout that happens to be the current folder
        argv = [sys.executable, "-P", "-m", "devicelab.farm.worker", "--scheduler", self.scheduler, "--serial",
                entry.id, "--kind", entry.kind, "--options", json.dumps(entry.options, sort_keys=True),
                "--db", self.location, "--beat-seconds", str(self.beat_s)]
        if self.tls:
            argv += ["--tls-ca", self.tls[0], "--tls-cert", self.tls[1], "--tls-key", self.tls[2]]
        return argv

    def entries(self) -> tuple[list[DeviceEntry], list[str]]:
        """The devices attached to this host, each with the options of the inventory entry that names it by its
        serial or UDID (the discovered ones win: they say how it is attached now), and this host's own device when
        asked; notes on devices that are attached but unusable."""
        from devicelab.devices import discovered

        found, notes = discovered(set())
        entries = []
        for entry in found:
            listed = self.inventory.find(entry.id) if self.inventory is not None else None
            if listed is not None and listed.kind == entry.kind:
                entry = DeviceEntry(entry.id, entry.kind, {**listed.options, **entry.options})
            entries.append(entry)
        if self.host_device:
            entries.append(DeviceEntry(self.host_device, "host", {}))
        return entries, notes

    def scan(self) -> None:
        """Start a worker for each attached device without a live one; say which workers ended."""
        for serial, proc in list(self.workers.items()):
            if proc.poll() is not None:
                self.log(f"worker {serial} (pid {proc.pid}) exited with code {proc.returncode}")
                del self.workers[serial]
        entries, notes = self.entries()
        for entry in entries:
            if entry.id not in self.workers and not self._stop.is_set():
                # stdout is the worker's own business (its address line); its stderr is the agent's log
                proc = subprocess.Popen(self.argv(entry), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
                self.workers[entry.id] = proc
                self.log(f"worker {entry.id} ({entry.kind}) started (pid {proc.pid})")
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
