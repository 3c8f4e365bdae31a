"""GET /oauth2/clients/{client_id}/jwks.json: a client's registered public keys.

The JWK Set (RFC 7517 §5) of the keys registered for ``client_id`` (RFC 7591 §2
``jwks``): what its ``private_key_jwt`` assertions (RFC 7523) and the events it
publishes are signed with. Consumers of a service's events verify their signatures
against it, fetched from ``<issuer>/oauth2/clients/<client_id>/jwks.json`` and cached
for ``Cache-Control: public, max-age=client_jwks_max_age_seconds``. Public members only
(every key passes :func:`~bsopt_auth.rfc7591.public_jwks` again on the way out).

An unknown client, a client without registered keys, or a ``client_id`` that no client
can have (longer than 255 characters, a NUL or other control character) is a 404 with a
JSON body, ``Cache-Control: no-store`` (keys registered a moment later are found at once).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from bsopt_auth.models import Client
from bsopt_auth.rfc7523 import MAX_ID_LENGTH
from bsopt_auth.rfc7591 import public_jwks
from bsopt_auth.routes.state import AppState
from bsopt_common.db import session_scope

router = APIRouter()

#: The path, as consumers build it under the issuer.
CLIENT_JWKS_PATH = "/oauth2/clients/{client_id}/jwks.json"
NOT_FOUND_BODY = {"error": "not_found", "error_description": "no public keys are registered for this client"}


def _not_found() -> JSONResponse:
    return JSONResponse(NOT_FOUND_BODY, status_code=404, headers={"Cache-Control": "no-store"})


@router.get(CLIENT_JWKS_PATH)
async def client_jwks(request: Request, client_id: str) -> JSONResponse:
    state = AppState.of(request)
    if not 0 < len(client_id) <= MAX_ID_LENGTH or not client_id.isprintable():
        return _not_found()

    def load() -> dict[str, Any] | None:
        with session_scope(state.session_factory) as session:
            stored = session.get(Client, client_id)
            return stored.jwks if stored is not None and stored.jwks else None

    stored = await run_in_threadpool(load)
    document = public_jwks(stored)
    if not document["keys"]:
        return _not_found()
    return JSONResponse(
        document, media_type="application/jwk-set+json",
        headers={"Cache-Control": f"public, max-age={state.settings.client_jwks_max_age_seconds}"},
    )


__all__ = ["CLIENT_JWKS_PATH", "router"]
