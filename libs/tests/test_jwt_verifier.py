"""The shared access-token verifier (RFC 9068 §4) against a JWKS served over HTTP."""

from __future__ import annotations

import asyncio
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
    # one refetch proved the kid unknown; the repeats hit the negative cache
    assert v.jwks.fetches == 2


async def test_forged_unknown_kid_cannot_starve_a_rotation(issuer):
    """Replay of the audit's attack: the issuer rotates, a forged unknown-kid token arrives
    first, then the real new key's tokens arrive mixed with more forged kids. Before, the
    forged request spent the 10 s refetch budget and 24 of 37 real requests got 401."""
    v = verifier_for(issuer, min_refetch_interval_seconds=10.0)  # the services' setting
    await v.verify(issuer.token(aud=AUD))
    assert v.jwks.fetches == 1
    issuer.rotate()
    with pytest.raises(InvalidTokenError, match="not in the issuer's JWKS"):
        await v.verify(issuer.forged_token(aud=AUD))
    started = time.monotonic()

    async def real() -> bool:
        try:
            await v.verify(issuer.token(aud=AUD))
            return True
        except InvalidTokenError:
            return False

    async def forged() -> bool:
        try:
            await v.verify(issuer.forged_token(aud=AUD))
            return True
        except InvalidTokenError:
            return False

    results = await asyncio.gather(*(real() for _ in range(37)), *(forged() for _ in range(37)))
    elapsed = time.monotonic() - started
    assert results[:37] == [True] * 37  # 0 refusals of the real new key
    assert not any(results[37:])  # every forged kid refused
    assert elapsed < 3.0  # the new key was picked up within about one second
    # fetches are bounded: at most one per second of attack, plus the first ones
    assert v.jwks.fetches <= 3 + elapsed / 1.0
    # and a sustained flood of random forged kids stays bounded too
    flood_start, before = time.monotonic(), v.jwks.fetches
    await asyncio.gather(*(forged() for _ in range(200)))
    assert v.jwks.fetches - before <= 2 + (time.monotonic() - flood_start) / 1.0
    assert await real()


async def test_a_kid_published_after_being_proved_unknown_verifies_within_a_second(issuer):
    v = verifier_for(issuer)
    await v.verify(issuer.token(aud=AUD))
    old = issuer.key
    issuer.rotate()
    new = issuer.key
    issuer.published = [old]  # the new key signs before the JWKS shows it (replica lag)
    token = issuer.token(aud=AUD)
    with pytest.raises(InvalidTokenError):
        await v.verify(token)
    issuer.published = [new, old]
    started = time.monotonic()
    while True:
        try:
            await v.verify(token)
            break
        except InvalidTokenError:
            assert time.monotonic() - started < 2.5
            await asyncio.sleep(0.05)
    assert time.monotonic() - started < 2.5


async def test_concurrent_requests_for_a_new_kid_share_one_fetch(issuer):
    v = verifier_for(issuer)
    await v.verify(issuer.token(aud=AUD))
    issuer.rotate()
    token = issuer.token(aud=AUD)
    await asyncio.gather(*(v.verify(token) for _ in range(20)))
    assert v.jwks.fetches == 2
    assert issuer.jwks_requests == 2


async def test_jwks_max_age_is_honoured_and_defaults_to_five_minutes(issuer):
    v = verifier_for(issuer)
    await v.verify(issuer.token(aud=AUD))
    assert v.jwks.max_age == 300.0  # no Cache-Control: the default
    issuer.jwks_max_age = 42
    v2 = verifier_for(issuer)
    await v2.verify(issuer.token(aud=AUD))
    assert v2.jwks.max_age == 42.0


async def test_a_key_removed_from_the_jwks_stops_verifying_within_max_age(issuer):
    issuer.jwks_max_age = 1
    v = verifier_for(issuer)
    old_token = issuer.token(aud=AUD)
    await v.verify(old_token)
    old_kid = issuer.key.kid
    issuer.rotate()
    issuer.revoke(old_kid)
    await v.verify(old_token)  # still cached: within max-age
    await asyncio.sleep(1.2)
    with pytest.raises(InvalidTokenError, match="not in the issuer's JWKS"):
        await v.verify(old_token)
    await v.verify(issuer.token(aud=AUD))


async def test_the_jwks_is_refreshed_in_the_background_before_expiry(issuer):
    issuer.jwks_max_age = 2
    v = verifier_for(issuer)
    await v.verify(issuer.token(aud=AUD))
    await asyncio.sleep(1.85)  # inside the last 10% of max-age
    await v.verify(issuer.token(aud=AUD))  # answered from the cache, refresh started
    await asyncio.sleep(0.3)
    assert v.jwks.fetches == 2
    await v.verify(issuer.token(aud=AUD))  # past the first expiry: the refreshed set, no wait
    assert v.jwks.fetches == 2


async def test_unreachable_issuer_serves_the_stale_set_only_for_a_grace(issuer):
    issuer.jwks_max_age = 1
    v = verifier_for(issuer, stale_if_error_seconds=1.0)
    token = issuer.token(aud=AUD)
    await v.verify(token)
    issuer.stop()
    await asyncio.sleep(1.1)
    await v.verify(token)  # fetch fails: the stale set serves within the grace
    await asyncio.sleep(1.2)
    with pytest.raises(InvalidTokenError, match="unavailable"):
        await v.verify(token)


async def test_event_clock_override_checks_expiry_at_production_time(issuer):
    old = int(time.time()) - 3600
    tok = issuer.token(aud=AUD, issued_at=old, ttl_seconds=300)
    with pytest.raises(InvalidTokenError):
        await verifier_for(issuer).verify(tok)
    claims = await verifier_for(issuer).verify(tok, now=old + 10)
    assert claims.subject == "user-1"
