"""RFC 9068 access tokens, checked with joserfc and with the suite's shared verifier."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from bsopt_common.security.jwt import AccessTokenVerifier, InsufficientScopeError, InvalidTokenError, JWKSCache
from bsopt_common.settings import KAFKA_AUDIENCE, RESOURCE_API_AUDIENCE

REQUIRED = {"iss", "sub", "aud", "client_id", "scope", "iat", "nbf", "exp", "jti"}


async def test_user_token_header_and_claims(oauth, settings) -> None:
    before = int(time.time())
    body = await oauth.user_tokens(scope="trades:read")
    token = await oauth.decode(body["access_token"])
    assert token.header == {"typ": "at+jwt", "alg": "RS256", "kid": token.header["kid"]}
    claims = token.claims
    assert REQUIRED | {"auth_time"} <= set(claims)
    assert claims["aud"] == RESOURCE_API_AUDIENCE
    assert before - 1 <= claims["iat"] <= int(time.time()) + 1
    assert claims["exp"] == claims["iat"] + settings.access_token_ttl_seconds
    assert claims["auth_time"] <= claims["iat"]


async def test_service_token_header_and_claims(oauth) -> None:
    resp = await oauth.client_credentials("digest-worker", method="post")
    token = await oauth.decode(resp.json()["access_token"])
    assert token.header["typ"] == "at+jwt"
    assert REQUIRED <= set(token.claims)
    assert "auth_time" not in token.claims
    assert token.claims["sub"] == token.claims["client_id"] == "digest-worker"


async def test_every_token_has_a_fresh_jti(oauth) -> None:
    jtis = set()
    for _ in range(3):
        resp = await oauth.client_credentials("ml-scorer")
        jtis.add((await oauth.decode(resp.json()["access_token"])).claims["jti"])
    assert len(jtis) == 3 and all(uuid.UUID(j).version == 4 for j in jtis)


@pytest.fixture
def shared_verifier(app, settings):
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=settings.issuer)
    jwks = JWKSCache(settings.issuer + "/.well-known/jwks.json", http_client=http)
    return lambda audience: AccessTokenVerifier(settings.issuer, audience, jwks)


async def test_tokens_pass_the_shared_resource_server_verifier(oauth, shared_verifier) -> None:
    resp = await oauth.client_credentials("ml-scorer")
    claims = await shared_verifier(KAFKA_AUDIENCE).verify(resp.json()["access_token"], ["kafka:cluster"])
    assert claims.client_id == "ml-scorer"
    with pytest.raises(InvalidTokenError):
        await shared_verifier(RESOURCE_API_AUDIENCE).verify(resp.json()["access_token"])
    with pytest.raises(InsufficientScopeError):
        await shared_verifier(KAFKA_AUDIENCE).verify(resp.json()["access_token"], ["broker:orders"])

    body = await oauth.user_tokens(scope="openid trades:read")
    user = await shared_verifier(RESOURCE_API_AUDIENCE).verify(body["access_token"], ["trades:read"])
    assert user.client_id == "bsopt-cli"
    # the ID token is not an access token (typ JWT, aud client_id)
    with pytest.raises(InvalidTokenError):
        await shared_verifier(RESOURCE_API_AUDIENCE).verify(body["id_token"])
