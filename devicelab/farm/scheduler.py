"""`devicelab farm scheduler`: a Dask scheduler that never re-runs a task whose worker was lost."""

from __future__ import annotations

import asyncio
import signal
import sys


async def serve(host: str, port: int, tls: tuple[str, str, str] | None) -> None:
    """Serve until SIGTERM or SIGINT; the address is the first line on stdout (port 0: the OS picks one)."""
    import dask
    from distributed import Scheduler

    from devicelab.farm.security import security

    # allowed-failures 0: a task whose worker dies is erred at once (KilledWorker), never moved to another worker,
    # so a lost phone gives infra-failed rows and `devicelab run --resume` is the only re-run. Clients check it.
    # distributed always starts an HTTP server next to the scheduler: with no routes and a port of its own choosing
    # on the same host, it serves nothing (no dashboard, no metrics) to whoever reaches it.
    with dask.config.set({"distributed.scheduler.allowed-failures": 0, "distributed.scheduler.http.routes": []}):
        scheduler = Scheduler(host=host, port=port, protocol="tls" if tls else "tcp", security=security(tls),
                              dashboard=False, dashboard_address=f"{host}:0", allowed_failures=0)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(scheduler.close()))
    await scheduler
    print(scheduler.address, flush=True)
    print(f"devicelab farm scheduler at {scheduler.address} (allowed-failures {scheduler.allowed_failures}"
          f"{', TLS' if tls else ''})", file=sys.stderr, flush=True)
    await scheduler.finished()
