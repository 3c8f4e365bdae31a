"""Validation of JWT access tokens (RFC 9068) against the issuer's JWKS (RFC 7517).

What :meth:`AccessTokenVerifier.verify` checks, in order (RFC 9068 §4):

1. the JOSE header: ``typ`` is ``at+jwt`` (or ``application/at+jwt``), ``alg`` is an
   asymmetric algorithm we accept, ``kid`` is present;
2. the signature, with the key of that ``kid`` from the cached JWKS. An unknown ``kid``
   triggers one refetch of the JWKS (key rotation), at most once per
   ``min_refetch_interval_seconds`` so a flood of forged kids cannot hammer the
   authorization server;
3. ``iss`` equals the configured issuer; ``aud`` contains this resource server's
   identifier; ``exp`` and ``nbf`` hold with a small leeway (seconds); ``sub``,
   ``client_id``, ``iat`` and ``jti`` are present;
4. the scopes a call needs are all in the space-separated ``scope`` claim.

Failures raise :class:`InvalidTokenError` (HTTP 401 / gRPC UNAUTHENTICATED) or
:class:`InsufficientScopeError` (HTTP 403 / gRPC PERMISSION_DENIED), whose messages
are safe to return to the caller (they never contain the token).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

log = logging.getLogger(__name__)

ACCEPTED_ALGORITHMS = ("RS256", "ES256", "PS256", "EdDSA")
ACCESS_TOKEN_TYPES = ("at+jwt", "application/at+jwt")


class InvalidTokenError(Exception):
    """RFC 6750 §3.1 ``invalid_token``: the access token is expired, revoked, malformed,
    or invalid for other reasons."""

    error_code = "invalid_token"


class InsufficientScopeError(Exception):
    """RFC 6750 §3.1 ``insufficient_scope``: the request requires higher privileges than
    provided by the access token."""

    error_code = "insufficient_scope"

    def __init__(self, missing: Iterable[str]):
        self.missing = tuple(sorted(missing))
        super().__init__(f"token lacks scope(s): {' '.join(self.missing)}")


@dataclass(frozen=True)
class AccessTokenClaims:
    """The validated claims of an access token."""

    subject: str
    client_id: str
    scopes: frozenset[str]
    audience: tuple[str, ...]
    issuer: str
    expires_at: int
    token_id: str
    raw: dict[str, Any] = field(repr=False, compare=False)

    def has_scopes(self, *needed: str) -> bool:
        return set(needed) <= self.scopes


class JWKSCache:
    """The issuer's JSON Web Key Set, fetched over HTTP and cached.

    ``get_key_set(kid)`` returns the cached set when it holds ``kid``; otherwise it
    refetches, at most once per ``min_refetch_interval_seconds`` (rate limit), and
    returns whatever set it then has (the caller fails on a still-unknown kid).
    """

    def __init__(
        self,
        jwks_url: str,
        *,
        http_client: httpx.AsyncClient | None = None,
        min_refetch_interval_seconds: float = 10.0,
        timeout_seconds: float = 5.0,
    ):
        self.jwks_url = jwks_url
        self._client = http_client
        self._owns_client = http_client is None
        self._interval = min_refetch_interval_seconds
        self._timeout = timeout_seconds
        self._keys: KeySet | None = None
        self._kids: frozenset[str] = frozenset()
        self._last_fetch = float("-inf")
        self._lock = asyncio.Lock()
        #: Number of HTTP fetches made (observable for tests and metrics).
        self.fetches = 0

    async def _fetch(self) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout)
        self._last_fetch = time.monotonic()
        self.fetches += 1
        resp = await self._client.get(self.jwks_url)
        resp.raise_for_status()
        keys = KeySet.import_key_set(resp.json())
        self._keys = keys
        self._kids = frozenset(k.kid for k in keys if k.kid)

    async def get_key_set(self, kid: str) -> KeySet | None:
        if self._keys is not None and kid in self._kids:
            return self._keys
        async with self._lock:
            if self._keys is not None and kid in self._kids:
                return self._keys
            if time.monotonic() - self._last_fetch >= self._interval or self._keys is None:
                try:
                    await self._fetch()
                except (httpx.HTTPError, ValueError, JoseError) as exc:
                    log.warning("JWKS fetch from %s failed: %s", self.jwks_url, exc)
                    if self._keys is None:
                        raise InvalidTokenError("signing keys are unavailable") from exc
            return self._keys

    async def aclose(self) -> None:
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None


class AccessTokenVerifier:
    """Verify RFC 9068 access tokens for one resource server (``audience``)."""

    def __init__(self, issuer: str, audience: str, jwks: JWKSCache, *, leeway_seconds: int = 30):
        self.issuer = issuer
        self.audience = audience
        self.jwks = jwks
        self.leeway_seconds = leeway_seconds

    async def verify(
        self,
        token: str,
        required_scopes: Iterable[str] = (),
        *,
        now: Callable[[], int] | int | None = None,
    ) -> AccessTokenClaims:
        """Return the claims of a valid ``token`` or raise.

        ``now`` (epoch seconds) overrides the clock for ``exp``/``nbf``; the event bus
        uses it to check a token against the time its event was produced.

        Raises InvalidTokenError, InsufficientScopeError.
        """
        if not token or token.count(".") != 2:
            raise InvalidTokenError("malformed access token")
        # The header is read before the signature check only to choose the key; every
        # value taken from it is re-checked by the signature verification below.
        header = _unverified_header(token)
        typ = str(header.get("typ", "")).lower()
        if typ not in ACCESS_TOKEN_TYPES:
            raise InvalidTokenError("token type is not at+jwt (RFC 9068 §2.1)")
        if header.get("alg") not in ACCEPTED_ALGORITHMS:
            raise InvalidTokenError("unsupported signing algorithm")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidTokenError("token header has no kid")
        keys = await self.jwks.get_key_set(kid)
        if keys is None or kid not in {k.kid for k in keys}:
            raise InvalidTokenError("token signed by a key that is not in the issuer's JWKS")
        try:
            decoded = jwt.decode(token, keys, algorithms=list(ACCEPTED_ALGORITHMS))
        except JoseError as exc:
            raise InvalidTokenError("bad token signature") from exc
        registry = jwt.JWTClaimsRegistry(
            now=now,
            leeway=self.leeway_seconds,
            iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "value": self.audience},
            exp={"essential": True},
            sub={"essential": True},
            client_id={"essential": True},
            iat={"essential": True},
            jti={"essential": True},
        )
        claims = decoded.claims
        try:
            registry.validate(claims)
        except JoseError as exc:
            raise InvalidTokenError(_describe_claim_error(exc)) from exc
        aud = claims["aud"]
        scopes = frozenset(str(claims.get("scope", "")).split())
        result = AccessTokenClaims(
            subject=str(claims["sub"]),
            client_id=str(claims["client_id"]),
            scopes=scopes,
            audience=(aud,) if isinstance(aud, str) else tuple(aud),
            issuer=str(claims["iss"]),
            expires_at=int(claims["exp"]),
            token_id=str(claims["jti"]),
            raw=dict(claims),
        )
        missing = set(required_scopes) - scopes
        if missing:
            raise InsufficientScopeError(missing)
        return result


def _unverified_header(token: str) -> dict[str, Any]:
    import base64
    import json

    try:
        seg = token.split(".", 1)[0]
        header = json.loads(base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4)))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidTokenError("malformed token header") from exc
    if not isinstance(header, dict):  # valid JSON, but not a JOSE header (an object)
        raise InvalidTokenError("malformed token header")
    return header


def _describe_claim_error(exc: JoseError) -> str:
    name = type(exc).__name__
    if name == "ExpiredTokenError":
        return "token has expired"
    desc = getattr(exc, "description", None) or str(exc) or name
    return f"invalid token claims: {desc}"


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` value (RFC 6750 §2.1), else None."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
