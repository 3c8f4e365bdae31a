"""FastAPI and WebSocket adapters of the shared :class:`AccessTokenVerifier`.

The app stores its verifier at ``app.state.token_verifier``; handlers declare what they
need by type::

    Principal = Annotated[AccessTokenClaims, Depends(require_scopes("trades:read"))]

HTTP failures follow RFC 6750 §3: 401 with ``WWW-Authenticate: Bearer
error="invalid_token"`` or 403 with ``error="insufficient_scope"``.
WebSocket handshakes carry the token in ``Authorization: Bearer`` or, for browsers
that cannot set headers, as the subprotocol pair ``["bearer", <token>]``; a failed check
closes with code 1008 (policy violation) before accepting.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import HTTPException, Request, WebSocket, status

from bsopt_common.security.jwt import (
    AccessTokenClaims,
    AccessTokenVerifier,
    InsufficientScopeError,
    InvalidTokenError,
    bearer_token,
)

WS_POLICY_VIOLATION = 1008


def _challenge(error: str, description: str, scopes: tuple[str, ...] = ()) -> str:
    desc = description.replace('"', "'")
    value = f'Bearer error="{error}", error_description="{desc}"'
    if scopes:
        value += f', scope="{" ".join(scopes)}"'
    return value


def require_scopes(*scopes: str) -> Callable[[Request], Awaitable[AccessTokenClaims]]:
    """A dependency returning the caller's validated claims, or raising 401/403."""

    async def dependency(request: Request) -> AccessTokenClaims:
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
        except InvalidTokenError as exc:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail=str(exc),
                headers={"WWW-Authenticate": _challenge("invalid_token", str(exc))},
            ) from None
        except InsufficientScopeError as exc:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=str(exc),
                headers={"WWW-Authenticate": _challenge("insufficient_scope", str(exc), scopes)},
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


async def authenticate_websocket(ws: WebSocket, *scopes: str) -> AccessTokenClaims | None:
    """Validate the handshake's token; accept and return claims, or close with 1008 and
    return None."""
    verifier: AccessTokenVerifier = ws.app.state.token_verifier
    token, subprotocol = websocket_token(ws)
    if token is None:
        await ws.close(code=WS_POLICY_VIOLATION, reason="missing bearer token")
        return None
    try:
        claims = await verifier.verify(token, scopes)
    except (InvalidTokenError, InsufficientScopeError) as exc:
        await ws.close(code=WS_POLICY_VIOLATION, reason=str(exc)[:120])
        return None
    await ws.accept(subprotocol=subprotocol)
    return claims
