"""Discovery documents: RFC 8414 / OIDC metadata and the JWKS (RFC 7517)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from bsopt_auth.rfc7517 import get_active_key, jwks_document
from bsopt_auth.rfc8414 import known_scopes, server_metadata
from bsopt_auth.routes.state import AppState
from bsopt_common.db import session_scope

router = APIRouter()


def _cache_headers(state: AppState) -> dict[str, str]:
    return {"Cache-Control": f"public, max-age={state.settings.discovery_max_age_seconds}"}


def _jwks_cache_headers(state: AppState) -> dict[str, str]:
    """Verifiers refetch within this max-age, so it bounds how long a revoked key verifies."""
    return {"Cache-Control": f"public, max-age={state.settings.jwks_max_age_seconds}"}


async def _metadata(request: Request) -> JSONResponse:
    state = AppState.of(request)

    def load() -> list[str]:
        with session_scope(state.session_factory) as session:
            return known_scopes(session)

    scopes = await run_in_threadpool(load)
    return JSONResponse(server_metadata(state.settings, scopes), headers=_cache_headers(state))


router.add_api_route("/.well-known/oauth-authorization-server", _metadata, methods=["GET"])
router.add_api_route("/.well-known/openid-configuration", _metadata, methods=["GET"])


@router.get("/.well-known/jwks.json")
async def jwks(request: Request) -> JSONResponse:
    state = AppState.of(request)

    def load() -> dict:
        with session_scope(state.session_factory) as session:
            document = jwks_document(session)
            if not document["keys"]:  # first start without the lifespan hook
                get_active_key(session, state.settings.signing_alg)
                document = jwks_document(session)
            return document

    document = await run_in_threadpool(load)
    return JSONResponse(document, headers=_jwks_cache_headers(state), media_type="application/jwk-set+json")


__all__ = ["router"]
