"""Assemble the FastAPI app; connecting happens in its lifespan, never here.

``create_app(settings)`` builds the default runtime (:func:`bsopt_api.runtime.bootstrap`);
tests pass their own ``runtime`` (e.g. with a token source for the backend channels).
The lifespan starts the runtime and publishes its parts on ``app.state``:
``settings``, ``token_verifier`` (read by ``bsopt_common.security.fastapi``),
``session_factory``, ``backends``, ``hub``, ``ready``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from bsopt_api.api.routes import ROUTERS
from bsopt_api.config import ApiSettings
from bsopt_api.problems import install_problem_handlers
from bsopt_api.runtime import ApiRuntime, bootstrap


def create_app(settings: ApiSettings, *, runtime: ApiRuntime | None = None) -> FastAPI:
    runtime = runtime if runtime is not None else bootstrap(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        app.state.token_verifier = runtime.verifier
        app.state.session_factory = runtime.session_factory
        app.state.backends = runtime.backends
        app.state.ready = True
        try:
            yield
        finally:
            app.state.ready = False
            await runtime.stop()

    app = FastAPI(
        title="bsopt resource API",
        version="1",
        summary="Training jobs, paper accounts, scored trades, weekly digests and the coach WebSocket.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.runtime = runtime
    app.state.hub = runtime.hub
    app.state.ready = False
    install_problem_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    return app
