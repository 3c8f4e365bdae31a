"""Wire resource-api from settings and serve it: the app (:mod:`bsopt_api.app`) over
its runtime (:mod:`bsopt_api.runtime`), behind uvicorn, until ``stop``."""

from __future__ import annotations

import asyncio

import uvicorn

from bsopt_api.app import create_app
from bsopt_api.config import ApiSettings
from bsopt_api.runtime import ApiRuntime, bootstrap

__all__ = ["ApiRuntime", "bootstrap", "serve"]


async def serve(settings: ApiSettings, stop: asyncio.Event, *, runtime: ApiRuntime | None = None) -> None:
    """Serve the API on ``settings.host:settings.port`` until ``stop`` is set, then drain:
    stop accepting, close the coach sockets, give in-flight requests
    ``shutdown_grace_seconds``, stop the runtime (lifespan shutdown).

    The same entry point as the other services (``python -m``, tests' ServiceThread).
    Raises SystemExit when start-up fails (uvicorn's lifespan failure).
    """
    config = uvicorn.Config(
        create_app(settings, runtime=runtime),
        host=settings.host,
        port=settings.port,
        lifespan="on",
        log_config=None,  # keep the process's logging setup
        proxy_headers=True,
        timeout_graceful_shutdown=max(1, round(settings.shutdown_grace_seconds)),
    )
    server = uvicorn.Server(config)

    async def exit_on_stop() -> None:
        await stop.wait()
        server.should_exit = True

    watcher = asyncio.create_task(exit_on_stop())
    try:
        # In the main thread uvicorn also turns SIGINT/SIGTERM into should_exit itself.
        await server.serve()
    finally:
        watcher.cancel()
