"""Issue 7 (speed): client secrets as SHA-256 digests, the active-key cache, the discovery
and JWKS caches, the secret-client cache, and what each must still guarantee."""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from argon2 import PasswordHasher, Type
from sqlalchemy import Engine, event, select, update

from bsopt_auth import passwords
from bsopt_auth import rfc7517 as keys
from bsopt_auth.app import create_app
from bsopt_auth.models import Client, SigningKey
from bsopt_auth.passwords import (
    SHA256_PREFIX,
    client_secret_needs_upgrade,
    hash_client_secret,
    verify_client_secret,
)
from bsopt_auth.rfc6749 import client_auth
from bsopt_auth.rfc7517 import get_active_key, rotate_signing_key
from bsopt_common.db import session_scope

CLIENT = "digest-worker"
SECRET = f"dev-{CLIENT}-secret"


@contextmanager
def count_queries(engine: Engine) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(conn, cursor, statement, *args) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def _stored_secret(session_factory, client_id: str = CLIENT) -> str | None:
    with session_scope(session_factory) as s:
        return s.scalar(select(Client.client_secret_hash).where(Client.client_id == client_id))


def _set_secret_hash(session_factory, value: str, client_id: str = CLIENT) -> None:
    with session_scope(session_factory) as s:
        s.execute(update(Client).where(Client.client_id == client_id).values(client_secret_hash=value))


# --- the digest format ----------------------------------------------------------------


def test_digest_format_verifies_and_refuses() -> None:
    stored = hash_client_secret("s3cret-high-entropy")
    assert stored.startswith(SHA256_PREFIX) and len(stored) == len(SHA256_PREFIX) + 64
    assert "s3cret" not in stored
    assert verify_client_secret(stored, "s3cret-high-entropy")
    assert not verify_client_secret(stored, "s3cret-high-entropy ")
    assert not verify_client_secret(stored, "")
    assert not verify_client_secret(None, "anything")  # unknown/public client: dummy compare
    assert not verify_client_secret("plaintext-secret", "plaintext-secret")  # unknown format
    assert not verify_client_secret(SHA256_PREFIX + "zz", "x")
    assert not client_secret_needs_upgrade(stored)


def test_digest_compare_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []
    original = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return original(a, b)

    monkeypatch.setattr(passwords.hmac, "compare_digest", spy)
    stored = hash_client_secret("abc")
    assert verify_client_secret(stored, "abc") and not verify_client_secret(stored, "abd")
    assert not verify_client_secret(None, "abc")  # the unknown client compares too
    assert len(calls) == 3


def test_unknown_client_costs_no_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_a, **_k):
        raise AssertionError("argon2 used for a client secret")

    monkeypatch.setattr(passwords, "verify_secret", boom)
    t0 = time.perf_counter()
    for _ in range(100):
        assert not verify_client_secret(None, "guess")
    assert time.perf_counter() - t0 < 0.5  # microseconds each, not 100 ms


def test_legacy_argon2_hash_still_verifies() -> None:
    legacy = PasswordHasher(type=Type.ID, memory_cost=8192, time_cost=1).hash("old-secret")
    assert client_secret_needs_upgrade(legacy)
    assert verify_client_secret(legacy, "old-secret")
    assert not verify_client_secret(legacy, "wrong")


async def test_seeded_clients_use_the_token_endpoint_with_digests(oauth, session_factory) -> None:
    assert (_stored_secret(session_factory) or "").startswith(SHA256_PREFIX)
    assert (await oauth.client_credentials(CLIENT)).status_code == 200
    assert (await oauth.client_credentials(CLIENT, "wrong")).status_code == 401
    assert (await oauth.client_credentials(CLIENT, method="post")).status_code == 200


async def test_argon2_row_is_upgraded_on_successful_use(oauth, session_factory) -> None:
    legacy = PasswordHasher(type=Type.ID, memory_cost=8192, time_cost=1).hash(SECRET)
    _set_secret_hash(session_factory, legacy)
    try:
        # a wrong secret is refused and leaves the row as it was
        assert (await oauth.client_credentials(CLIENT, "wrong")).status_code == 401
        assert _stored_secret(session_factory) == legacy
        resp = await oauth.client_credentials(CLIENT)
        assert resp.status_code == 200, resp.text
        upgraded = _stored_secret(session_factory)
        assert upgraded == hash_client_secret(SECRET)
        assert (await oauth.client_credentials(CLIENT)).status_code == 200  # and keeps working
        assert (await oauth.client_credentials(CLIENT, "wrong")).status_code == 401
    finally:
        _set_secret_hash(session_factory, hash_client_secret(SECRET))


# --- the active key cache ----------------------------------------------------------------


def test_active_key_is_cached_without_database_round_trips(engine, session_factory, settings) -> None:
    with session_scope(session_factory) as s:
        first = get_active_key(s, settings.signing_alg)
    with count_queries(engine) as statements, session_scope(session_factory) as s:
        again = get_active_key(s, settings.signing_alg)
    assert again is first and statements == []


def test_rotation_here_is_seen_at_once(session_factory, settings) -> None:
    with session_scope(session_factory) as s:
        before = get_active_key(s, settings.signing_alg)
    new_kid = rotate_signing_key(session_factory, settings.signing_alg)
    with session_scope(session_factory) as s:
        after = get_active_key(s, settings.signing_alg)
    assert after.kid == new_kid != before.kid


def test_rotation_by_another_process_is_seen_within_the_ttl(session_factory, settings,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    keys.configure_active_key_cache(0.3)
    try:
        with session_scope(session_factory) as s:
            before = get_active_key(s, settings.signing_alg)
        with monkeypatch.context() as m:  # another process: this one's cache is not told
            m.setattr(keys, "invalidate_key_cache", lambda: None)
            new_kid = rotate_signing_key(session_factory, settings.signing_alg)
        with session_scope(session_factory) as s:
            assert get_active_key(s, settings.signing_alg).kid == before.kid  # within the TTL
        time.sleep(0.35)
        with session_scope(session_factory) as s:
            assert get_active_key(s, settings.signing_alg).kid == new_kid  # the kid changed: reloaded
        with session_scope(session_factory) as s:
            status = s.scalar(select(SigningKey.status).where(SigningKey.kid == before.kid))
        assert status == "previous"  # what the stale key signed meanwhile still verifies
    finally:
        keys.configure_active_key_cache(1.0)


def test_revocation_drops_the_cached_key(session_factory, settings) -> None:
    with session_scope(session_factory) as s:
        before = get_active_key(s, settings.signing_alg)
    new_kid = keys.revoke_signing_key(session_factory, before.kid, settings.signing_alg)
    with session_scope(session_factory) as s:
        assert get_active_key(s, settings.signing_alg).kid == new_kid != before.kid


async def test_token_after_rotation_has_the_new_kid_and_old_tokens_verify(oauth, session_factory,
                                                                          settings) -> None:
    old = (await oauth.client_credentials(CLIENT)).json()["access_token"]
    old_kid = (await oauth.decode(old)).header["kid"]
    await oauth.client.get("/.well-known/jwks.json")  # the JWKS is cached now
    new_kid = rotate_signing_key(session_factory, settings.signing_alg)
    new = (await oauth.client_credentials(CLIENT)).json()["access_token"]
    assert (await oauth.decode(new)).header["kid"] == new_kid != old_kid
    assert (await oauth.decode(old)).header["kid"] == old_kid  # still published as previous


# --- the discovery and JWKS caches ----------------------------------------------------


async def test_discovery_and_jwks_are_served_from_memory(app, client, engine) -> None:
    first = await client.get("/.well-known/openid-configuration")
    jwks = await client.get("/.well-known/jwks.json")
    with count_queries(engine) as statements:
        for _ in range(5):
            again = await client.get("/.well-known/openid-configuration")
            assert again.json() == first.json()
            assert (await client.get("/.well-known/jwks.json")).json() == jwks.json()
    assert statements == []
    assert again.headers["cache-control"].startswith("public, max-age=")
    assert again.headers["content-type"] == "application/json"


async def test_jwks_follows_rotation_and_revocation_at_once(client, session_factory, settings) -> None:
    before = [k["kid"] for k in (await client.get("/.well-known/jwks.json")).json()["keys"]]
    new_kid = rotate_signing_key(session_factory, settings.signing_alg)
    after = [k["kid"] for k in (await client.get("/.well-known/jwks.json")).json()["keys"]]
    assert after[0] == new_kid and before[0] in after
    keys.revoke_signing_key(session_factory, before[0], settings.signing_alg)
    revoked = [k["kid"] for k in (await client.get("/.well-known/jwks.json")).json()["keys"]]
    assert before[0] not in revoked


async def test_jwks_cache_expires_for_another_process_rotation(engine, session_factory, settings,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    app = create_app(settings.model_copy(update={"metadata_cache_seconds": 0.3}), engine)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=settings.issuer) as c:
        before = (await c.get("/.well-known/jwks.json")).json()
        with monkeypatch.context() as m:
            m.setattr(keys, "invalidate_key_cache", lambda: None)
            new_kid = rotate_signing_key(session_factory, settings.signing_alg)
        assert (await c.get("/.well-known/jwks.json")).json() == before  # within the TTL
        time.sleep(0.35)
        assert (await c.get("/.well-known/jwks.json")).json()["keys"][0]["kid"] == new_kid


# --- the secret client cache -------------------------------------------------------------


async def test_client_cache_skips_the_database_and_expires(oauth, engine, session_factory) -> None:
    client_auth.configure_client_cache(0.3)
    try:
        assert (await oauth.client_credentials(CLIENT)).status_code == 200
        with count_queries(engine) as statements:
            assert (await oauth.client_credentials(CLIENT)).status_code == 200
        assert not [s for s in statements if "auth.clients" in s]
        assert (await oauth.client_credentials(CLIENT, "wrong")).status_code == 401
        _set_secret_hash(session_factory, hash_client_secret("rotated-" + SECRET))
        time.sleep(0.35)
        assert (await oauth.client_credentials(CLIENT)).status_code == 401  # the old secret is gone
        assert (await oauth.client_credentials(CLIENT, "rotated-" + SECRET)).status_code == 200
    finally:
        client_auth.configure_client_cache(0)
        _set_secret_hash(session_factory, hash_client_secret(SECRET))
