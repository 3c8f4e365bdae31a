"""GET/POST /userinfo (OIDC Core §5.3), protected by the shared RFC 9068 verifier.

The verifier (``bsopt_common.security``) reads this server's own JWKS through an
in-process ASGI client, so the token is checked exactly as every resource server checks
it: ``typ`` at+jwt, signature by a published key, ``iss``, ``aud`` containing the issuer,
``exp``/``nbf``; plus the ``openid`` scope.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from bsopt_auth.models import User
from bsopt_auth.oidc import OPENID_SCOPE
from bsopt_auth.routes.state import AppState
from bsopt_common.db import session_scope
from bsopt_common.security.fastapi import require_scopes
from bsopt_common.security.jwt import AccessTokenClaims

router = APIRouter()

Principal = Annotated[AccessTokenClaims, Depends(require_scopes(OPENID_SCOPE))]


def _invalid_token(description: str) -> HTTPException:
    return HTTPException(
        401, detail=description,
        headers={"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{description}"'},
    )


async def _userinfo(request: Request, principal: Principal) -> JSONResponse:
    state = AppState.of(request)
    try:
        user_id = uuid.UUID(principal.subject)
    except ValueError:
        raise _invalid_token("the token does not identify a user") from None

    def load() -> dict[str, Any] | None:
        with session_scope(state.session_factory) as session:
            user = session.get(User, user_id)
            if user is None:
                return None
            claims: dict[str, Any] = {"sub": str(user.id)}
            if "profile" in principal.scopes:
                claims["preferred_username"] = user.username
            return claims

    claims = await run_in_threadpool(load)
    if claims is None:
        raise _invalid_token("unknown user")
    return JSONResponse(claims, headers={"Cache-Control": "no-store"})


router.add_api_route("/userinfo", _userinfo, methods=["GET"], operation_id="userinfo_get")
router.add_api_route("/userinfo", _userinfo, methods=["POST"], operation_id="userinfo_post")

__all__ = ["router"]
