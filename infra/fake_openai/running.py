"""The fake OpenAI API in a daemon thread: :func:`serve_in_thread`, for the tests, the demo and the benchmark."""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

from infra.fake_openai.auth import KeyCheck
from infra.fake_openai.config import FakeOpenAIConfig
from infra.fake_openai.server import app_batch_stats, app_closing, app_key_check, app_state, create_app
from infra.threaded_server import ThreadedServer, serving_site

__all__ = ["RunningFakeOpenAI", "serve_in_thread"]

_T = TypeVar("_T")


class RunningFakeOpenAI(ThreadedServer):
    """A fake OpenAI API running on its own event loop in a daemon thread (see :func:`serve_in_thread`)."""

    what = "the fake OpenAI API"
    thread_name = "fake-openai"

    def __init__(self, config: FakeOpenAIConfig | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.config = config or FakeOpenAIConfig()
        self.app = create_app(self.config)
        self.state = app_state(self.app)
        self.keys: KeyCheck = app_key_check(self.app)

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What to give ``openai.AsyncOpenAI(base_url=...)``: ``http://HOST:PORT/v1``."""
        return f"{self.root_url}/v1"

    def _call(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` on the server's loop (so it sees consistent state) and return its result."""
        loop = self._loop
        if loop is None or not loop.is_running() or threading.current_thread() is self._thread:
            return fn()
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def call() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:  # pragma: no cover - fn does not raise
                future.set_exception(exc)

        try:
            loop.call_soon_threadsafe(call)
        except RuntimeError:  # the loop closed in between
            return fn()
        return future.result(timeout=10)

    def stats(self) -> dict[str, Any]:
        """The ``GET /stats`` counters, read directly."""
        return self._call(
            lambda: {**self.state.snapshot(), "batch_api": app_batch_stats(self.app), "auth": self.keys.stats()}
        )

    def reset(self) -> None:
        """Same as ``POST /stats/reset``."""
        self._call(self.state.reset)

    @contextlib.asynccontextmanager
    async def _serving(self) -> AsyncIterator[None]:
        release = app_closing(self.app).set
        async with serving_site(self.app, self.host, self.port, backlog=4096, before_cleanup=release) as self.port:
            yield


@contextlib.contextmanager
def serve_in_thread(
    config: FakeOpenAIConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> Iterator[RunningFakeOpenAI]:
    """Run a fake OpenAI API in a daemon thread for the duration of the ``with`` block.

    >>> with serve_in_thread(FakeOpenAIConfig(rpm=60)) as server:  # doctest: +SKIP
    ...     client = openai.AsyncOpenAI(base_url=server.base_url, api_key="sk-local")
    """
    server = RunningFakeOpenAI(config, host=host, port=port).start()
    try:
        yield server
    finally:
        server.stop()
