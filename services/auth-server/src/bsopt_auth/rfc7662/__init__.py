"""RFC 7662: OAuth 2.0 Token Introspection (``POST /oauth2/introspect``), HTTP-agnostic.

Policy (§2.1, §4). The caller must authenticate as a *confidential* client (any method
it is registered for: ``client_secret_basic``, ``client_secret_post``,
``private_key_jwt``); a public client or no authentication is ``invalid_client`` (401).
Any confidential client may introspect any token this server issued: the dev suite's
confidential clients are its own resource servers. ``token_type_hint`` orders the lookup
(§2.1; an unknown hint is ``unsupported_token_type``, as at revocation).

§2.2 response. ``{"active": false}`` alone for an unknown, malformed, expired or revoked
token: a refresh token that was rotated (used), whose family was revoked (reuse, code
replay, RFC 7009) or that expired (idle or absolute); an access token whose ``jti`` was
revoked, whose family (``sid``) was revoked, or that is past ``exp``. An active token
gives ``active``, ``scope``, ``client_id``, ``sub``, ``aud``, ``iss``, ``exp``, ``iat``;
an access token also ``token_type`` (``Bearer``), ``nbf``, ``jti`` and, when present,
``auth_time``, ``act`` and ``sid``; a refresh token ``token_type`` is absent (it is no
RFC 6749 §5.1 type) and ``exp`` is its current (idle) expiry.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bsopt_auth.config import AuthSettings
from bsopt_auth.models import Client, RevokedAccessToken
from bsopt_auth.rfc6749.errors import InvalidClientError, InvalidRequestError
from bsopt_auth.rfc6749.refresh import family_revoked, find_refresh_token, refresh_token_active
from bsopt_auth.rfc7009 import REFRESH_TOKEN_HINT, lookup_order
from bsopt_auth.rfc7517 import jwks_document
from bsopt_auth.rfc9068 import audience_claim, decode_access_token
from bsopt_common.db import session_scope

INACTIVE: dict[str, Any] = {"active": False}
_ACCESS_TOKEN_CLAIMS = ("scope", "client_id", "sub", "aud", "iss", "exp", "iat", "nbf", "jti", "auth_time",
                        "act", "sid")


def _refresh(session: Session, settings: AuthSettings, token: str) -> dict[str, Any] | None:
    found = find_refresh_token(session, token)
    if found is None:
        return None
    refresh, family = found
    if not refresh_token_active(refresh, family):
        return INACTIVE
    return {"active": True, "scope": family.scope, "client_id": family.client_id, "sub": str(family.user_id),
            "aud": audience_claim(family.resource), "iss": settings.issuer,
            "exp": int(refresh.expires_at.timestamp()), "iat": int(refresh.created_at.timestamp())}


def _access(session: Session, settings: AuthSettings, token: str) -> dict[str, Any] | None:
    assert settings.issuer is not None
    claims = decode_access_token(token, jwks_document(session), issuer=settings.issuer)
    if claims is None:
        return None
    if session.scalar(select(RevokedAccessToken.jti).where(RevokedAccessToken.jti == claims["jti"])):
        return INACTIVE
    sid = claims.get("sid")
    if sid is not None and (not isinstance(sid, str) or family_revoked(session, sid)):
        return INACTIVE
    return {"active": True, "token_type": "Bearer",
            **{name: claims[name] for name in _ACCESS_TOKEN_CLAIMS if name in claims}}


def introspect_token(
    session_factory: sessionmaker[Session], settings: AuthSettings, client: Client, params: Mapping[str, str]
) -> dict[str, Any]:
    """The §2.2 response for ``params["token"]``, for the authenticated ``client``."""
    if client.is_public:
        raise InvalidClientError("introspection requires a confidential client's authentication")
    token = params.get("token")
    if not token:
        raise InvalidRequestError("token is required")
    order = lookup_order(params.get("token_type_hint"))
    with session_scope(session_factory) as session:
        for kind in order:
            answer = _refresh(session, settings, token) if kind == REFRESH_TOKEN_HINT else _access(
                session, settings, token)
            if answer is not None:
                return dict(answer)
    return dict(INACTIVE)


__all__ = ["introspect_token"]
