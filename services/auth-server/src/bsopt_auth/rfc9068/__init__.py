"""RFC 9068: JSON Web Token profile for OAuth 2.0 access tokens.

Header ``{"typ": "at+jwt", "alg", "kid"}``; claims ``iss, sub, aud, client_id, scope,
iat, nbf, exp, jti``, ``auth_time`` when a user authenticated, and ``act`` (RFC 8693
§4.1) when a client acts for the subject (token exchange).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from joserfc import jwt

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
    now: int | None = None,
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
    header = {"typ": ACCESS_TOKEN_TYP, "alg": key.alg, "kid": key.kid}
    return IssuedAccessToken(jwt.encode(header, claims, key.key, algorithms=[key.alg]), ttl_seconds, claims)


__all__ = ["ACCESS_TOKEN_TYP", "IssuedAccessToken", "audience_claim", "issue_access_token"]
