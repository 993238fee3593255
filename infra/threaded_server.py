"""A local aiohttp server on its own event loop in a daemon thread: started, ready, stopped.

The fake OpenAI API and the AWS fault proxy both run so, beside the code under test in one process.
A subclass says only how to serve (:meth:`ThreadedServer._serving`); starting, waiting until it
accepts connections, surfacing a failure to start and stopping it cleanly are here, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Self

__all__ = ["ThreadedServer"]


class ThreadedServer:
    """Subclasses set :attr:`what` (for messages) and :attr:`thread_name`, and implement :meth:`_serving`."""

    what = "the server"
    thread_name = "server"

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port  # 0: any free port; the real one once started
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def _serving(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Serve (setting :attr:`port`) while the context is open; clean up on exit."""
        raise NotImplementedError

    def start(self, timeout: float = 10.0) -> Self:
        if self._thread is not None:
            raise RuntimeError(f"{self.what} was already started")
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"{self.what} did not start within {timeout}s")
        if self._error is not None:
            self._thread.join()
            raise RuntimeError(f"{self.what} failed to start") from self._error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return
        if loop is not None and stop is not None and thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(stop.set)
        thread.join(timeout)
        if thread.is_alive():
            raise RuntimeError(f"{self.what} thread did not stop within {timeout}s")
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._serve_until_stopped())
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()

    async def _serve_until_stopped(self) -> None:
        self._stop = asyncio.Event()
        try:
            async with self._serving():
                self._loop = asyncio.get_running_loop()
                self._ready.set()
                await self._stop.wait()
        finally:
            self._loop = None
