"""Client-credentials token provider (RFC 6749 §4.4, resource indicators RFC 8707).

One provider per service. It fetches an access token per target resource, caches it,
and refreshes it ``refresh_margin_seconds`` before it expires, so callers never send an
expired token. Concurrent callers share a single in-flight request per resource.

The client authenticates to the token endpoint (every grant, :meth:`request_token`) in
one of two ways, chosen at construction:

* ``client_secret``: HTTP Basic (RFC 6749 §2.3.1, ``client_secret_basic``);
* ``signing_key``: ``private_key_jwt`` (RFC 7523 §2.2, OpenID Connect Core §9): each
  request carries ``client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer``
  and a fresh ``client_assertion``, a JWT signed with the client's private key
  (``iss`` = ``sub`` = client id, ``aud`` = the token endpoint or ``assertion_audience``,
  ``iat``, ``exp`` 60 s later, a random ``jti``; header ``alg`` and ``kid``). The same key
  signs the service's events (:mod:`bsopt_common.security.event_signing`).

Neither the client secret nor the key ever appears in logs, exception messages or repr.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import warnings
from dataclasses import dataclass
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import Key
from pydantic import SecretStr

from bsopt_common.security.event_signing import signing_algorithm

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: Lifetime of one client assertion (RFC 7523 §3: short, single use).
CLIENT_ASSERTION_TTL_SECONDS = 60


class TokenRequestError(RuntimeError):
    """The authorization server refused or failed the token request."""


@dataclass
class _Cached:
    token: str
    expires_at: float


class ClientCredentialsTokenProvider:
    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: SecretStr | str | None = None,
        *,
        signing_key: Key | None = None,
        assertion_audience: str | None = None,
        http_client: httpx.AsyncClient | None = None,
        refresh_margin_seconds: float = 60.0,
        timeout_seconds: float = 5.0,
    ):
        """Exactly one of ``client_secret`` (HTTP Basic) and ``signing_key``
        (``private_key_jwt``, a private asymmetric key with a ``kid``) authenticates the
        client; ValueError otherwise. ``assertion_audience``: the assertion's ``aud``
        (the token endpoint URL by default; e.g. the issuer identifier if the
        authorization server wants that)."""
        if (client_secret is None) == (signing_key is None):
            raise ValueError("give exactly one of client_secret and signing_key")
        if isinstance(client_secret, SecretStr) and not client_secret.get_secret_value():
            raise ValueError("the client secret is empty")
        if isinstance(client_secret, str) and not client_secret:
            raise ValueError("the client secret is empty")
        self.token_url = token_url
        self.client_id = client_id
        self._secret: SecretStr | None = None
        self._signing_key: Key | None = None
        self._assertion_alg = ""
        if client_secret is not None:
            self._secret = client_secret if isinstance(client_secret, SecretStr) else SecretStr(client_secret)
        if signing_key is not None:
            if not signing_key.is_private:
                raise ValueError("signing_key must be a private key")
            self._assertion_alg = signing_algorithm(signing_key)
            signing_key.ensure_kid()
            self._signing_key = signing_key
        self.assertion_audience = assertion_audience or token_url
        self._client = http_client
        self._owns_client = http_client is None
        self._timeout = timeout_seconds
        self._margin = refresh_margin_seconds
        self._cache: dict[tuple[str, str], _Cached] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        #: Number of token requests made (observable for tests and metrics).
        self.requests = 0

    def __repr__(self) -> str:  # never show the secret
        return (f"ClientCredentialsTokenProvider(client_id={self.client_id!r}, token_url={self.token_url!r}, "
                f"auth={self.auth_method!r})")

    @property
    def auth_method(self) -> str:
        """``client_secret_basic`` or ``private_key_jwt`` (RFC 7591 names)."""
        return "private_key_jwt" if self._signing_key is not None else "client_secret_basic"

    def client_assertion(self) -> str:
        """A fresh RFC 7523 client assertion (private_key_jwt). RuntimeError without a key."""
        key = self._signing_key
        if key is None:
            raise RuntimeError("this provider authenticates with a client secret, not a key")
        now = int(time.time())
        claims = {
            "iss": self.client_id, "sub": self.client_id, "aud": self.assertion_audience,
            "iat": now, "exp": now + CLIENT_ASSERTION_TTL_SECONDS, "jti": secrets.token_urlsafe(24),
        }
        header = {"alg": self._assertion_alg, "kid": key.kid, "typ": "JWT"}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=SecurityWarning)  # the EdDSA name (RFC 9864)
            return jwt.encode(header, claims, key, algorithms=[self._assertion_alg])

    async def token(self, resource: str, scope: str = "") -> str:
        """A valid access token for ``resource`` (the audience) with ``scope``.

        Raises TokenRequestError.
        """
        key = (resource, scope)
        cached = self._cache.get(key)
        if cached and cached.expires_at - self._margin > time.time():
            return cached.token
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            cached = self._cache.get(key)
            if cached and cached.expires_at - self._margin > time.time():
                return cached.token
            fresh = await self._request(resource, scope)
            self._cache[key] = fresh
            return fresh.token

    async def _request(self, resource: str, scope: str) -> _Cached:
        data = {"grant_type": "client_credentials", "resource": resource}
        if scope:
            data["scope"] = scope
        body = await self.request_token(data, what=f"a token for {resource!r}")
        return _Cached(body["access_token"], time.time() + float(body.get("expires_in", 300)))

    async def request_token(self, form: dict[str, str], *, what: str = "a token") -> dict[str, Any]:
        """POST ``form`` to the token endpoint, authenticated as this client, and return
        the JSON success response (RFC 6749 §5.1). Any grant goes through here (client
        credentials; token exchange, :mod:`bsopt_common.security.token_exchange`).

        Raises TokenRequestError (the error response's ``error`` and description, never
        the credentials)."""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout)
        self.requests += 1
        data = dict(form)
        try:
            if self._secret is not None:
                resp = await self._client.post(
                    self.token_url, data=data, auth=(self.client_id, self._secret.get_secret_value()))
            else:
                data["client_id"] = self.client_id
                data["client_assertion_type"] = CLIENT_ASSERTION_TYPE
                data["client_assertion"] = self.client_assertion()
                resp = await self._client.post(self.token_url, data=data)
        except httpx.HTTPError as exc:
            raise TokenRequestError(f"token request to {self.token_url} failed: {type(exc).__name__}") from None
        if resp.status_code != 200:
            try:
                body = resp.json()
                reason = f"{body.get('error')}: {body.get('error_description', '')}"
            except ValueError:
                reason = f"HTTP {resp.status_code}"
            raise TokenRequestError(f"client {self.client_id!r} was refused {what}: {reason}")
        try:
            body = resp.json()
        except ValueError:
            raise TokenRequestError(f"token endpoint answered {what} with a body that is not JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
            raise TokenRequestError(f"token endpoint answered {what} without an access_token")
        return body

    async def aclose(self) -> None:
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None
