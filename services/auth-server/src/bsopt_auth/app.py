"""FastAPI assembly. ``create_app`` builds the application; nothing connects until the
first request (or the lifespan start, which makes sure a signing key exists).

Hardening (``bsopt_common.http_security``): security headers on every response, ``Cache-
Control: no-store`` on the authorization, token and UserInfo responses, HSTS when the
issuer is https; the OpenAPI document (:mod:`bsopt_auth.openapi`) at ``/openapi.json``
and Swagger UI at ``/docs`` from local assets (no CDN).

CORS: only the token endpoint, and only for ``token_endpoint_cors_origins`` (none by
default): a browser page of another origin running a public client's code flow (resource-
api's Swagger UI) may POST the code exchange there. The preflight allows ``POST`` with
``Content-Type`` and ``X-Requested-With`` (Swagger UI sends both) and never credentials;
every other path, and every other origin, gets no CORS headers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import Engine, text
from starlette.concurrency import run_in_threadpool
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from bsopt_auth import __version__, audit
from bsopt_auth.admin import ADMIN_AUDIENCE, AdminError
from bsopt_auth.config import AuthSettings
from bsopt_auth.openapi import build_openapi
from bsopt_auth.rfc7517 import ensure_active_key
from bsopt_auth.routes import admin as admin_routes
from bsopt_auth.routes import authorize, client_keys, device, discovery, logout, revocation, token, userinfo
from bsopt_auth.routes.state import AppState
from bsopt_auth.routes.token import TOKEN_ENDPOINT_PATH, TokenEndpoint
from bsopt_common.db import make_session_factory
from bsopt_common.http_security import hsts_for, install_security_headers, install_swagger_ui
from bsopt_common.security.jwt import AccessTokenVerifier, JWKSCache

log = logging.getLogger(__name__)

#: The verifier fetches this server's own JWKS in-process; the host is never resolved.
_SELF_JWKS_URL = "http://auth-server.internal/.well-known/jwks.json"


def _self_verifier(app: FastAPI, settings: AuthSettings) -> tuple[AccessTokenVerifier, httpx.AsyncClient]:
    """The shared RFC 9068 verifier, for tokens whose audience is this issuer (UserInfo).
    No refetch rate limit: an unknown kid costs one in-process JWKS read."""
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), timeout=5.0)
    jwks = JWKSCache(_SELF_JWKS_URL, http_client=client, min_refetch_interval_seconds=0)
    verifier = AccessTokenVerifier(
        settings.issuer, settings.issuer, jwks, leeway_seconds=settings.token_leeway_seconds
    )
    return verifier, client




class TokenEndpointCORS:
    """Starlette's :class:`CORSMiddleware` for :data:`TOKEN_ENDPOINT_PATH` alone, for the
    listed origins (no wildcard, no credentials); every other path passes through as is."""

    def __init__(self, app: ASGIApp, *, allow_origins: Sequence[str]) -> None:
        if not allow_origins or "*" in allow_origins:
            raise ValueError("TokenEndpointCORS needs explicit origins")
        self.app = app
        self.cors = CORSMiddleware(
            app,
            allow_origins=list(allow_origins),
            allow_methods=["POST"],
            allow_headers=["Content-Type", "X-Requested-With"],
            allow_credentials=False,
            max_age=600,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path") == TOKEN_ENDPOINT_PATH:
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)


async def _admin_auth_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, admin_routes.AdminAuthError)
    return admin_routes.auth_error_response(exc)


async def _admin_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AdminError)
    return admin_routes.admin_error_response(exc)


def create_app(settings: AuthSettings, engine: Engine) -> FastAPI:
    """The authorization server as an ASGI app over ``engine`` (already migrated)."""
    state = AppState(settings=settings, engine=engine, session_factory=make_session_factory(engine))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        kid = await run_in_threadpool(ensure_active_key, state.session_factory, settings.signing_alg)
        log.info("auth-server ready issuer=%s signing kid=%s", settings.issuer, kid)
        audit_writer = audit.start_batch_writer(settings, state.session_factory)
        try:
            yield
        finally:
            await run_in_threadpool(audit.stop_batch_writer, audit_writer)
            await self_client.aclose()

    app = FastAPI(
        title="bsopt auth-server",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.auth = state
    app.state.token_verifier, self_client = _self_verifier(app, settings)
    # /admin: the same verifier and JWKS, for this server's own resource (bsopt_auth.admin)
    app.state.admin_token_verifier = AccessTokenVerifier(
        settings.issuer, ADMIN_AUDIENCE, app.state.token_verifier.jwks, leeway_seconds=settings.token_leeway_seconds)
    app.include_router(admin_routes.router)
    app.add_exception_handler(admin_routes.AdminAuthError, _admin_auth_error)
    app.add_exception_handler(AdminError, _admin_error)
    for module in (discovery, client_keys, authorize, token, revocation, userinfo, device, logout):
        app.include_router(module.router)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        def ping() -> None:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))

        try:
            await run_in_threadpool(ping)
        except Exception as exc:
            log.warning("readiness check failed: %s", type(exc).__name__)
            return JSONResponse({"status": "unavailable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    def openapi() -> dict[str, Any]:
        return build_openapi(app, settings)

    app.openapi = openapi  # type: ignore[method-assign]
    install_swagger_ui(app)
    # The token endpoint answers ahead of FastAPI (routes/token.py), inside the CORS and
    # security-header middleware.
    build = app.build_middleware_stack

    def build_with_token_endpoint() -> ASGIApp:
        stack: ASGIApp = TokenEndpoint(build(), state)
        if settings.token_endpoint_cors_origins:
            stack = TokenEndpointCORS(stack, allow_origins=settings.token_endpoint_cors_origins)
        return stack

    setattr(app, "build_middleware_stack", build_with_token_endpoint)  # noqa: B010 (replaced on purpose)
    install_security_headers(app, hsts=hsts_for(settings.issuer),
                             no_store_prefixes=("/authorize", "/oauth2/token", "/oauth2/revoke",
                                                "/oauth2/introspect", "/userinfo",
                                                "/oauth2/device_authorization", "/device",
                                                "/oauth2/logout"))
    return app


__all__ = ["TOKEN_ENDPOINT_PATH", "TokenEndpointCORS", "create_app"]
