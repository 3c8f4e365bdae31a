"""RFC 9068: JSON Web Token profile for OAuth 2.0 access tokens.

Header ``{"typ": "at+jwt", "alg", "kid"}``; claims ``iss, sub, aud, client_id, scope,
iat, nbf, exp, jti``, ``auth_time`` when a user authenticated, ``act`` (RFC 8693
§4.1) when a client acts for the subject (token exchange), and ``sid`` (the session id
claim registered by OIDC Front-Channel Logout §3, IANA JWT claims) on tokens from an
authorization code: the id of its token family (:class:`bsopt_auth.models.TokenFamily`),
so revoking the family makes the token inactive at introspection (RFC 7662). A token
issued for a DPoP proof (RFC 9449 §6.1) carries ``cnf: {"jkt": <key thumbprint>}``.

:func:`decode_access_token` checks a token this server issued (``typ``, signature against
the published keys, ``iss``, ``exp``), whatever its audience: for revocation (RFC 7009)
and introspection (RFC 7662).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from bsopt_auth.rfc7517 import LoadedKey

ACCESS_TOKEN_TYP = "at+jwt"


@dataclass(frozen=True)
class IssuedAccessToken:
    token: str
    expires_in: int
    claims: dict[str, Any]


def audience_claim(audiences: Sequence[str]) -> str | list[str]:
    """``aud`` is a single string for one audience, an array for several (RFC 7519 §4.1.3)."""
    unique = list(dict.fromkeys(audiences))
    return unique[0] if len(unique) == 1 else unique


def issue_access_token(
    key: LoadedKey,
    *,
    issuer: str,
    subject: str,
    audiences: Sequence[str],
    client_id: str,
    scope: str,
    ttl_seconds: int,
    auth_time: int | None = None,
    actor: Mapping[str, Any] | None = None,
    sid: str | None = None,
    now: int | None = None,
    cnf_jkt: str | None = None,
) -> IssuedAccessToken:
    """Sign an RFC 9068 access token with ``key``."""
    if not audiences:
        raise ValueError("an access token needs at least one audience")
    iat = int(time.time()) if now is None else now
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        "aud": audience_claim(audiences),
        "client_id": client_id,
        "scope": scope,
        "iat": iat,
        "nbf": iat,
        "exp": iat + ttl_seconds,
        "jti": str(uuid.uuid4()),
    }
    if auth_time is not None:
        claims["auth_time"] = auth_time
    if actor is not None:
        claims["act"] = dict(actor)
    if sid is not None:
        claims["sid"] = sid
    if cnf_jkt is not None:  # RFC 9449 §6.1: bound to the client's DPoP key
        claims["cnf"] = {"jkt": cnf_jkt}
    header = {"typ": ACCESS_TOKEN_TYP, "alg": key.alg, "kid": key.kid}
    return IssuedAccessToken(jwt.encode(header, claims, key.key, algorithms=[key.alg]), ttl_seconds, claims)


def decode_access_token(
    token: str, jwks: Mapping[str, Any], *, issuer: str, now: float | None = None
) -> dict[str, Any] | None:
    """The claims of ``token`` when it is an unexpired access token signed by one of the
    published keys ``jwks`` for ``issuer`` (RFC 9068 §4: ``typ`` at+jwt, signature, ``iss``,
    ``exp``; no audience check), else None. Never raises for bad input."""
    if token.count(".") != 2 or len(token) > 16384:
        return None
    try:
        keys = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
        decoded = jwt.decode(token, keys, algorithms=["RS256", "ES256"])
    except (JoseError, ValueError, TypeError, KeyError):
        return None
    header, claims = decoded.header, decoded.claims
    if str(header.get("typ", "")).lower() not in (ACCESS_TOKEN_TYP, "application/" + ACCESS_TOKEN_TYP):
        return None
    exp = claims.get("exp")
    current = time.time() if now is None else now
    if claims.get("iss") != issuer or not isinstance(exp, int) or exp <= current:
        return None
    if not isinstance(claims.get("jti"), str):
        return None
    return dict(claims)


__all__ = ["ACCESS_TOKEN_TYP", "IssuedAccessToken", "audience_claim", "decode_access_token",
           "issue_access_token"]
