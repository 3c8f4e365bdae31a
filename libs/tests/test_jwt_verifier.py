"""The shared access-token verifier (RFC 9068 §4) against a JWKS served over HTTP."""

from __future__ import annotations

import time

import pytest

from bsopt_common.security import AccessTokenVerifier, InsufficientScopeError, InvalidTokenError, JWKSCache
from bsopt_common.testing.tokens import TestIssuer

AUD = "urn:bsopt:broker-gateway"


@pytest.fixture
def issuer():
    with TestIssuer() as iss:
        yield iss


def verifier_for(issuer: TestIssuer, **kw) -> AccessTokenVerifier:
    return AccessTokenVerifier(issuer.issuer, AUD, JWKSCache(issuer.jwks_url, **kw), leeway_seconds=5)


async def test_valid_token_gives_subject_client_and_scopes(issuer):
    v = verifier_for(issuer)
    claims = await v.verify(issuer.token(aud=AUD, scope="broker:orders broker:import", sub="u-42"),
                            ["broker:orders"])
    assert claims.subject == "u-42"
    assert claims.client_id == "test-client"
    assert claims.scopes == {"broker:orders", "broker:import"}


async def test_audience_list_containing_ours_is_accepted(issuer):
    claims = await verifier_for(issuer).verify(issuer.token(aud=["urn:other", AUD]))
    assert AUD in claims.audience


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda i: i.token(aud="urn:bsopt:ml-scorer"), "aud"),
        (lambda i: i.expired_token(aud=AUD), "expired"),
        (lambda i: i.token(aud=AUD, rogue=True), "not in the issuer's JWKS"),
        (lambda i: i.token(aud=AUD, typ="JWT"), r"at\+jwt"),
        (lambda i: i.token(aud=AUD, nbf=int(time.time()) + 600), "not yet valid"),
        (lambda i: "not-a-token", "malformed"),
    ],
    ids=["wrong-aud", "expired", "unknown-key", "wrong-typ", "not-yet-valid", "garbage"],
)
async def test_refusals(issuer, make, message):
    with pytest.raises(InvalidTokenError, match=message):
        await verifier_for(issuer).verify(make(issuer))


async def test_wrong_issuer_is_refused(issuer):
    v = AccessTokenVerifier("http://evil.example", AUD, JWKSCache(issuer.jwks_url))
    with pytest.raises(InvalidTokenError, match="iss"):
        await v.verify(issuer.token(aud=AUD))


async def test_leeway_accepts_a_token_just_expired(issuer):
    tok = issuer.token(aud=AUD, issued_at=int(time.time()) - 302, ttl_seconds=300)
    assert (await verifier_for(issuer).verify(tok)).subject == "user-1"


async def test_missing_scope_is_insufficient_scope(issuer):
    with pytest.raises(InsufficientScopeError) as err:
        await verifier_for(issuer).verify(issuer.token(aud=AUD, scope="broker:accounts"), ["broker:orders"])
    assert err.value.missing == ("broker:orders",)


async def test_rotation_refetches_jwks_on_unknown_kid_once(issuer):
    v = verifier_for(issuer, min_refetch_interval_seconds=0.0)
    await v.verify(issuer.token(aud=AUD))
    assert v.jwks.fetches == 1
    issuer.rotate()
    await v.verify(issuer.token(aud=AUD))  # new kid -> one refetch
    assert v.jwks.fetches == 2
    await v.verify(issuer.token(aud=AUD))  # cached now
    assert v.jwks.fetches == 2


async def test_unknown_kid_refetch_is_rate_limited(issuer):
    v = verifier_for(issuer, min_refetch_interval_seconds=60.0)
    await v.verify(issuer.token(aud=AUD))
    for _ in range(5):
        with pytest.raises(InvalidTokenError):
            await v.verify(issuer.token(aud=AUD, rogue=True))
    assert v.jwks.fetches == 1


async def test_event_clock_override_checks_expiry_at_production_time(issuer):
    old = int(time.time()) - 3600
    tok = issuer.token(aud=AUD, issued_at=old, ttl_seconds=300)
    with pytest.raises(InvalidTokenError):
        await verifier_for(issuer).verify(tok)
    claims = await verifier_for(issuer).verify(tok, now=old + 10)
    assert claims.subject == "user-1"
