"""Administration (CLI and ``/admin`` API over :mod:`bsopt_auth.admin`) and the audit
trail (``auth.audit_events`` + ``auth.audit.v1`` through the outbox, signed with the
auth-server's own key and verified by a real consumer over the embedded Kafka)."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text
from typer.testing import CliRunner

from bsopt_auth import admin, audit
from bsopt_auth.__main__ import cli
from bsopt_auth.bootstrap import audit_relay, register_event_key
from bsopt_auth.models import AuditEvent
from bsopt_auth.seed import ADMIN_CLIENT_ID, DEMO_PASSWORD, DEMO_USERNAME, dev_client_secret
from bsopt_common.db import session_scope
from bsopt_common.events import Event, EventConsumer, EventPublisher
from bsopt_common.security.event_signing import EventSignatureVerifier, generate_signing_key, private_jwk_json
from bsopt_common.topics import AUTH_AUDIT

TOKEN = "/oauth2/token"


@pytest.fixture(scope="module")
def env(postgres_url: str, engine) -> dict[str, str]:  # engine: migrated and seeded
    return {"BSOPT_AUTH_DATABASE_URL": postgres_url, "BSOPT_AUTH_ENVIRONMENT": "test"}


def _basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


async def _fresh_login(oauth, **kwargs: Any):
    oauth.client.cookies.clear()  # no sign-in session: the form is shown
    return await oauth.login(**kwargs)


async def _cc(client: httpx.AsyncClient, client_id: str, secret: str, **data: str) -> httpx.Response:
    return await client.post(TOKEN, data={"grant_type": "client_credentials", **data},
                             headers=_basic(client_id, secret))


def _audit_rows(session_factory, **where: Any) -> list[dict[str, Any]]:
    with session_scope(session_factory) as s:
        q = select(AuditEvent).order_by(AuditEvent.occurred_at)
        for k, v in where.items():
            q = q.where(getattr(AuditEvent, k) == v)
        return [{c.name: (str(getattr(r, c.name)) if getattr(r, c.name) is not None else None)
                 for c in AuditEvent.__table__.columns} | {"details": r.details} for r in s.scalars(q)]


# --------------------------------------------------------------------------- CLI


async def test_cli_clients_create_rotate_delete(env, client: httpx.AsyncClient, session_factory) -> None:
    runner = CliRunner()
    created = runner.invoke(cli, ["clients", "create", "svc-one", "--type", "confidential",
                                  "--grant-type", "client_credentials", "--scope", "trades:read",
                                  "--resource", "urn:bsopt:resource-api"], env=env)
    assert created.exit_code == 0, created.output
    secret = created.output.split("client_secret: ")[1].split()[0]
    assert len(base64.urlsafe_b64decode(secret + "==")) >= 32
    ok = await _cc(client, "svc-one", secret)
    assert ok.status_code == 200, ok.text

    for args in (["clients", "list"], ["clients", "show", "svc-one"]):
        shown = runner.invoke(cli, args, env=env)
        assert shown.exit_code == 0 and "svc-one" in shown.output and secret not in shown.output
        assert "sha256$" not in shown.output

    rotated = runner.invoke(cli, ["clients", "rotate-secret", "svc-one"], env=env)
    assert rotated.exit_code == 0, rotated.output
    new_secret = rotated.output.split("client_secret: ")[1].split()[0]
    assert new_secret != secret
    assert (await _cc(client, "svc-one", new_secret)).status_code == 200
    old = await _cc(client, "svc-one", secret)
    assert old.status_code == 401 and old.json()["error"] == "invalid_client"

    dup = runner.invoke(cli, ["clients", "create", "svc-one", "--grant-type", "client_credentials"], env=env)
    assert dup.exit_code == 2 and "already exists" in dup.output
    bad = runner.invoke(cli, ["clients", "create", "pub", "--type", "public", "--grant-type",
                              "client_credentials"], env=env)
    assert bad.exit_code == 2

    deleted = runner.invoke(cli, ["clients", "delete", "svc-one"], env=env)
    assert deleted.exit_code == 0
    assert runner.invoke(cli, ["clients", "show", "svc-one"], env=env).exit_code == 1
    assert (await _cc(client, "svc-one", new_secret)).status_code == 401

    rows = _audit_rows(session_factory, client_id="svc-one")
    types = [r["event_type"] for r in rows]
    assert audit.CLIENT_CREATED in types and audit.CLIENT_SECRET_ROTATED in types and audit.CLIENT_DELETED in types
    assert audit.TOKEN_ISSUED in types and audit.TOKEN_REFUSED in types
    dumped = json.dumps(rows)
    assert secret not in dumped and new_secret not in dumped


async def test_cli_users_disable_and_reset_password(env, oauth, client: httpx.AsyncClient) -> None:
    runner = CliRunner()
    made = runner.invoke(cli, ["users", "create", "carol", "--password-stdin"], input="carol-pass-1\n", env=env)
    assert made.exit_code == 0, made.output
    assert "carol-pass-1" not in made.output
    tokens = await oauth.user_tokens(username="carol", password="carol-pass-1",
                                     scope="openid offline_access trades:read")
    refresh = tokens["refresh_token"]

    disabled = runner.invoke(cli, ["users", "disable", "carol"], env=env)
    assert disabled.exit_code == 0 and "disabled=-" not in disabled.output
    login = await _fresh_login(oauth, username="carol", password="carol-pass-1")
    assert login.response.status_code == 401
    refused = await client.post(TOKEN, data={"grant_type": "refresh_token", "refresh_token": refresh,
                                             "client_id": "bsopt-cli"})
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"

    assert runner.invoke(cli, ["users", "enable", "carol"], env=env).exit_code == 0
    reset = runner.invoke(cli, ["users", "reset-password", "carol", "--password-stdin"],
                          input="carol-pass-2\n", env=env)
    assert reset.exit_code == 0 and "carol-pass-2" not in reset.output
    assert (await _fresh_login(oauth, username="carol", password="carol-pass-1")).response.status_code == 401
    assert (await _fresh_login(oauth, username="carol", password="carol-pass-2")).response.status_code == 303
    listed = runner.invoke(cli, ["users", "list"], env=env)
    assert "carol" in listed.output and "$argon2" not in listed.output


# --------------------------------------------------------------------------- /admin API


async def test_admin_api_requires_an_admin_token(client: httpx.AsyncClient, session_factory, settings) -> None:
    none = await client.get("/admin/clients")
    assert none.status_code == 401 and none.headers["www-authenticate"].startswith("Bearer")
    wrong_aud = (await _cc(client, "resource-api", dev_client_secret("resource-api"),
                           resource="urn:bsopt:kafka")).json()["access_token"]
    r = await client.get("/admin/clients", headers={"Authorization": f"Bearer {wrong_aud}"})
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
    weak = admin.create_client(session_factory, settings, "weak-admin", client_type="confidential",
                               grant_types=["client_credentials"], scopes=["other"],
                               resources=[admin.ADMIN_AUDIENCE])
    assert weak.client_secret
    token = (await _cc(client, "weak-admin", weak.client_secret)).json()["access_token"]
    r = await client.get("/admin/clients", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403 and 'error="insufficient_scope"' in r.headers["www-authenticate"]
    doc = (await client.get("/openapi.json")).json()
    assert "bsopt-admin" in doc["components"]["securitySchemes"]
    assert "/admin/clients" in doc["paths"]


async def test_admin_api_flows(client: httpx.AsyncClient) -> None:
    got = await _cc(client, ADMIN_CLIENT_ID, dev_client_secret(ADMIN_CLIENT_ID), scope="admin",
                    resource=admin.ADMIN_AUDIENCE)
    assert got.status_code == 200, got.text
    h = {"Authorization": f"Bearer {got.json()['access_token']}"}
    r = await client.post("/admin/clients", headers=h, json={
        "client_id": "api-svc", "client_type": "confidential", "grant_types": ["client_credentials"],
        "scopes": ["trades:read"], "resources": ["urn:bsopt:resource-api"]})
    assert r.status_code == 201, r.text
    secret = r.json()["client_secret"]
    assert (await _cc(client, "api-svc", secret)).status_code == 200
    listed = await client.get("/admin/clients", headers=h)
    assert listed.status_code == 200 and secret not in listed.text and "sha256$" not in listed.text
    assert (await client.get("/admin/clients/api-svc", headers=h)).json()["client_type"] == "confidential"
    assert (await client.get("/admin/clients/nope", headers=h)).status_code == 404
    bad = await client.post("/admin/clients", headers=h, json={
        "client_id": "x", "client_type": "public", "grant_types": ["client_credentials"]})
    assert bad.status_code == 400 and bad.headers["content-type"].startswith("application/problem+json")
    rot = await client.post("/admin/clients/api-svc/rotate-secret", headers=h)
    assert rot.status_code == 200 and rot.json()["client_secret"] != secret
    assert (await _cc(client, "api-svc", secret)).status_code == 401
    assert (await client.delete("/admin/clients/api-svc", headers=h)).status_code == 204

    u = await client.post("/admin/users", headers=h, json={"username": "dave", "password": "dave-pass-1"})
    assert u.status_code == 201 and "password" not in u.text
    assert (await client.post("/admin/users/dave/disable", headers=h)).json()["disabled_at"]
    assert (await client.post("/admin/users/dave/enable", headers=h)).json()["disabled_at"] is None
    reset = await client.post("/admin/users/dave/reset-password", headers=h, json={"password": "dave-pass-2"})
    assert reset.status_code == 200
    assert (await client.get("/admin/users", headers=h)).status_code == 200
    assert (await client.get("/admin/users/dave", headers=h)).json()["username"] == "dave"
    keys = (await client.get("/admin/keys", headers=h)).json()["keys"]
    assert keys and all("d" not in k for k in keys)
    rotated = await client.post("/admin/keys/rotate", headers=h)
    assert rotated.status_code == 200 and rotated.json()["kid"]


# --------------------------------------------------------------------------- audit


async def test_audit_rows_carry_no_secrets(oauth, client: httpx.AsyncClient, session_factory) -> None:
    failed = await _fresh_login(oauth, password="wrong-password-xyz")
    assert failed.response.status_code == 401
    tokens = await oauth.user_tokens(scope="openid offline_access trades:read")
    first = tokens["refresh_token"]
    again = await client.post(TOKEN, data={"grant_type": "refresh_token", "refresh_token": first,
                                           "client_id": "bsopt-cli"})
    assert again.status_code == 200
    reused = await client.post(TOKEN, data={"grant_type": "refresh_token", "refresh_token": first,
                                            "client_id": "bsopt-cli"})
    assert reused.status_code == 400
    rows = _audit_rows(session_factory)
    types = {r["event_type"] for r in rows}
    assert {audit.LOGIN_FAILED, audit.LOGIN_SUCCEEDED, audit.TOKEN_ISSUED, audit.TOKEN_REFUSED,
            audit.REFRESH_REUSE_DETECTED, audit.CLIENT_CREATED} <= types
    login_failed = [r for r in rows if r["event_type"] == audit.LOGIN_FAILED][-1]
    assert login_failed["outcome"] == "failure" and login_failed["ip_hash"] and login_failed["client_id"]
    issued = [r for r in rows if r["event_type"] == audit.TOKEN_ISSUED][-1]
    assert issued["details"]["grant_type"] == "refresh_token" and issued["client_id"] == "bsopt-cli"
    dumped = json.dumps(rows)
    for secret in ("wrong-password-xyz", DEMO_PASSWORD, first, again.json()["refresh_token"],
                   tokens["access_token"], dev_client_secret(ADMIN_CLIENT_ID)):
        assert secret not in dumped
    assert DEMO_USERNAME not in dumped  # usernames typed at the form are not recorded
    with session_scope(session_factory) as s:
        outbox = s.execute(text("SELECT count(*) FROM auth.outbox WHERE topic = 'auth.audit.v1'")).scalar_one()
    assert outbox >= len(rows)


async def test_audit_events_are_published_signed_and_verified(
    settings, app, client: httpx.AsyncClient, session_factory, kafka_bootstrap: str, tmp_path,
) -> None:
    key = generate_signing_key()
    key_file = tmp_path / "auth-server.jwk"
    key_file.write_text(private_jwk_json(key))
    own = settings.model_copy(update={"signing_key_file": str(key_file), "kafka_bootstrap_servers": kafka_bootstrap})
    register_event_key(own, session_factory)
    jwks = await client.get("/oauth2/clients/auth-server/jwks.json")
    assert jwks.status_code == 200 and jwks.json()["keys"][0]["kid"]

    admin.create_client(session_factory, settings, "audited-client", client_type="confidential",
                        grant_types=["client_credentials"], scopes=["x"], resources=["urn:bsopt:x"])
    received: list[Event] = []

    def handler(event: Event, session) -> None:
        received.append(event)

    verifier = EventSignatureVerifier(settings.issuer.rstrip("/") + "/oauth2/clients/{client_id}/jwks.json",
                                      http_client=httpx.AsyncClient(transport=httpx.ASGITransport(app=app)))
    dlq = EventPublisher(kafka_bootstrap, source="/bsopt/test", signer=None)
    await dlq.start()
    consumer = EventConsumer(bootstrap_servers=kafka_bootstrap, group_id="audit-test", handlers={AUTH_AUDIT: handler},
                             session_factory=session_factory, schema="auth", verifier=verifier, dlq_publisher=dlq,
                             session_timeout_ms=2000, heartbeat_interval_ms=200)
    try:
        async with audit_relay(own, session_factory):
            await consumer.start()
            task = asyncio.create_task(consumer.run())
            for _ in range(300):
                if any(e.payload.event_type == audit.CLIENT_CREATED and e.payload.client_id == "audited-client"
                       for e in received):
                    break
                await asyncio.sleep(0.1)
            task.cancel()
    finally:
        await consumer.stop()
        await dlq.stop()
        await verifier.aclose()
    event = next(e for e in received if e.payload.client_id == "audited-client")
    assert event.producer_client_id == "auth-server" and event.topic == "auth.audit.v1"
    assert event.payload.outcome == "success" and event.subject.startswith("audit-events/")
