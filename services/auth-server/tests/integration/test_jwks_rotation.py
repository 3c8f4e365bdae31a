"""Signing key rotation (RFC 7517 JWKS): previous keys keep verifying for the verification
window, then retire and vanish from the JWKS."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from joserfc.errors import JoseError
from sqlalchemy import func, select

from bsopt_auth.models import SigningKey
from bsopt_auth.rfc7517 import ensure_active_key, maintain_keys, rotate_signing_key
from bsopt_common.db import session_scope


def _statuses(session_factory) -> dict[str, str]:
    with session_scope(session_factory) as s:
        return {k.kid: k.status for k in s.scalars(select(SigningKey))}


async def test_jwks_publishes_public_parts_only(oauth) -> None:
    await oauth.client_credentials("ml-scorer")  # makes sure a key exists
    resp = await oauth.client.get("/.well-known/jwks.json")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/jwk-set+json")
    for jwk in resp.json()["keys"]:
        assert jwk["use"] == "sig" and jwk["alg"] in ("RS256", "ES256") and jwk["kid"]
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(jwk)


async def test_rotation_keeps_old_tokens_verifiable(oauth, session_factory, settings) -> None:
    old_resp = await oauth.client_credentials("ml-scorer")
    old_token = old_resp.json()["access_token"]
    old_kid = (await oauth.decode(old_token)).header["kid"]

    new_kid = rotate_signing_key(session_factory, settings.signing_alg)
    assert new_kid != old_kid
    statuses = _statuses(session_factory)
    assert statuses[new_kid] == "active" and statuses[old_kid] == "previous"

    # the old token still verifies against the published JWKS
    assert (await oauth.decode(old_token)).header["kid"] == old_kid
    kids = [k["kid"] for k in (await oauth.client.get("/.well-known/jwks.json")).json()["keys"]]
    assert kids == [new_kid, old_kid]  # active first

    # new tokens use the new key
    new_token = (await oauth.client_credentials("ml-scorer")).json()["access_token"]
    assert (await oauth.decode(new_token)).header["kid"] == new_kid
    body = await oauth.user_tokens()
    assert (await oauth.decode(body["access_token"])).header["kid"] == new_kid
    assert (await oauth.decode(body["id_token"])).header["kid"] == new_kid


async def test_keys_retire_after_the_verification_window(oauth, session_factory, settings) -> None:
    token = (await oauth.client_credentials("ml-scorer")).json()["access_token"]
    first = (await oauth.decode(token)).header["kid"]
    second = rotate_signing_key(session_factory, settings.signing_alg)
    third = rotate_signing_key(session_factory, settings.signing_alg)

    # both earlier keys may still have live tokens: both stay published, without private parts
    statuses = _statuses(session_factory)
    assert (statuses[first], statuses[second], statuses[third]) == ("previous", "previous", "active")
    kids = {k["kid"] for k in (await oauth.client.get("/.well-known/jwks.json")).json()["keys"]}
    assert {first, second, third} <= kids
    assert (await oauth.decode(token)).header["kid"] == first

    later = datetime.now(UTC) + timedelta(seconds=settings.verification_window_seconds + 1)
    maintain_keys(session_factory, alg=settings.signing_alg, rotation_days=0,
                  window_seconds=settings.verification_window_seconds, now=later)
    statuses = _statuses(session_factory)
    assert (statuses[first], statuses[second], statuses[third]) == ("retired", "retired", "active")
    kids = {k["kid"] for k in (await oauth.client.get("/.well-known/jwks.json")).json()["keys"]}
    assert kids == {third}
    with pytest.raises(JoseError):
        await oauth.decode(token)  # its key is no longer published


def test_exactly_one_active_key(session_factory, settings) -> None:
    kid = ensure_active_key(session_factory, settings.signing_alg)
    assert ensure_active_key(session_factory, settings.signing_alg) == kid
    with session_scope(session_factory) as s:
        assert s.scalar(select(func.count()).where(SigningKey.status == "active")) == 1


def test_es256_keys(session_factory) -> None:
    kid = rotate_signing_key(session_factory, "ES256")
    with session_scope(session_factory) as s:
        row = s.get(SigningKey, kid)
        assert row.alg == "ES256" and row.public_jwk["crv"] == "P-256"


async def test_es256_tokens_verify(oauth, session_factory) -> None:
    rotate_signing_key(session_factory, "ES256")
    token = (await oauth.client_credentials("ml-scorer")).json()["access_token"]
    decoded = await oauth.decode(token)
    assert decoded.header["alg"] == "ES256"
