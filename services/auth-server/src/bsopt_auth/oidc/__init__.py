"""OpenID Connect Core 1.0: ID tokens (§2, §3.1.3.6) and the UserInfo endpoint (§5.3)."""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any

from joserfc import jwt

from bsopt_auth.rfc7517 import LoadedKey

OPENID_SCOPE = "openid"
#: Claims the UserInfo endpoint and ID token may carry.
CLAIMS_SUPPORTED = ("sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "at_hash", "azp",
                    "preferred_username")


def at_hash(access_token: str, alg: str) -> str:
    """OIDC Core §3.1.3.6: left half of the hash of the ASCII access token, base64url."""
    if not alg.endswith("256"):
        raise ValueError(f"no at_hash hash function for {alg!r}")
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode("ascii")


def issue_id_token(
    key: LoadedKey,
    *,
    issuer: str,
    subject: str,
    client_id: str,
    auth_time: int,
    ttl_seconds: int,
    nonce: str | None = None,
    access_token: str | None = None,
    extra_claims: dict[str, Any] | None = None,
    now: int | None = None,
) -> str:
    iat = int(time.time()) if now is None else now
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        "aud": client_id,
        "azp": client_id,
        "iat": iat,
        "exp": iat + ttl_seconds,
        "auth_time": auth_time,
    }
    if nonce:
        claims["nonce"] = nonce
    if access_token:
        claims["at_hash"] = at_hash(access_token, key.alg)
    if extra_claims:
        claims.update({k: v for k, v in extra_claims.items() if k not in claims})
    header = {"typ": "JWT", "alg": key.alg, "kid": key.kid}
    return jwt.encode(header, claims, key.key, algorithms=[key.alg])


__all__ = ["CLAIMS_SUPPORTED", "OPENID_SCOPE", "at_hash", "issue_id_token"]
