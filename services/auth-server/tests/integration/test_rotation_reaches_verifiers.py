"""Key rotation reaches every resource server: the audit's starvation attack replayed
against a real auth-server over HTTP (JWKS ``max-age`` 300 s, the default) and the shared
verifier configured as the services configure it (``jwks_min_refetch_interval_seconds``
10 s). Before the fix, one forged unknown-kid token spent the refetch budget and the
real new key's tokens got 401 for 10 s (24 of 37)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from sqlalchemy import Engine

from bsopt_auth.bootstrap import serve
from bsopt_auth.config import AuthSettings
from bsopt_auth.rfc7517 import rotate_signing_key
from bsopt_common.security.jwt import AccessTokenVerifier, InvalidTokenError, JWKSCache
from bsopt_common.settings import KAFKA_AUDIENCE
from bsopt_common.testing.services import ServiceThread, free_port


@pytest.fixture(scope="module")
def http_issuer(postgres_url: str, engine: Engine) -> Iterator[str]:
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    settings = AuthSettings(_env_file=None, environment="test", database_url=postgres_url, issuer=issuer,
                            port=port, seed_dev_on_start=True)
    with ServiceThread(lambda stop: serve(settings, stop), port=port):
        yield issuer


def _tokens(issuer: str, n: int) -> list[str]:
    with httpx.Client(base_url=issuer, timeout=10) as http:
        out = []
        for _ in range(n):
            resp = http.post("/oauth2/token", data={"grant_type": "client_credentials", "resource": KAFKA_AUDIENCE},
                             auth=("ml-scorer", "dev-ml-scorer-secret"))
            assert resp.status_code == 200, resp.text
            out.append(resp.json()["access_token"])
        return out


def _kid(token: str) -> str:
    seg = token.split(".", 1)[0]
    return json.loads(base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4)))["kid"]


def _forged(issuer: str) -> str:
    key = RSAKey.generate_key(2048)
    now = int(time.time())
    claims = {"iss": issuer, "sub": "attacker", "aud": KAFKA_AUDIENCE, "client_id": "ml-scorer",
              "scope": "kafka:cluster", "iat": now, "nbf": now, "exp": now + 300, "jti": str(uuid.uuid4())}
    return jwt.encode({"alg": "RS256", "kid": uuid.uuid4().hex, "typ": "at+jwt"}, claims, key)


async def test_forged_kid_first_cannot_starve_the_rotated_key(http_issuer, session_factory) -> None:
    jwks = JWKSCache(http_issuer + "/.well-known/jwks.json", min_refetch_interval_seconds=10.0)
    verifier = AccessTokenVerifier(http_issuer, KAFKA_AUDIENCE, jwks)
    [before] = _tokens(http_issuer, 1)
    await verifier.verify(before)
    assert jwks.max_age == 300.0 and jwks.fetches == 1

    new_kid = rotate_signing_key(session_factory, "RS256")
    forged = [_forged(http_issuer) for _ in range(10)]
    real = _tokens(http_issuer, 37)
    assert {_kid(t) for t in real} == {new_kid}

    started = time.monotonic()
    with pytest.raises(InvalidTokenError):  # the attacker's token arrives first
        await verifier.verify(forged[0])

    async def outcome(token: str) -> bool:
        try:
            await verifier.verify(token)
            return True
        except InvalidTokenError:
            return False

    results = await asyncio.gather(*(outcome(t) for t in real), *(outcome(t) for t in forged[1:]))
    elapsed = time.monotonic() - started
    assert results[: len(real)].count(False) == 0  # 0 refusals of the real new key
    assert not any(results[len(real):])  # every forged kid refused
    assert elapsed < 5.0
    assert jwks.fetches <= 2 + elapsed / 1.0 + 1  # bounded: at most one fetch per second
    assert (await verifier.verify(before)).subject == "ml-scorer"  # the previous key still verifies
    await jwks.aclose()
