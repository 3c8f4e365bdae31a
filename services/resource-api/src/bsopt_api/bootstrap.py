"""Wire resource-api from settings and serve it: the app (:mod:`bsopt_api.app`) over
its runtime (:mod:`bsopt_api.runtime`), behind uvicorn, until ``stop``."""

from __future__ import annotations

import asyncio

from bsopt_api.app import create_app
from bsopt_api.config import ApiSettings
from bsopt_api.runtime import ApiRuntime, bootstrap
from bsopt_common.http_server import serve_asgi

__all__ = ["ApiRuntime", "bootstrap", "serve"]


async def serve(settings: ApiSettings, stop: asyncio.Event, *, runtime: ApiRuntime | None = None) -> None:
    """Serve the API on ``settings.host:settings.port`` until ``stop`` is set, then drain:
    stop accepting, close the coach sockets, give in-flight requests
    ``shutdown_grace_seconds``, stop the runtime (lifespan shutdown).

    The same entry point as the other services (``python -m``, tests' ServiceThread).
    Raises SystemExit when start-up fails (uvicorn's lifespan failure).
    """
    await serve_asgi(create_app(settings, runtime=runtime), stop, host=settings.host, port=settings.port,
                     grace_seconds=settings.shutdown_grace_seconds, proxy_headers=True)
