"""The emulated devices' command-line loop: SIGTERM/SIGINT stop, SIGUSR1 drops the device (a pulled cable) and
SIGUSR2 brings it back."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable


def catch_signals() -> int:
    """From now on SIGTERM, SIGINT, SIGUSR1 and SIGUSR2 arrive as bytes on a pipe, whose read end is returned. Call
    it in the main thread before any server thread starts (and before the address is announced, so that a signal
    sent right after never meets the default action): only the main thread reads the pipe, so a server thread is
    never the one a signal interrupts."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, lambda *_: None)
    return wake_r


def serve_signals(wake_r: int, drop: Callable[[], None], restore: Callable[[], None]) -> int:
    """`drop` on SIGUSR1, `restore` on SIGUSR2, until SIGTERM or SIGINT; then 0 (the exit code)."""
    while True:
        try:
            got = os.read(wake_r, 64)
        except InterruptedError:
            continue
        for signum in got:
            if signum in (signal.SIGTERM, signal.SIGINT):
                return 0
            if signum == signal.SIGUSR1:
                drop()
            elif signum == signal.SIGUSR2:
                restore()
