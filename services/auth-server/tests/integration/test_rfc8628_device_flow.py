"""Device Authorization Grant (RFC 8628) over real HTTP against real Postgres: the device
authorization request, the verification page driven like a browser, and the token
endpoint's polling answers (pending, slow_down, denied, expired, single use)."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import select, update

from bsopt_auth.models import DeviceAuthorization
from bsopt_auth.rfc8628 import DEVICE_CODE_GRANT_TYPE, USER_CODE_ALPHABET, normalize_user_code
from bsopt_auth.seed import CLI_CLIENT_ID, DEMO_PASSWORD, DEMO_USERNAME, dev_client_secret
from bsopt_common.db import session_scope

DEVICE = "/oauth2/device_authorization"
TOKEN = "/oauth2/token"
PAGE = "/device"


async def start(client: httpx.AsyncClient, scope: str = "openid trades:read offline_access",
                **extra: Any) -> dict[str, Any]:
    resp = await client.post(DEVICE, data={"client_id": CLI_CLIENT_ID, "scope": scope, **extra})
    assert resp.status_code == 200, resp.text
    assert resp.headers["cache-control"] == "no-store"
    return resp.json()


async def poll(client: httpx.AsyncClient, device_code: str, client_id: str = CLI_CLIENT_ID) -> httpx.Response:
    return await client.post(TOKEN, data={"grant_type": DEVICE_CODE_GRANT_TYPE, "device_code": device_code,
                                          "client_id": client_id})


def form_fields(oauth, html: str) -> list[tuple[str, str]]:
    return oauth.parse_form(html).fields()


async def confirm_page(client: httpx.AsyncClient, user_code: str) -> httpx.Response:
    """What a browser gets from ``verification_uri_complete``."""
    return await client.get(PAGE, params={"user_code": user_code})


async def submit(client: httpx.AsyncClient, oauth, page: httpx.Response, decision: str,
                 username: str = DEMO_USERNAME, password: str = DEMO_PASSWORD) -> httpx.Response:
    fields = [(k, v) for k, v in form_fields(oauth, page.text) if k not in ("username", "password")]
    fields += [("username", username), ("password", password), ("decision", decision)]
    return await client.post(PAGE, data=dict(fields))


def backdate_poll(session_factory, device_code: str, seconds: float = 60) -> None:
    digest = hashlib.sha256(device_code.encode()).hexdigest()
    with session_scope(session_factory) as s:
        s.execute(update(DeviceAuthorization).where(DeviceAuthorization.device_code_hash == digest)
                  .values(last_polled_at=datetime.now(UTC) - timedelta(seconds=seconds)))


async def test_device_authorization_response(client, settings, session_factory):
    body = await start(client)
    assert set(body) == {"device_code", "user_code", "verification_uri", "verification_uri_complete",
                         "expires_in", "interval"}
    assert len(body["device_code"]) >= 43  # 256 bits, base64url
    assert re.fullmatch(f"[{USER_CODE_ALPHABET}]{{4}}-[{USER_CODE_ALPHABET}]{{4}}", body["user_code"])
    assert body["verification_uri"] == settings.issuer + "/device"
    assert body["verification_uri_complete"] == f"{settings.issuer}/device?user_code={body['user_code']}"
    assert body["expires_in"] == 600 and body["interval"] == 5
    with session_scope(session_factory) as s:
        rows = s.scalars(select(DeviceAuthorization)).all()
        stored = {r.device_code_hash for r in rows} | {r.user_code_hash for r in rows}
    assert body["device_code"] not in stored and body["user_code"] not in stored  # hashes only
    assert hashlib.sha256(body["device_code"].encode()).hexdigest() in stored
    assert hashlib.sha256(normalize_user_code(body["user_code"]).encode()).hexdigest() in stored


@pytest.mark.parametrize(("data", "status", "error"), [
    ({"client_id": "nope"}, 401, "invalid_client"),
    ({"client_id": CLI_CLIENT_ID, "scope": "admin"}, 400, "invalid_scope"),
    ({"client_id": CLI_CLIENT_ID, "resource": "urn:bsopt:other"}, 400, "invalid_target"),
    ({"client_id": CLI_CLIENT_ID, "scope": "a", "resource": "x\x00"}, 400, "invalid_request"),
])
async def test_device_authorization_errors(client, data, status, error):
    resp = await client.post(DEVICE, data=data)
    assert resp.status_code == status, resp.text
    assert resp.json()["error"] == error


async def test_confidential_client_without_the_grant_is_unauthorized(client):
    auth = httpx.BasicAuth("resource-api", dev_client_secret("resource-api"))
    resp = await client.post(DEVICE, data={"scope": "broker:accounts"}, auth=auth)
    assert resp.status_code == 400 and resp.json()["error"] == "unauthorized_client"


async def test_full_flow_pending_slow_down_approve_single_use(client, oauth, settings, session_factory):
    body = await start(client)
    first = await poll(client, body["device_code"])
    assert first.status_code == 400 and first.json()["error"] == "authorization_pending"
    second = await poll(client, body["device_code"])  # immediately: faster than the interval
    assert second.status_code == 400 and second.json()["error"] == "slow_down"
    with session_scope(session_factory) as s:
        row = s.scalars(select(DeviceAuthorization).where(
            DeviceAuthorization.device_code_hash == hashlib.sha256(body["device_code"].encode()).hexdigest()
        )).one()
        assert row.interval == 10  # RFC 8628 §3.5: +5 s

    page = await confirm_page(client, body["user_code"].lower().replace("-", ""))  # lenient input
    assert page.status_code == 200, page.text
    assert body["user_code"] in page.text and CLI_CLIENT_ID in page.text and "offline_access" in page.text
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    wrong = await submit(client, oauth, page, "approve", password="wrong")
    assert wrong.status_code == 401 and "Invalid username or password" in wrong.text
    done = await submit(client, oauth, wrong, "approve")
    assert done.status_code == 200 and "Device connected" in done.text

    backdate_poll(session_factory, body["device_code"])
    resp = await poll(client, body["device_code"])
    assert resp.status_code == 200, resp.text
    tokens = resp.json()
    assert tokens["token_type"] == "Bearer" and tokens["scope"] == "openid trades:read offline_access"
    assert tokens["refresh_token"] and tokens["id_token"]
    claims = (await oauth.decode(tokens["access_token"])).claims
    assert claims["client_id"] == CLI_CLIENT_ID and "urn:bsopt:resource-api" in claims["aud"]
    assert claims["sid"]
    # the refresh token works like the code flow's
    refreshed = await client.post(TOKEN, data={"grant_type": "refresh_token", "client_id": CLI_CLIENT_ID,
                                               "refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.text

    again = await poll(client, body["device_code"])  # single use
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    # and the page no longer accepts the code
    used = await confirm_page(client, body["user_code"])
    assert used.status_code == 400 and "not valid" in used.text


async def test_without_offline_access_no_refresh_token(client, oauth, session_factory):
    body = await start(client, scope="trades:read")
    page = await confirm_page(client, body["user_code"])
    assert (await submit(client, oauth, page, "approve")).status_code == 200
    resp = await poll(client, body["device_code"])
    assert resp.status_code == 200, resp.text
    assert "refresh_token" not in resp.json() and "id_token" not in resp.json()


async def test_denied(client, oauth):
    body = await start(client)
    page = await confirm_page(client, body["user_code"])
    denied = await submit(client, oauth, page, "deny", username="", password="")
    assert denied.status_code == 200 and "denied" in denied.text
    resp = await poll(client, body["device_code"])
    assert resp.status_code == 400 and resp.json()["error"] == "access_denied"


async def test_expired(client, oauth, session_factory):
    body = await start(client)
    page = await confirm_page(client, body["user_code"])
    with session_scope(session_factory) as s:
        s.execute(update(DeviceAuthorization).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
                  .where(DeviceAuthorization.device_code_hash
                         == hashlib.sha256(body["device_code"].encode()).hexdigest()))
    late = await submit(client, oauth, page, "approve")
    assert late.status_code == 400 and "expired" in late.text
    resp = await poll(client, body["device_code"])
    assert resp.status_code == 400 and resp.json()["error"] == "expired_token"


async def test_wrong_device_code_or_client(client):
    resp = await poll(client, "not-a-device-code")
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_grant"
    resp = await client.post(TOKEN, data={"grant_type": DEVICE_CODE_GRANT_TYPE, "client_id": CLI_CLIENT_ID})
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_request"


async def test_page_wrong_codes_and_form_hygiene(client, oauth):
    empty = await client.get(PAGE)
    assert empty.status_code == 200 and 'name="user_code"' in empty.text
    for bad in ("BCDF-GHJK", "AAAA-AAAA", "x" * 5000, "é"):
        resp = await client.post(PAGE, data={"user_code": bad})
        assert resp.status_code == 400, (bad, resp.status_code)
        assert "not valid" in resp.text
    body = await start(client)
    # entering the code on the form shows the confirmation page
    page = await client.post(PAGE, data={"user_code": body["user_code"]})
    assert page.status_code == 200 and "Sign in and approve" in page.text
    # a foreign origin is refused, and a missing CSRF token too
    fields = dict(form_fields(oauth, page.text), username=DEMO_USERNAME, password=DEMO_PASSWORD,
                  decision="approve")
    foreign = await client.post(PAGE, data=fields, headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403
    no_csrf = await client.post(PAGE, data={k: v for k, v in fields.items() if k != "csrf_token"})
    assert no_csrf.status_code == 403
    fresh = httpx.AsyncClient(transport=client._transport, base_url=str(client.base_url))
    async with fresh:  # another browser (no CSRF cookie) with this form's token
        stolen = await fresh.post(PAGE, data=fields)
    assert stolen.status_code == 403
    ok = await client.post(PAGE, data=fields, headers={"Origin": urlsplit(str(client.base_url))._replace(
        path="").geturl()})
    assert ok.status_code == 200 and "Device connected" in ok.text


async def test_user_code_guessing_is_throttled(client, settings):
    # per client IP in scope "device": throttle_ip_free_failures free, then 429
    statuses = []
    for _ in range(settings.throttle_ip_free_failures + 2):
        statuses.append((await client.get(PAGE, params={"user_code": "ZZZZ-ZZZZ"})).status_code)
    assert statuses[0] == 400 and statuses[-1] == 429
    resp = await client.get(PAGE, params={"user_code": "ZZZZ-ZZZZ"})
    assert resp.status_code == 429 and int(resp.headers["retry-after"]) >= 1
