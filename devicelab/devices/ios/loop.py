"""One asyncio event loop per iPhone, in a thread of its own, behind the synchronous transport: pymobiledevice3 11
is asyncio-only, and the session is synchronous. Coroutines are handed over with `asyncio.run_coroutine_threadsafe`
and waited for with a timeout; nothing async leaves this module."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class DeviceLoop:
    """A daemon thread running one event loop; `run(coro, timeout)` waits for a coroutine's result there."""

    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def thread_alive(self) -> bool:
        return self._thread.is_alive()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """The coroutine's result; TimeoutError (the coroutine is cancelled) when it takes longer than `timeout`."""
        if self._closed:
            coro.close()
            raise RuntimeError("the device's event loop is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"no answer from the iPhone within {timeout:g} s") from None

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start a coroutine that runs on (a reader, a sampler); its Future says when it ended."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def call_soon(self, callback: Callable[[], Awaitable[Any] | None]) -> None:
        self._loop.call_soon_threadsafe(callback)

    def close(self, timeout: float = 5.0) -> None:
        """Cancel what still runs there and stop the thread; a second call does nothing."""
        if self._closed:
            return
        self._closed = True

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(cancel_all(), self._loop).result(timeout)
        except (concurrent.futures.TimeoutError, RuntimeError):
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._loop.close()
