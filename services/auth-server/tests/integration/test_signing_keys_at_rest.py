"""Signing keys at rest and their revocation, replaying the audit's attacks against a real
auth-server (``bootstrap.serve`` on a free 127.0.0.1 port over the module's Postgres) and
the shared resource-server verifier (``bsopt_common.security.jwt``) over real HTTP.

Attack A: read ``auth.signing_keys`` as a database dump would and mint tokens with what
the rows hold. Attack B: a revoked key's tokens must stop verifying everywhere within
the JWKS max-age."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, RSAKey
from pydantic import ValidationError
from sqlalchemy import Engine, text

from bsopt_auth.bootstrap import prepare, serve
from bsopt_auth.config import AuthSettings
from bsopt_auth.rfc7517 import (
    KeyDecryptionError,
    configure_key_encryption,
    get_active_key,
    maintain_keys,
    revoke_signing_key,
    rotate_signing_key,
)
from bsopt_auth.rfc7517.encryption import LocalKeyEncryptionKey, dev_only_key_encryption_key
from bsopt_common.db import session_scope
from bsopt_common.security.jwt import AccessTokenVerifier, InvalidTokenError, JWKSCache
from bsopt_common.settings import KAFKA_AUDIENCE
from bsopt_common.testing.services import ServiceThread, free_port

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi"}


@pytest.fixture(scope="module")
def http_issuer(postgres_url: str, engine: Engine) -> Iterator[str]:
    """A real auth-server over HTTP; its JWKS says ``max-age=1``."""
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    settings = AuthSettings(
        _env_file=None, environment="test", database_url=postgres_url, issuer=issuer, port=port,
        seed_dev_on_start=True, jwks_max_age_seconds=1,
    )
    with ServiceThread(lambda stop: serve(settings, stop), port=port):
        yield issuer


def _client_token(issuer: str, client_id: str = "ml-scorer") -> str:
    resp = httpx.post(issuer + "/oauth2/token", data={"grant_type": "client_credentials",
                                                      "resource": KAFKA_AUDIENCE},
                      auth=(client_id, f"dev-{client_id}-secret"), timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()["access_token"]


def _kid(token: str) -> str:
    seg = token.split(".", 1)[0]
    return json.loads(base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4)))["kid"]


def _verifier(issuer: str) -> AccessTokenVerifier:
    """What every resource server builds (``ServiceRuntime``)."""
    return AccessTokenVerifier(issuer, KAFKA_AUDIENCE, JWKSCache(issuer + "/.well-known/jwks.json"))


def _dump(engine: Engine) -> list[dict]:
    """The table as ``pg_dump``/``COPY`` would hand it over: every column, as text."""
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(text(
            "SELECT kid, alg, status, public_jwk::text AS public_jwk, encode(private_ciphertext, 'base64') "
            "AS private_ciphertext, encode(private_nonce, 'base64') AS private_nonce, "
            "encode(wrapped_dek, 'base64') AS wrapped_dek, kek_id, row_to_json(k)::text AS whole_row "
            "FROM auth.signing_keys k"))]


def _claims(issuer: str) -> dict:
    now = int(time.time())
    return {"iss": issuer, "sub": "attacker", "aud": KAFKA_AUDIENCE, "client_id": "ml-scorer",
            "scope": "kafka:cluster", "iat": now, "nbf": now, "exp": now + 300, "jti": "forged-1"}


async def test_dump_of_signing_keys_holds_no_private_key_and_mints_nothing(http_issuer, engine,
                                                                          session_factory) -> None:
    real = _client_token(http_issuer)
    verifier = _verifier(http_issuer)
    assert (await verifier.verify(real)).client_id == "ml-scorer"  # control: the real key works
    rotate_signing_key(session_factory, "RS256")  # an active and a previous (retired-from-signing) key
    rotate_signing_key(session_factory, "ES256")

    rows = _dump(engine)
    with engine.connect() as conn:
        columns = {c for (c,) in conn.execute(text(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'auth' AND table_name = 'signing_keys'"))}
    assert "private_jwk" not in columns
    assert len(rows) >= 3
    for row in rows:
        public = json.loads(row["public_jwk"])
        assert not PRIVATE_MEMBERS & set(public), row["kid"]
        whole = json.loads(row["whole_row"])
        assert not PRIVATE_MEMBERS & set(whole["public_jwk"])
        if row["status"] == "active":  # ciphertext only, and it is not JSON
            sealed = base64.b64decode(row["private_ciphertext"])
            assert b'"d"' not in sealed and b"kty" not in sealed
            assert row["kek_id"].startswith("dev-only:") and row["wrapped_dek"]
        else:  # keys that stopped signing keep no private part at all
            assert row["private_ciphertext"] is None and row["wrapped_dek"] is None
    assert [r["status"] for r in rows].count("active") == 1

    # Mint with everything the rows hold: each token is refused by the verifier.
    forged: list[str] = []
    for row in rows:
        public = json.loads(row["public_jwk"])
        key = RSAKey.import_key(public) if public["kty"] == "RSA" else ECKey.import_key(public)
        header = {"alg": row["alg"], "kid": row["kid"], "typ": "at+jwt"}
        try:
            forged.append(jwt.encode(header, _claims(http_issuer), key))
        except Exception:
            pass  # a public key cannot sign: nothing to replay
        for blob in (row["public_jwk"], row["private_ciphertext"], row["wrapped_dek"], row["whole_row"]):
            if blob:  # the bytes as an HMAC secret (algorithm confusion)
                forged.append(jwt.encode({"alg": "HS256", "kid": row["kid"], "typ": "at+jwt"},
                                         _claims(http_issuer), OctKey.import_key(blob.encode())))
        # a key of the attacker's own, under the row's kid
        own = RSAKey.generate_key(2048) if row["alg"] == "RS256" else ECKey.generate_key("P-256")
        forged.append(jwt.encode(header, _claims(http_issuer), own))
    refused = 0
    for token in forged:
        with pytest.raises(InvalidTokenError):
            await verifier.verify(token)
        refused += 1
    assert refused == len(forged) >= 3 * len(rows)
    # The wrapped DEK is no key either: without the KEK the ciphertext does not open.
    active = next(r for r in rows if r["status"] == "active")
    wrapped = base64.b64decode(active["wrapped_dek"])
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    with pytest.raises(InvalidTag):
        AESGCM(wrapped[12:44]).decrypt(base64.b64decode(active["private_nonce"]),
                                       base64.b64decode(active["private_ciphertext"]), None)
    await verifier.jwks.aclose()


def test_ciphertext_cannot_be_swapped_between_rows_or_opened_with_another_kek(engine, session_factory) -> None:
    with session_scope(session_factory) as s:
        first = get_active_key(s, "RS256").kid
    with engine.connect() as conn:
        sealed = conn.execute(text("SELECT private_ciphertext, private_nonce, wrapped_dek, kek_id "
                                   "FROM auth.signing_keys WHERE kid = :k"), {"k": first}).one()
    second = rotate_signing_key(session_factory, "RS256")
    with engine.begin() as conn:  # an attacker with write access moves the first key into the active row
        original = conn.execute(text("SELECT private_ciphertext, private_nonce, wrapped_dek "
                                     "FROM auth.signing_keys WHERE kid = :k"), {"k": second}).one()
        conn.execute(text("UPDATE auth.signing_keys SET private_ciphertext = :c, private_nonce = :n, "
                          "wrapped_dek = :w WHERE kid = :k"),
                     {"c": sealed[0], "n": sealed[1], "w": sealed[2], "k": second})
    with pytest.raises(KeyDecryptionError), session_scope(session_factory) as s:
        get_active_key(s, "RS256")
    with engine.begin() as conn:
        conn.execute(text("UPDATE auth.signing_keys SET private_ciphertext = :c, private_nonce = :n, "
                          "wrapped_dek = :w WHERE kid = :k"),
                     {"c": original[0], "n": original[1], "w": original[2], "k": second})
    other = LocalKeyEncryptionKey(b"\x01" * 32)
    with pytest.raises(KeyDecryptionError, match="wrapped by KEK"), session_scope(session_factory) as s:
        get_active_key(s, "RS256", other)
    with session_scope(session_factory) as s:
        assert get_active_key(s, "RS256").kid == second


def test_start_up_with_another_kek_stops_with_a_clear_message(postgres_url: str, engine) -> None:
    other = base64.b64encode(b"\x02" * 32).decode()
    settings = AuthSettings(_env_file=None, environment="test", database_url=postgres_url,
                            key_encryption_key=other)
    try:
        with pytest.raises(RuntimeError, match=r"cannot be decrypted.*keys revoke"):
            prepare(settings, seed=False).dispose()
    finally:
        configure_key_encryption(dev_only_key_encryption_key())


async def test_revoked_key_is_refused_by_resource_servers_within_max_age(http_issuer, session_factory) -> None:
    token = _client_token(http_issuer)
    verifier = _verifier(http_issuer)
    claims = await verifier.verify(token)
    kid = _kid(token)
    assert claims.subject == "ml-scorer"

    new_kid = revoke_signing_key(session_factory, kid, "RS256")
    assert new_kid and new_kid != kid
    jwks = httpx.get(http_issuer + "/.well-known/jwks.json", timeout=10)
    assert kid not in {k["kid"] for k in jwks.json()["keys"]}  # gone from the JWKS at once
    assert jwks.headers["cache-control"] == "public, max-age=1"

    await asyncio.sleep(1.2)  # the verifier's cache max-age passes
    with pytest.raises(InvalidTokenError, match="not in the issuer's JWKS"):
        await verifier.verify(token)
    fresh = _client_token(http_issuer)
    assert _kid(fresh) == new_kid
    assert (await verifier.verify(fresh)).subject == "ml-scorer"
    await verifier.jwks.aclose()


async def test_scheduled_rotation_keeps_old_tokens_until_the_window_passes(http_issuer, session_factory) -> None:
    settings = AuthSettings(_env_file=None, environment="test", issuer=http_issuer)
    window = settings.verification_window_seconds
    token = _client_token(http_issuer)
    kid = _kid(token)
    # not due yet: nothing happens
    assert maintain_keys(session_factory, alg="RS256", rotation_days=30, window_seconds=window) is None
    # due: the active key is older than rotation_days
    later = datetime.now(UTC) + timedelta(days=31)
    new_kid = maintain_keys(session_factory, alg="RS256", rotation_days=30, window_seconds=window, now=later)
    assert new_kid and new_kid != kid
    verifier = _verifier(http_issuer)
    assert (await verifier.verify(token)).subject == "ml-scorer"  # previous key still published
    # after the window, the previous key retires and leaves the JWKS
    maintain_keys(session_factory, alg="RS256", rotation_days=30, window_seconds=window,
                  now=datetime.now(UTC) + timedelta(seconds=window + 1))
    kids = {k["kid"] for k in httpx.get(http_issuer + "/.well-known/jwks.json", timeout=10).json()["keys"]}
    assert kid not in kids and new_kid in kids
    await asyncio.sleep(1.2)
    with pytest.raises(InvalidTokenError):
        await verifier.verify(token)
    await verifier.jwks.aclose()


def test_server_rotates_on_schedule(postgres_url: str, engine) -> None:
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    settings = AuthSettings(
        _env_file=None, environment="test", database_url=postgres_url, issuer=issuer, port=port,
        signing_key_rotation_days=1.5 / 86_400, key_maintenance_interval_seconds=0.5,
    )
    with ServiceThread(lambda stop: serve(settings, stop), port=port):
        first = httpx.get(issuer + "/.well-known/jwks.json", timeout=10).json()["keys"][0]["kid"]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            kids = [k["kid"] for k in httpx.get(issuer + "/.well-known/jwks.json", timeout=10).json()["keys"]]
            if kids[0] != first:
                break
            time.sleep(0.2)
        assert kids[0] != first and first in kids  # rotated; the old key still published


def test_key_encryption_key_is_required_outside_dev(tmp_path: Path, monkeypatch) -> None:
    for name in ("BSOPT_AUTH_KEY_ENCRYPTION_KEY", "BSOPT_AUTH_KEY_ENCRYPTION_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    prod = {"_env_file": None, "environment": "prod", "issuer": "https://auth.example",
            "database_url": "postgresql://u@db.example/bsopt"}
    with pytest.raises(ValidationError, match="BSOPT_AUTH_KEY_ENCRYPTION_KEY_FILE"):
        AuthSettings(**prod)
    dev_kek = base64.b64encode(dev_only_key_encryption_key().secret).decode()
    with pytest.raises(ValidationError, match="dev-only"):
        AuthSettings(**prod, key_encryption_key=dev_kek)
    with pytest.raises(ValidationError, match="32"):
        AuthSettings(**prod, key_encryption_key=base64.b64encode(b"short").decode())
    secret = tmp_path / "kek"
    secret.write_text(base64.b64encode(bytes(range(32))).decode() + "\n")
    kek = AuthSettings(**prod, key_encryption_key_file=secret).key_encryption_key_provider()
    assert kek.key_id.startswith("local:") and str(bytes(range(32))) not in repr(kek)
    # dev/test without one: the deterministic dev-only KEK, named as such
    assert AuthSettings(_env_file=None, environment="dev").key_encryption_key_provider().key_id.startswith(
        "dev-only:")
