"""The one way infra serves an aiohttp application: on a site (:func:`start_site`), in a daemon thread
beside the code under test (:class:`ThreadedServer`) or from a shell until a signal (:func:`serve_until_signalled`).

The fake OpenAI API and the AWS fault proxy both run so. A subclass says only how to serve
(:meth:`ThreadedServer._serving`); starting, waiting until it accepts connections, surfacing a failure
to start and stopping it cleanly are here, once. (The moto server is moto's own werkzeug thread:
:func:`infra.moto_server.start_moto`.)
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import AsyncIterator, Callable
from typing import Self

from aiohttp import web

__all__ = ["ThreadedServer", "serve_until_signalled", "serving_site", "start_site"]


async def start_site(
    app: web.Application, host: str, port: int, *, backlog: int = 1024, shutdown_timeout: float = 2.0
) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on ``host:port`` (0: a free port, chosen by the OS); the runner and the real port."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, backlog=backlog, reuse_address=True)
        await site.start()
        real_port = int(runner.addresses[0][1])  # the real port when port=0
    except BaseException:
        await runner.cleanup()
        raise
    return runner, real_port


@contextlib.asynccontextmanager
async def serving_site(
    app: web.Application,
    host: str,
    port: int,
    *,
    backlog: int = 1024,
    shutdown_timeout: float = 2.0,
    before_cleanup: Callable[[], None] = lambda: None,
) -> AsyncIterator[int]:
    """:func:`start_site` for the ``async with`` block (it yields the real port); ``before_cleanup``
    runs first on the way out (the fake releases its hanging requests so)."""
    runner, real_port = await start_site(app, host, port, backlog=backlog, shutdown_timeout=shutdown_timeout)
    try:
        yield real_port
    finally:
        before_cleanup()
        await runner.cleanup()


async def serve_until_signalled(
    serving: contextlib.AbstractAsyncContextManager[int], ready: Callable[[int], str]
) -> None:
    """A command line's server: open ``serving``, print ``ready(port)`` once it accepts connections,
    and serve until SIGINT or SIGTERM."""
    async with serving as port:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):  # Windows
                loop.add_signal_handler(sig, stop.set)
        print(ready(port), flush=True)
        await stop.wait()


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
