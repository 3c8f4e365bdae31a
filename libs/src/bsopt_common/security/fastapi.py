"""FastAPI and WebSocket adapters of the shared :class:`AccessTokenVerifier`.

The app stores its verifier at ``app.state.token_verifier``; handlers declare what they
need by type::

    Principal = Annotated[AccessTokenClaims, Depends(require_scopes("trades:read"))]

HTTP failures follow RFC 6750 §3: 401 with ``WWW-Authenticate: Bearer
error="invalid_token"`` or 403 with ``error="insufficient_scope"``.
Every protected operation declares :data:`BEARER_SCHEME` (OAuth 2.0 authorization code
flow, scheme ``bsopt``) with the scopes it needs, so the app's OpenAPI document lists
them and Swagger UI can authorize; :func:`document_oauth_flow` fills in the issuer's real
endpoint URLs and the scope descriptions when the app builds its document.
WebSocket handshakes carry the token in ``Authorization: Bearer`` or, for browsers
that cannot set headers, as the subprotocol pair ``["bearer", <token>]``. A failed check
never accepts: where the server supports the ASGI WebSocket Denial Response extension
(uvicorn does) the upgrade is answered like the HTTP API, 401 / 403 with RFC 6750
``WWW-Authenticate`` and a problem+json body (so it passes through the security-headers
middleware like any response); elsewhere it closes with code 1008 (policy violation),
which the server turns into a bare 403.

A verifier failure that is not one of its named errors (a bug on some malformed input) is
logged with its stack and treated as an invalid token (:data:`UNVERIFIABLE`): the caller
gets 401 / close 1008 with a fixed message, never a 500 quoting the exception.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import HTTPException, Request, Security, WebSocket, status
from fastapi.responses import JSONResponse
from fastapi.security import OAuth2AuthorizationCodeBearer

from bsopt_common.security.jwt import (
    AccessTokenClaims,
    AccessTokenVerifier,
    InsufficientScopeError,
    InvalidTokenError,
    bearer_token,
)

log = logging.getLogger(__name__)

WS_POLICY_VIOLATION = 1008
#: What a caller is told when verifying its token failed unexpectedly.
UNVERIFIABLE = "the access token could not be verified"
#: Name of the security scheme in the OpenAPI documents.
SCHEME_NAME = "bsopt"

#: The documented scheme (its URLs are placeholders until :func:`document_oauth_flow`).
#: ``auto_error=False``: the dependency below answers every refusal itself (RFC 6750).
BEARER_SCHEME = OAuth2AuthorizationCodeBearer(
    authorizationUrl="/authorize",
    tokenUrl="/oauth2/token",
    scheme_name=SCHEME_NAME,
    description="OAuth 2.0 authorization code flow with PKCE (S256) against the bsopt issuer; "
    "send the access token as `Authorization: Bearer <token>`.",
    auto_error=False,
)


def document_oauth_flow(openapi: dict[str, Any], *, authorization_url: str, token_url: str,
                        scopes: Mapping[str, str] = {}) -> dict[str, Any]:
    """Point the ``bsopt`` scheme of ``openapi`` at the issuer's endpoints and describe
    every scope an operation asks for (``scopes`` gives descriptions; others get their
    name). Returns ``openapi`` (changed in place)."""
    schemes = openapi.get("components", {}).get("securitySchemes", {})
    scheme = schemes.get(SCHEME_NAME)
    if scheme is None:
        return openapi
    used: set[str] = set()
    for operations in openapi.get("paths", {}).values():
        for operation in operations.values():
            for requirement in operation.get("security", []) if isinstance(operation, dict) else []:
                used.update(requirement.get(SCHEME_NAME, []))
    flow = scheme["flows"]["authorizationCode"]
    flow["authorizationUrl"] = authorization_url
    flow["tokenUrl"] = token_url
    flow["scopes"] = {name: scopes.get(name, name) for name in sorted(used | set(scopes))}
    return openapi


def _challenge(error: str, description: str, scopes: tuple[str, ...] = ()) -> str:
    desc = description.replace('"', "'")
    value = f'Bearer error="{error}", error_description="{desc}"'
    if scopes:
        value += f', scope="{" ".join(scopes)}"'
    return value


def require_scopes(*scopes: str) -> Callable[..., Awaitable[AccessTokenClaims]]:
    """A dependency returning the caller's validated claims, or raising 401/403."""

    async def dependency(
        request: Request,
        _documented: str | None = Security(BEARER_SCHEME, scopes=list(scopes)),
    ) -> AccessTokenClaims:
        verifier: AccessTokenVerifier = request.app.state.token_verifier
        token = bearer_token(request.headers.get("authorization"))
        if token is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail="missing bearer token",
                headers={"WWW-Authenticate": 'Bearer realm="bsopt"'},
            )
        try:
            return await verifier.verify(token, scopes)
        except InsufficientScopeError as exc:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=str(exc),
                headers={"WWW-Authenticate": _challenge("insufficient_scope", str(exc), scopes)},
            ) from None
        except InvalidTokenError as exc:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail=str(exc),
                headers={"WWW-Authenticate": _challenge("invalid_token", str(exc))},
            ) from None
        except Exception:
            log.exception("token verification failed unexpectedly")
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail=UNVERIFIABLE,
                headers={"WWW-Authenticate": _challenge("invalid_token", UNVERIFIABLE)},
            ) from None

    return dependency


def websocket_token(ws: WebSocket) -> tuple[str | None, str | None]:
    """(token, subprotocol to echo) from a WebSocket handshake."""
    token = bearer_token(ws.headers.get("authorization"))
    if token:
        return token, None
    protocols = [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
    if len(protocols) >= 2 and protocols[0].lower() == "bearer":
        return protocols[1], "bearer"
    return None, None


async def refuse_websocket(ws: WebSocket, status_code: int, error: str, description: str,
                           scopes: tuple[str, ...] = ()) -> None:
    """Refuse a WebSocket handshake before accepting it: an HTTP ``status_code`` answer
    with RFC 6750 ``WWW-Authenticate`` and problem+json (the ASGI WebSocket Denial
    Response extension), or close 1008 where the server lacks the extension."""
    if "websocket.http.response" not in ws.scope.get("extensions", {}):
        await ws.close(code=WS_POLICY_VIOLATION, reason=description[:120])
        return
    title = "Unauthorized" if status_code == status.HTTP_401_UNAUTHORIZED else "Forbidden"
    await ws.send_denial_response(JSONResponse(
        {"type": "about:blank", "title": title, "status": status_code, "detail": description},
        status_code=status_code, media_type="application/problem+json",
        headers={"WWW-Authenticate": _challenge(error, description, scopes)},
    ))


async def authenticate_websocket(ws: WebSocket, *scopes: str) -> AccessTokenClaims | None:
    """Validate the handshake's token; accept and return claims, or refuse the handshake
    (:func:`refuse_websocket`: 401 invalid_token, 403 insufficient_scope) and return None."""
    verifier: AccessTokenVerifier = ws.app.state.token_verifier
    token, subprotocol = websocket_token(ws)
    if token is None:
        await refuse_websocket(ws, status.HTTP_401_UNAUTHORIZED, "invalid_token", "missing bearer token")
        return None
    try:
        claims = await verifier.verify(token, scopes)
    except InvalidTokenError as exc:
        await refuse_websocket(ws, status.HTTP_401_UNAUTHORIZED, "invalid_token", str(exc))
        return None
    except InsufficientScopeError as exc:
        await refuse_websocket(ws, status.HTTP_403_FORBIDDEN, "insufficient_scope", str(exc), tuple(scopes))
        return None
    except Exception:
        log.exception("token verification failed unexpectedly")
        await refuse_websocket(ws, status.HTTP_401_UNAUTHORIZED, "invalid_token", UNVERIFIABLE)
        return None
    await ws.accept(subprotocol=subprotocol)
    return claims
