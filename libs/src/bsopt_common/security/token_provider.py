"""Client-credentials token provider (RFC 6749 §4.4, resource indicators RFC 8707).

One provider per service. It fetches an access token per target resource, caches it,
and refreshes it ``refresh_margin_seconds`` before it expires, so callers never send an
expired token. Concurrent callers share a single in-flight request per resource.
The client secret never appears in logs or exception messages.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx
from pydantic import SecretStr


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
        client_secret: SecretStr | str,
        *,
        http_client: httpx.AsyncClient | None = None,
        refresh_margin_seconds: float = 60.0,
        timeout_seconds: float = 5.0,
    ):
        self.token_url = token_url
        self.client_id = client_id
        self._secret = client_secret if isinstance(client_secret, SecretStr) else SecretStr(client_secret)
        self._client = http_client
        self._owns_client = http_client is None
        self._timeout = timeout_seconds
        self._margin = refresh_margin_seconds
        self._cache: dict[tuple[str, str], _Cached] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        #: Number of token requests made (observable for tests and metrics).
        self.requests = 0

    def __repr__(self) -> str:  # never show the secret
        return f"ClientCredentialsTokenProvider(client_id={self.client_id!r}, token_url={self.token_url!r})"

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
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout)
        data = {"grant_type": "client_credentials", "resource": resource}
        if scope:
            data["scope"] = scope
        self.requests += 1
        try:
            resp = await self._client.post(
                self.token_url, data=data, auth=(self.client_id, self._secret.get_secret_value())
            )
        except httpx.HTTPError as exc:
            raise TokenRequestError(f"token request to {self.token_url} failed: {type(exc).__name__}") from None
        if resp.status_code != 200:
            try:
                body = resp.json()
                reason = f"{body.get('error')}: {body.get('error_description', '')}"
            except ValueError:
                reason = f"HTTP {resp.status_code}"
            raise TokenRequestError(f"client {self.client_id!r} was refused a token for {resource!r}: {reason}")
        body = resp.json()
        return _Cached(body["access_token"], time.time() + float(body.get("expires_in", 300)))

    async def aclose(self) -> None:
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None
