"""Discovery documents: RFC 8414 / OIDC metadata and the JWKS (RFC 7517).

Both documents are rendered once and served from memory (per application) for
``metadata_cache_seconds``: discovery does not open a database session per request. The
JWKS is rendered again at once when this process changes the key set
(:func:`bsopt_auth.rfc7517.key_generation`); another process's rotation or revocation
reaches it within the TTL (on top of the ``max-age`` the verifiers already allow).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from bsopt_auth.rfc7517 import get_active_key, jwks_document, key_generation
from bsopt_auth.rfc8414 import known_scopes, server_metadata
from bsopt_auth.routes.state import AppState
from bsopt_common.db import session_scope

router = APIRouter()

JWKS_MEDIA_TYPE = "application/jwk-set+json"


def _cache_headers(state: AppState) -> dict[str, str]:
    return {"Cache-Control": f"public, max-age={state.settings.discovery_max_age_seconds}"}


def _jwks_cache_headers(state: AppState) -> dict[str, str]:
    """Verifiers refetch within this max-age, so it bounds how long a revoked key verifies."""
    return {"Cache-Control": f"public, max-age={state.settings.jwks_max_age_seconds}"}


def _render(document: object) -> bytes:
    return json.dumps(document, ensure_ascii=False, allow_nan=False, indent=None,
                      separators=(",", ":")).encode("utf-8")


@dataclass
class CachedDocument:
    """One rendered document, reloaded when older than the TTL or when the key set changed."""

    body: bytes = b""
    loaded_at: float = float("-inf")
    generation: int = -1
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def fresh(self, ttl: float) -> bool:
        return self.generation == key_generation() and time.monotonic() - self.loaded_at < ttl

    async def get(self, ttl: float, load: Callable[[], object]) -> bytes:
        if self.fresh(ttl):
            return self.body
        async with self.lock:
            if not self.fresh(ttl):  # another request may have reloaded it meanwhile
                generation = key_generation()
                body = _render(await run_in_threadpool(load))
                self.body, self.loaded_at, self.generation = body, time.monotonic(), generation
            return self.body


def _cache(request: Request, name: str) -> CachedDocument:
    caches: dict[str, CachedDocument] | None = getattr(request.app.state, "discovery_cache", None)
    if caches is None:
        caches = request.app.state.discovery_cache = {}
    cache = caches.get(name)
    if cache is None:
        cache = caches[name] = CachedDocument()
    return cache


async def _metadata(request: Request) -> Response:
    state = AppState.of(request)

    def load() -> object:
        with session_scope(state.session_factory) as session:
            scopes = known_scopes(session)
        return server_metadata(state.settings, scopes)

    body = await _cache(request, "metadata").get(state.settings.metadata_cache_seconds, load)
    return Response(body, media_type="application/json", headers=_cache_headers(state))


router.add_api_route("/.well-known/oauth-authorization-server", _metadata, methods=["GET"])
router.add_api_route("/.well-known/openid-configuration", _metadata, methods=["GET"])


@router.get("/.well-known/jwks.json")
async def jwks(request: Request) -> Response:
    state = AppState.of(request)

    def load() -> object:
        with session_scope(state.session_factory) as session:
            document = jwks_document(session)
            if not document["keys"]:  # first start without the lifespan hook
                get_active_key(session, state.settings.signing_alg)
                document = jwks_document(session)
            return document

    body = await _cache(request, "jwks").get(state.settings.metadata_cache_seconds, load)
    return Response(body, media_type=JWKS_MEDIA_TYPE, headers=_jwks_cache_headers(state))


__all__ = ["CachedDocument", "router"]
