"""Migrations into schema ``auth`` and the idempotent dev seed."""

from __future__ import annotations

from sqlalchemy import func, inspect, select

from bsopt_auth.db import migrate
from bsopt_auth.models import Client, User
from bsopt_auth.passwords import verify_client_secret, verify_secret
from bsopt_auth.seed import DEV_CLIENTS, dev_client_secret, seed_dev
from bsopt_common.db import session_scope


def test_tables_live_in_schema_auth(engine) -> None:
    insp = inspect(engine)
    assert {"users", "clients", "authorization_codes", "signing_keys", "alembic_version"} <= set(
        insp.get_table_names(schema="auth")
    )
    assert "users" not in insp.get_table_names(schema="public")


def test_migrate_is_idempotent(engine) -> None:
    migrate(engine)
    migrate(engine)


def test_seed_is_idempotent(session_factory) -> None:
    again = seed_dev(session_factory)
    assert again == {"users": [], "clients": []}
    with session_scope(session_factory) as s:
        assert s.scalar(select(func.count()).select_from(User)) == 1
        assert s.scalar(select(func.count()).select_from(Client)) >= len(DEV_CLIENTS)


def test_seeded_clients(session_factory) -> None:
    with session_scope(session_factory) as s:
        clients = {c.client_id: c for c in s.scalars(select(Client))}
        user = s.scalars(select(User).where(User.username == "demo")).one()
    cli = clients["bsopt-cli"]
    assert cli.client_type == "public" and cli.client_secret_hash is None
    assert cli.redirect_uris == ["http://127.0.0.1/callback"]  # the CLI's loopback callback
    # seeded DPoP-bound (the shared conftest turns the flag off for its code-flow helpers)
    assert next(c for c in DEV_CLIENTS if c.client_id == "bsopt-cli").dpop_bound_access_tokens
    docs = clients["bsopt-docs"]  # resource-api's Swagger UI (dev origin, default port): bearer tokens
    assert docs.client_type == "public" and not docs.dpop_bound_access_tokens
    assert docs.redirect_uris == ["http://127.0.0.1:8000/docs/oauth2-redirect"]
    assert "authorization_code" in docs.grant_types
    assert cli.grant_types == ["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code"]
    assert cli.allowed_resources == ["urn:bsopt:resource-api"]
    assert cli.token_endpoint_auth_method == "none"
    assert set(clients["resource-api"].allowed_resources) == {
        "urn:bsopt:broker-gateway", "urn:bsopt:ml-scorer", "urn:bsopt:rl-trainer", "urn:bsopt:kafka"
    }
    assert set(clients["rl-trainer"].allowed_scopes) == {"broker:accounts", "broker:orders", "kafka:cluster"}
    exchange = "urn:ietf:params:oauth:grant-type:token-exchange"  # RFC 8693: acts for a user
    for cid in ("resource-api", "rl-trainer", "broker-gateway", "ml-scorer", "digest-worker"):
        c = clients[cid]
        expected = ["client_credentials", exchange] if cid in ("resource-api", "rl-trainer") else ["client_credentials"]
        assert c.client_type == "confidential" and c.grant_types == expected
        assert c.client_secret_hash.startswith("sha256$")  # server-generated secret: a digest
        assert dev_client_secret(cid) not in c.client_secret_hash
        assert verify_client_secret(c.client_secret_hash, dev_client_secret(cid))
    assert user.password_hash.startswith("$argon2id$")
    assert verify_secret(user.password_hash, "demo-password")


def test_seed_repairs_drifted_metadata(session_factory) -> None:
    with session_scope(session_factory) as s:
        s.get(Client, "ml-scorer").allowed_scopes = ["tampered"]
    seed_dev(session_factory)
    with session_scope(session_factory) as s:
        assert s.get(Client, "ml-scorer").allowed_scopes == ["kafka:cluster"]
