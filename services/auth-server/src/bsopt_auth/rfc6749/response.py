"""The successful token response of the grants that act for a user (RFC 6749 §5.1):
authorization code, refresh token (§6) and device code (RFC 8628 §3.5) share it.

:func:`narrow_resources` applies RFC 8707 §2.2 (a token request may narrow, never widen,
the resources that were authorized); :func:`user_token_response` issues the RFC 9068
access token (``cnf.jkt`` and token type ``DPoP`` when bound, RFC 9449), the ID token
when ``openid`` was granted (OIDC Core §3.1.3.3, §12.2) and adds the refresh token."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bsopt_auth.config import AuthSettings
from bsopt_auth.models import Client
from bsopt_auth.oidc import OPENID_SCOPE, issue_id_token
from bsopt_auth.rfc6749.scope import parse_scope
from bsopt_auth.rfc7517 import LoadedKey
from bsopt_auth.rfc8707 import InvalidTargetError
from bsopt_auth.rfc9068 import issue_access_token
from bsopt_auth.rfc9449 import token_type


def narrow_resources(granted: Sequence[str], requested: Sequence[str]) -> list[str]:
    """The audiences of the new token: ``requested`` (deduplicated) when given, else all
    ``granted``. Raises InvalidTargetError for a resource that was not granted."""
    if not requested:
        return list(granted)
    if any(r not in granted for r in requested):
        raise InvalidTargetError("resource was not part of the authorization grant")
    return list(dict.fromkeys(requested))


def user_token_response(
    key: LoadedKey, settings: AuthSettings, client: Client, *, subject: str, audiences: Sequence[str],
    scope: str, auth_time: int, sid: str, dpop_jkt: str | None, refresh_token: str | None = None,
    nonce: str | None = None, session_id: str | None = None,
) -> dict[str, Any]:
    """The §5.1 body for ``subject`` with ``scope`` (a scope string). With ``openid`` the
    issuer joins the audiences (so the UserInfo endpoint accepts the token) and an ID
    token (with ``nonce`` if the authorization request had one) is added; its ``sid``
    (OpenID Connect Front-Channel Logout 1.0 §3, Back-Channel Logout 1.0 §2.4) is
    ``session_id``, the authorization server's browser session the grant came from (the
    SHA-256 of the session cookie, never the cookie), absent without one (device flow).
    The access token's ``sid`` stays the token family id (what revocation checks)."""
    assert settings.issuer is not None
    openid = OPENID_SCOPE in parse_scope(scope)
    token = issue_access_token(
        key, issuer=settings.issuer, subject=subject,
        audiences=[*audiences, settings.issuer] if openid else list(audiences), client_id=client.client_id,
        scope=scope, ttl_seconds=settings.access_token_ttl_seconds, auth_time=auth_time, sid=sid,
        cnf_jkt=dpop_jkt,
    )
    body: dict[str, Any] = {"access_token": token.token, "token_type": token_type(dpop_jkt),
                            "expires_in": token.expires_in, "scope": scope}
    if refresh_token is not None:
        body["refresh_token"] = refresh_token
    if openid:
        body["id_token"] = issue_id_token(
            key, issuer=settings.issuer, subject=subject, client_id=client.client_id, auth_time=auth_time,
            ttl_seconds=settings.id_token_ttl_seconds, nonce=nonce, access_token=token.token,
            now=token.claims["iat"], extra_claims={"sid": session_id} if session_id else None,
        )
    return body


__all__ = ["narrow_resources", "user_token_response"]
