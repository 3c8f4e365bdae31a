"""Validation of JWT access tokens (RFC 9068) against the issuer's JWKS (RFC 7517).

What :meth:`AccessTokenVerifier.verify` checks, in order (RFC 9068 §4):

1. the JOSE header: ``typ`` is ``at+jwt`` (or ``application/at+jwt``), ``alg`` is an
   asymmetric algorithm we accept, ``kid`` is present;
2. the signature, with the key of that ``kid`` from the cached JWKS (kept for the
   ``max-age`` the issuer sends, so removed keys stop verifying within it). An unknown
   ``kid`` waits for a refetch (key rotation); refetches are shared and at most one per
   second, and a kid just proved unknown is refused from a short negative cache, so a
   flood of forged kids can neither hammer the authorization server nor starve a real
   new key (see :class:`JWKSCache`);
3. ``iss`` equals the configured issuer; ``aud`` contains this resource server's
   identifier; ``exp`` and ``nbf`` hold with a small leeway (seconds); ``sub``,
   ``client_id``, ``iat`` and ``jti`` are present; an RFC 8693 ``act`` claim, when
   present, is a well-formed chain of actors (:attr:`AccessTokenClaims.actor`);
4. the scopes a call needs are all in the space-separated ``scope`` claim.

Failures raise :class:`InvalidTokenError` (HTTP 401 / gRPC UNAUTHENTICATED) or
:class:`InsufficientScopeError` (HTTP 403 / gRPC PERMISSION_DENIED), whose messages
are safe to return to the caller (they never contain the token).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
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
    #: RFC 8693 §4.1 ``act``: the client ids acting for ``subject``, outermost (the
    #: current actor, normally ``client_id``) first; empty when nobody acts for it.
    actor: tuple[str, ...] = ()
    #: The compact token itself, kept so a service acting for ``subject`` can exchange it
    #: (RFC 8693) for a token to its own callee; never shown in ``repr``.
    token: str = field(default="", repr=False, compare=False)
    #: RFC 9449 §6.1 ``cnf.jkt``: the thumbprint of the key the token is bound to (a
    #: DPoP-bound token); None for a bearer token.
    confirmation_jkt: str | None = None

    @property
    def is_dpop_bound(self) -> bool:
        return self.confirmation_jkt is not None

    @property
    def is_delegated(self) -> bool:
        """True when a client presents the token on behalf of ``subject`` (token exchange)."""
        return bool(self.actor)

    def has_scopes(self, *needed: str) -> bool:
        return set(needed) <= self.scopes


#: JWKS lifetime when the response says nothing (``Cache-Control: max-age`` absent).
DEFAULT_JWKS_MAX_AGE_SECONDS = 300.0
#: Upper bound on the gap between two unknown-kid refetches. An unknown kid waits for the
#: next refetch slot instead of being refused, so a longer gap would let one forged token
#: delay the tokens of a real new key by that long.
MAX_REFETCH_INTERVAL_SECONDS = 1.0


class _FetchFailed(Exception):
    pass


def _max_age(cache_control: str | None, default: float) -> float:
    """Seconds from ``Cache-Control`` (``max-age``; 0 for ``no-cache``/``no-store``)."""
    if not cache_control:
        return default
    directives = [d.strip().lower() for d in cache_control.split(",")]
    if "no-store" in directives or "no-cache" in directives:
        return 0.0
    for d in directives:
        name, _, value = d.partition("=")
        if name.strip() == "max-age":
            try:
                return max(0.0, float(int(value.strip().strip('"'))))
            except ValueError:
                return default
    return default


class JWKSCache:
    """The issuer's JSON Web Key Set, fetched over HTTP and cached for the ``max-age`` the
    response sends (:data:`DEFAULT_JWKS_MAX_AGE_SECONDS` without one).

    * Expiry: a set older than its max-age is refetched before it answers, so a key the
      issuer removed (revoked, retired) stops verifying within max-age. Shortly before
      expiry an access starts a background refresh instead, so requests rarely wait.
      If the issuer is unreachable the old set keeps serving for at most
      ``stale_if_error_seconds`` past expiry, then every token is refused.
    * Unknown kid (a rotation): the request waits for a JWKS fetch that started after it
      arrived. Fetches for unknown kids are at most one per ``min_refetch_interval_seconds``
      (capped at :data:`MAX_REFETCH_INTERVAL_SECONDS`), and every request waiting meanwhile
      shares that one fetch. A kid a fetch has just proved unknown is refused without
      another fetch for ``negative_ttl_seconds`` (1 s: a kid published just after a fetch
      proved it unknown verifies about a second later). So a flood of forged kids costs at most
      one fetch per interval, and never makes a real new key's tokens fail: they wait at
      most one interval plus one fetch.
    """

    def __init__(
        self,
        jwks_url: str,
        *,
        http_client: httpx.AsyncClient | None = None,
        min_refetch_interval_seconds: float = MAX_REFETCH_INTERVAL_SECONDS,
        timeout_seconds: float = 5.0,
        default_max_age_seconds: float = DEFAULT_JWKS_MAX_AGE_SECONDS,
        max_max_age_seconds: float = 86_400.0,
        min_max_age_seconds: float = 1.0,
        negative_ttl_seconds: float = 1.0,
        negative_cache_size: int = 1024,
        stale_if_error_seconds: float = 300.0,
    ):
        self.jwks_url = jwks_url
        self._client = http_client
        self._owns_client = http_client is None
        self._interval = min(max(min_refetch_interval_seconds, 0.0), MAX_REFETCH_INTERVAL_SECONDS)
        self._timeout = timeout_seconds
        self._default_max_age = default_max_age_seconds
        self._max_age_bounds = (min_max_age_seconds, max_max_age_seconds)
        self._negative_ttl = negative_ttl_seconds
        self._negative_size = negative_cache_size
        self._stale_grace = stale_if_error_seconds
        self._keys: KeySet | None = None
        self._kids: frozenset[str] = frozenset()
        self._last_fetch = float("-inf")  # when the latest fetch started
        self._last_success = float("-inf")  # when the latest successful fetch started
        self._expires_at = float("-inf")
        #: max-age of the set held now, seconds.
        self.max_age = default_max_age_seconds
        self._inflight: asyncio.Future[None] | None = None
        self._unknown: OrderedDict[str, float] = OrderedDict()
        self._unknown_lock = asyncio.Lock()
        #: Number of HTTP fetches made (observable for tests and metrics).
        self.fetches = 0

    async def _fetch(self) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout)
        started = self._last_fetch = time.monotonic()
        self.fetches += 1
        try:
            resp = await self._client.get(self.jwks_url)
            resp.raise_for_status()
            document = resp.json()
            # every key removed (revoked) is an answer, not a failure: nothing verifies
            # (joserfc refuses to import an empty set, which would keep the old keys serving)
            empty = isinstance(document, dict) and document.get("keys") == []
            keys = KeySet([]) if empty else KeySet.import_key_set(document)
        except (httpx.HTTPError, ValueError, JoseError) as exc:
            log.warning("JWKS fetch from %s failed: %s", self.jwks_url, exc)
            raise _FetchFailed from exc
        low, high = self._max_age_bounds
        self.max_age = min(max(_max_age(resp.headers.get("cache-control"), self._default_max_age), low), high)
        self._keys = keys
        self._kids = frozenset(k.kid for k in keys if k.kid)
        self._expires_at = started + self.max_age
        self._last_success = started
        for kid in self._kids & self._unknown.keys():
            del self._unknown[kid]

    def _start_fetch(self) -> asyncio.Future[None]:
        if self._inflight is None:
            task = asyncio.ensure_future(self._fetch())

            def done(t: asyncio.Future[None]) -> None:
                self._inflight = None
                if not t.cancelled():
                    t.exception()  # retrieved here; awaiters see it too

            task.add_done_callback(done)
            self._inflight = task
        return self._inflight

    async def _refresh(self) -> bool:
        """Start a fetch (or join the one in flight) and wait for it; False if it failed."""
        try:
            await asyncio.shield(self._start_fetch())
        except _FetchFailed:
            return False
        return True

    def _due_for_fetch(self, now: float) -> bool:
        return self._inflight is None and now - self._last_fetch >= self._interval

    async def get_key_set(self, kid: str) -> KeySet | None:
        """The key set, fresh within max-age; fetched again first when ``kid`` is unknown
        (see the class docstring). The caller refuses a kid still missing from it."""
        now = time.monotonic()
        if self._keys is None or now >= self._expires_at:
            if self._keys is None or self._inflight is not None or self._due_for_fetch(now):
                await self._refresh()
            if self._keys is None or time.monotonic() >= self._expires_at + self._stale_grace:
                raise InvalidTokenError("signing keys are unavailable")
        elif now >= self._expires_at - min(30.0, 0.1 * self.max_age) and self._due_for_fetch(now):
            self._start_fetch()  # refresh ahead, in the background
        if kid in self._kids:
            return self._keys
        return await self._unknown_kid(kid)

    async def _unknown_kid(self, kid: str) -> KeySet | None:
        arrival = time.monotonic()
        until = self._unknown.get(kid)
        if until is not None and until > arrival:
            return self._keys  # just proved unknown: refused without a fetch
        async with self._unknown_lock:
            # Wait until a fetch that started after this request arrived has finished;
            # requests queued here share it.
            while kid not in self._kids and self._last_fetch < arrival:
                wait = self._last_fetch + self._interval - time.monotonic()
                if wait > 0 and self._inflight is None:
                    await asyncio.sleep(wait)
                    continue
                if not await self._refresh():
                    break
            if self._inflight is not None:
                await self._refresh()
        if kid not in self._kids and self._last_success >= arrival:  # proved unknown, not a failed fetch
            self._unknown[kid] = time.monotonic() + self._negative_ttl
            self._unknown.move_to_end(kid)
            while len(self._unknown) > self._negative_size:
                self._unknown.popitem(last=False)
        return self._keys

    async def aclose(self) -> None:
        if self._inflight is not None:
            self._inflight.cancel()
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
            actor=_actor_chain(claims.get("act")),
            token=token,
            confirmation_jkt=_confirmation_jkt(claims.get("cnf")),
        )
        missing = set(required_scopes) - scopes
        if missing:
            raise InsufficientScopeError(missing)
        return result


#: Longest ``act`` nesting accepted.
MAX_ACTOR_DEPTH = 8


def _actor_chain(act: Any) -> tuple[str, ...]:
    """Flatten a nested RFC 8693 ``act`` claim into its ``sub`` values, outermost first.
    A malformed claim (not an object, no string ``sub``, too deep) refuses the token."""
    chain: list[str] = []
    while act is not None:
        sub = act.get("sub") if isinstance(act, dict) else None
        if not isinstance(sub, str) or not sub or len(chain) >= MAX_ACTOR_DEPTH:
            raise InvalidTokenError("malformed act claim")
        chain.append(sub)
        act = act.get("act")
    return tuple(chain)


def _confirmation_jkt(cnf: Any) -> str | None:
    """``cnf.jkt`` (RFC 9449 §6.1) when present; a malformed ``cnf`` refuses the token."""
    if cnf is None:
        return None
    if not isinstance(cnf, dict):
        raise InvalidTokenError("malformed cnf claim")
    jkt = cnf.get("jkt")
    if jkt is None:
        return None
    if not isinstance(jkt, str) or not jkt:
        raise InvalidTokenError("malformed cnf.jkt claim")
    return jkt


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
