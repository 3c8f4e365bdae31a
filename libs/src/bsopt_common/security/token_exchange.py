"""Delegated tokens: RFC 8693 OAuth 2.0 Token Exchange, the client side.

A service that acts for a user on another service never sends its own
client-credentials token with a ``user_id`` field. It exchanges the user's access token
(the *subject token*, issued to be presented to this service) at the authorization
server for a token the callee accepts: ``aud`` = the callee (RFC 8707 ``resource``),
``sub`` = the user, ``act`` = ``{"sub": <this service>}`` (nested when the subject token
was itself delegated), scopes narrowed to what the call needs and a short lifetime. The
callee authorizes by that ``sub`` (:func:`bsopt_common.security.grpc.acting_user`).

:class:`TokenExchanger` sends §2.1 requests through the service's
:class:`~bsopt_common.security.token_provider.ClientCredentialsTokenProvider` (which
authenticates the client: secret or RFC 7523 ``private_key_jwt``) and caches each
exchanged token per (subject token, resource, scope) until shortly before it expires,
so a burst of calls for one user costs one exchange. Concurrent callers of one key share
one request. The cache keeps SHA-256 digests of subject tokens, never the tokens.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from bsopt_common.security.token_provider import TokenRequestError

TOKEN_EXCHANGE_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"


class TokenEndpointClient(Protocol):
    """What the exchanger needs from a client of the token endpoint (the provider)."""

    async def request_token(self, form: dict[str, str], *, what: str = "a token") -> dict[str, object]: ...


@dataclass(frozen=True)
class _Exchanged:
    token: str
    expires_at: float


class TokenExchanger:
    """Exchange user access tokens for delegated tokens to callees (RFC 8693 §2).

    ``refresh_margin_seconds``: a cached token is not handed out this close to its
    expiry (the callee checks ``exp`` with its own leeway, so a call never carries a
    token about to lapse). ``max_entries`` bounds the cache (least recently used out).
    """

    def __init__(self, client: TokenEndpointClient, *, refresh_margin_seconds: float = 30.0,
                 max_entries: int = 10_000):
        self.client = client
        self._margin = refresh_margin_seconds
        self._max = max_entries
        self._cache: OrderedDict[tuple[str, str, str], _Exchanged] = OrderedDict()
        self._inflight: dict[tuple[str, str, str], asyncio.Future[_Exchanged]] = {}
        #: Exchanges requested from the authorization server (for tests and metrics).
        self.exchanges = 0

    async def token_for(self, subject_token: str, resource: str, scope: str) -> str:
        """A token for ``resource`` acting for the subject token's user, with ``scope``
        (space-separated; the authorization server may grant less, never more).

        Raises TokenRequestError: the authorization server refused (``invalid_grant``
        for an expired or foreign subject token, ``invalid_scope``, ``invalid_target``)
        or could not be reached."""
        key = (hashlib.sha256(subject_token.encode()).hexdigest(), resource, scope)
        now = time.time()
        cached = self._cache.get(key)
        if cached is not None and cached.expires_at - self._margin > now:
            self._cache.move_to_end(key)
            return cached.token
        future = self._inflight.get(key)
        if future is None:
            future = asyncio.ensure_future(self._exchange(subject_token, resource, scope))
            self._inflight[key] = future
            future.add_done_callback(lambda _f: self._inflight.pop(key, None))
        exchanged = await asyncio.shield(future)
        self._cache[key] = exchanged
        self._cache.move_to_end(key)
        while len(self._cache) > self._max:
            self._cache.popitem(last=False)
        return exchanged.token

    async def _exchange(self, subject_token: str, resource: str, scope: str) -> _Exchanged:
        form = {
            "grant_type": TOKEN_EXCHANGE_GRANT_TYPE,
            "subject_token": subject_token,
            "subject_token_type": ACCESS_TOKEN_TYPE,
            "requested_token_type": ACCESS_TOKEN_TYPE,
            "resource": resource,
        }
        if scope:
            form["scope"] = scope
        self.exchanges += 1
        body = await self.client.request_token(form, what=f"a delegated token for {resource!r}")
        if body.get("issued_token_type", ACCESS_TOKEN_TYPE) != ACCESS_TOKEN_TYPE:
            raise TokenRequestError(f"token exchange for {resource!r} issued {body.get('issued_token_type')!r}")
        try:
            lifetime = float(body.get("expires_in", 60))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            lifetime = 60.0
        return _Exchanged(str(body["access_token"]), time.time() + lifetime)


__all__ = ["ACCESS_TOKEN_TYPE", "TOKEN_EXCHANGE_GRANT_TYPE", "TokenExchanger"]
