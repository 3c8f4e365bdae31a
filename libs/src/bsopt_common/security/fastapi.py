"""FastAPI and WebSocket adapters of the shared :class:`AccessTokenVerifier`.

The app stores its verifier at ``app.state.token_verifier``; handlers declare what they
need by type::

    Principal = Annotated[AccessTokenClaims, Depends(require_scopes("trades:read"))]

HTTP failures follow RFC 6750 §3: 401 with ``WWW-Authenticate: Bearer
error="invalid_token"`` or 403 with ``error="insufficient_scope"``.
DPoP (RFC 9449 §7): ``Authorization: DPoP <token>`` with a ``DPoP`` proof header is
checked by :mod:`bsopt_common.security.dpop` against ``app.state.dpop``
(:class:`~bsopt_common.security.dpop.ResourceServerDPoP`: public URL for ``htu``, optional
server nonce, replay cache); its failures answer 401 with ``WWW-Authenticate: DPoP
error="...", algs="..."`` (``use_dpop_nonce`` with a ``DPoP-Nonce`` header), and a
DPoP-bound token (``cnf.jkt``) sent as Bearer is refused (§7.1). A request without a
token is challenged with both schemes.
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

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import HTTPException, Request, Security, WebSocket, status
from fastapi.responses import JSONResponse
from fastapi.security import OAuth2AuthorizationCodeBearer
from starlette.requests import HTTPConnection

from bsopt_common.security.dpop import (
    InvalidDPoPProofError,
    ResourceServerDPoP,
    UseDPoPNonceError,
    dpop_challenge,
    single_proof,
)
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


class _Refusal(Exception):
    """One refused request: HTTP status, RFC 6750 / RFC 9449 error and the headers."""

    def __init__(self, status_code: int, error: str, description: str, headers: dict[str, str]) -> None:
        super().__init__(description)
        self.status_code, self.error, self.description, self.headers = status_code, error, description, headers


def dpop_policy(app: Any) -> ResourceServerDPoP:
    """The app's :class:`ResourceServerDPoP` (``app.state.dpop``), a default one (public URL
    from the request, no nonce, in-memory replay cache) created on first use."""
    policy = getattr(app.state, "dpop", None)
    if policy is None:
        policy = app.state.dpop = ResourceServerDPoP()
    return policy


def _authorization(value: str | None) -> tuple[str | None, str | None]:
    """(scheme lower-cased, token) of ``Authorization: Bearer|DPoP <token>``."""
    if not value:
        return None, None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() not in ("bearer", "dpop") or not token.strip():
        return None, None
    return scheme.lower(), token.strip()


async def _authenticate(conn: HTTPConnection, method: str, scheme: str | None, token: str | None,
                        scopes: tuple[str, ...], *, missing_is_invalid: bool = False) -> AccessTokenClaims:
    """The claims of the connection's access token (Bearer, RFC 6750; or DPoP, RFC 9449
    §7: proof with ``ath``, ``htm``/``htu`` of this request, key = ``cnf.jkt``); raises
    :class:`_Refusal`."""
    verifier: AccessTokenVerifier = conn.app.state.token_verifier
    policy = dpop_policy(conn.app)
    algs = policy.algorithms

    def dpop_refusal(error: str, description: str, extra: Mapping[str, str] | None = None) -> _Refusal:
        return _Refusal(status.HTTP_401_UNAUTHORIZED, error, description,
                        {"WWW-Authenticate": dpop_challenge(algs, error, description), **(extra or {})})

    if token is None:
        bearer = (_challenge("invalid_token", "missing bearer token") if missing_is_invalid
                  else 'Bearer realm="bsopt"')
        raise _Refusal(status.HTTP_401_UNAUTHORIZED, "invalid_token", "missing bearer token",
                       {"WWW-Authenticate": bearer + ", " + dpop_challenge(algs)})
    try:
        claims = await verifier.verify(token)
    except InvalidTokenError as exc:
        if scheme == "dpop":
            raise dpop_refusal("invalid_token", str(exc)) from None
        raise _Refusal(status.HTTP_401_UNAUTHORIZED, "invalid_token", str(exc),
                       {"WWW-Authenticate": _challenge("invalid_token", str(exc))}) from None
    except Exception:
        log.exception("token verification failed unexpectedly")
        raise _Refusal(status.HTTP_401_UNAUTHORIZED, "invalid_token", UNVERIFIABLE,
                       {"WWW-Authenticate": _challenge("invalid_token", UNVERIFIABLE)}) from None
    if scheme == "dpop":
        if claims.confirmation_jkt is None:
            raise dpop_refusal("invalid_token", "the access token is not DPoP-bound; send it as Bearer")
        try:
            proof = single_proof(conn.headers.getlist("dpop"))
            if proof is None:
                raise InvalidDPoPProofError("missing DPoP proof (DPoP header)")
            url = str(conn.url.replace(query="", fragment=""))
            htu = policy.htu(url, conn.url.path)
            if policy.jti_store.blocking:  # a shared store in the database: off the event loop
                checked = await asyncio.to_thread(policy.check, proof, htm=method, htu=htu, access_token=token)
            else:
                checked = policy.check(proof, htm=method, htu=htu, access_token=token)
        except UseDPoPNonceError as exc:
            raise dpop_refusal("use_dpop_nonce", str(exc), {"DPoP-Nonce": exc.nonce}) from None
        except InvalidDPoPProofError as exc:
            raise dpop_refusal("invalid_dpop_proof", str(exc)) from None
        if checked.jkt != claims.confirmation_jkt:
            raise dpop_refusal("invalid_dpop_proof", "the DPoP proof key is not the key the token is bound to")
    elif claims.confirmation_jkt is not None:  # RFC 9449 §7.1: never accept it as a bearer token
        raise dpop_refusal("invalid_token", "a DPoP-bound access token must be sent with Authorization: DPoP")
    missing = set(scopes) - claims.scopes
    if missing:
        exc2 = InsufficientScopeError(missing)
        challenge = (dpop_challenge(algs, "insufficient_scope", str(exc2)) if scheme == "dpop"
                     else _challenge("insufficient_scope", str(exc2), scopes))
        raise _Refusal(status.HTTP_403_FORBIDDEN, "insufficient_scope", str(exc2), {"WWW-Authenticate": challenge})
    return claims


def require_scopes(*scopes: str) -> Callable[..., Awaitable[AccessTokenClaims]]:
    """A dependency returning the caller's validated claims, or raising 401/403. The token
    comes as ``Authorization: Bearer`` (RFC 6750) or ``Authorization: DPoP`` with a
    ``DPoP`` proof (RFC 9449 §7); a DPoP-bound token sent as Bearer is refused."""

    async def dependency(
        request: Request,
        _documented: str | None = Security(BEARER_SCHEME, scopes=list(scopes)),
    ) -> AccessTokenClaims:
        scheme, token = _authorization(request.headers.get("authorization"))
        try:
            return await _authenticate(request, request.method, scheme, token, scopes)
        except _Refusal as refusal:
            raise HTTPException(refusal.status_code, detail=refusal.description,
                                headers=refusal.headers) from None

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
                           scopes: tuple[str, ...] = (), *, headers: Mapping[str, str] | None = None) -> None:
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
        headers=dict(headers) if headers else {"WWW-Authenticate": _challenge(error, description, scopes)},
    ))


async def authenticate_websocket(ws: WebSocket, *scopes: str) -> AccessTokenClaims | None:
    """Validate the handshake's token (Bearer, or DPoP with a proof for ``GET`` of the
    handshake URL); accept and return claims, or refuse the handshake
    (:func:`refuse_websocket`: 401 invalid_token / invalid_dpop_proof / use_dpop_nonce,
    403 insufficient_scope) and return None."""
    scheme, token = _authorization(ws.headers.get("authorization"))
    subprotocol = None
    if token is None:
        token, subprotocol = websocket_token(ws)
        scheme = "bearer" if token else None
    try:
        claims = await _authenticate(ws, "GET", scheme, token, tuple(scopes), missing_is_invalid=True)
    except _Refusal as refusal:
        await refuse_websocket(ws, refusal.status_code, refusal.error, refusal.description, tuple(scopes),
                               headers=refusal.headers)
        return None
    await ws.accept(subprotocol=subprotocol)
    return claims
