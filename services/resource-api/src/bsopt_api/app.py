"""Assemble the FastAPI app; connecting happens in its lifespan, never here.

``create_app(settings)`` builds the default runtime (:func:`bsopt_api.runtime.bootstrap`);
tests pass their own ``runtime`` (e.g. with a token source for the backend channels).
The lifespan starts the runtime and publishes its parts on ``app.state``:
``settings``, ``token_verifier`` (read by ``bsopt_common.security.fastapi``),
``session_factory``, ``backends``, ``hub``, ``ready``.

Hardening (``bsopt_common.http_security``): security headers on every HTTP response,
``Cache-Control: no-store`` on everything under ``/v1`` (user data), HSTS when
``public_url`` is https; Swagger UI at ``/docs`` from local assets (no CDN), authorizing
with the code flow + PKCE as the CLI's public client; the OpenAPI document is
:func:`bsopt_api.openapi.build_openapi`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI

from bsopt_api import models
from bsopt_api.api.deps import safe_path_params
from bsopt_api.api.routes import ROUTERS, sell_rules
from bsopt_api.config import ApiSettings
from bsopt_api.openapi import SCOPE_DESCRIPTIONS, build_openapi, origin
from bsopt_api.problems import install_problem_handlers
from bsopt_api.runtime import ApiRuntime, bootstrap
from bsopt_common.http_security import hsts_for, install_security_headers, install_swagger_ui
from bsopt_common.security.dpop import NonceIssuer, ResourceServerDPoP
from bsopt_common.security.dpop_store import DatabaseJtiStore

#: OAuth client Swagger UI authorizes as: a public client of its own (code flow + PKCE,
#: bearer tokens: the CLI's client requires DPoP proofs, which Swagger UI cannot sign).
DOCS_CLIENT_ID = "bsopt-docs"


def dpop_policy_for(settings: ApiSettings) -> ResourceServerDPoP:
    """RFC 9449 checks at this API: ``htu`` from ``public_url`` (behind the proxy; else the
    request's own URL), the optional server nonce; the replay store is a per-process cache
    until the app starts, then ``api.dpop_proof_jtis`` (shared by every replica)."""
    nonces = None
    if settings.dpop_nonce_required:
        secret = settings.dpop_nonce_secret.get_secret_value().encode() if settings.dpop_nonce_secret else None
        nonces = NonceIssuer(secret, settings.dpop_nonce_lifetime_seconds)
    return ResourceServerDPoP(public_base_url=settings.public_url, nonces=nonces,
                              max_age_seconds=settings.dpop_proof_max_age_seconds,
                              leeway_seconds=settings.token_leeway_seconds)


def create_app(settings: ApiSettings, *, runtime: ApiRuntime | None = None) -> FastAPI:
    runtime = runtime if runtime is not None else bootstrap(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        app.state.token_verifier = runtime.verifier
        app.state.session_factory = runtime.session_factory
        # DPoP replays are caught across replicas: seen jtis in the service's database
        app.state.dpop.jti_store = DatabaseJtiStore(runtime.session_factory, models.dpop_proof_jtis)
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
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.dpop = dpop_policy_for(settings)
    app.state.runtime = runtime
    app.state.hub = runtime.hub
    app.state.ready = False
    install_problem_handlers(app)
    for router in ROUTERS:
        app.include_router(router, dependencies=[Depends(safe_path_params)])
    app.include_router(sell_rules.router, dependencies=[Depends(safe_path_params)])

    def openapi() -> dict[str, Any]:
        return build_openapi(app, settings)

    app.openapi = openapi  # type: ignore[method-assign]
    install_swagger_ui(
        app,
        init_oauth={"clientId": DOCS_CLIENT_ID, "usePkceWithAuthorizationCodeGrant": True,
                    "scopes": " ".join(SCOPE_DESCRIPTIONS)},
        connect_src=[origin(settings.token_url)],
    )
    install_security_headers(app, hsts=hsts_for(settings.public_url), no_store_prefixes=("/v1",))
    return app
