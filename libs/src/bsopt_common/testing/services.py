"""Run a service's ``serve(settings, stop)`` coroutine in a background thread with its
own event loop, for tests that talk to it over real sockets."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]  # (host, port) for AF_INET
        return port


def wait_for_port(port: int, timeout_seconds: float = 60.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout_seconds}s")


class ServiceThread:
    """``with ServiceThread(lambda stop: serve(settings, stop), port=...)``: started on
    enter (waits until ``port`` accepts), drained and joined on exit. A crash during
    start-up is re-raised in the test."""

    def __init__(self, serve: Callable[[asyncio.Event], Awaitable[None]], *, port: int | None = None,
                 ready: Callable[[], bool] | None = None, timeout_seconds: float = 60.0):
        self._serve = serve
        self.port = port
        self._ready = ready
        self._timeout = timeout_seconds
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await self._serve(self._stop)

        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced to the test thread
            self._error = exc

    def __enter__(self) -> ServiceThread:
        self._thread.start()
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            if self._error is not None:
                raise RuntimeError("service failed to start") from self._error
            if not self._thread.is_alive():
                raise RuntimeError("service exited during start-up")
            if self.port is not None:
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                        return self
                except OSError:
                    pass
            elif self._ready is not None and self._ready():
                return self
            time.sleep(0.05)
        raise TimeoutError("service did not become ready")

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)
        if self._error is not None and not isinstance(self._error, asyncio.CancelledError):
            raise RuntimeError("service failed") from self._error
