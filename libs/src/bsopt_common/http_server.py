"""The one HTTP serve helper of the HTTP services (auth-server, resource-api): an ASGI app
behind uvicorn until ``stop`` is set, then a graceful drain.

uvicorn's own logging config is not installed (the process keeps the shared setup of
:func:`bsopt_common.telemetry.setup_logging`); in the main thread uvicorn also turns
SIGINT/SIGTERM into a drain itself. Needs the ``http`` extra of bsopt-libs.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn


async def serve_asgi(app: Any, stop: asyncio.Event, *, host: str, port: int, grace_seconds: float,
                     proxy_headers: bool = False) -> None:
    """Serve ``app`` on ``host:port`` until ``stop`` is set; then stop accepting and give
    in-flight requests ``grace_seconds`` (lifespan shutdown runs after them). Raises
    SystemExit when start-up fails (uvicorn's lifespan failure)."""
    config = uvicorn.Config(app, host=host, port=port, lifespan="on", log_config=None,
                            proxy_headers=proxy_headers, timeout_graceful_shutdown=max(1, round(grace_seconds)))
    server = uvicorn.Server(config)

    async def exit_on_stop() -> None:
        await stop.wait()
        server.should_exit = True

    watcher = asyncio.create_task(exit_on_stop())
    try:
        await server.serve()
    finally:
        watcher.cancel()
