"""Login-form hygiene and brute-force limits (RFC 9700 §4.12, RFC 6749 §10.10/§10.12):
CSRF token and Origin check on the form POST, 303 after it, per-account and per-IP
throttling with exponential backoff and a temporary lock, client-authentication
throttling at the token endpoint, all shared through Postgres between app instances.

Each test talks from its own client address (ASGI ``client``), so the per-IP counters of
one test never reach another; the per-account and per-client counters (the same ``demo``
user and ``broker-gateway`` client in several tests) are cleared before each test. Small
settings keep the waits to seconds."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import pytest

from bsopt_auth import csrf
from bsopt_auth.app import create_app
from bsopt_auth.config import AuthSettings
from bsopt_auth.models import LoginThrottle
from bsopt_auth.throttle import ACCOUNT_LOCKED_EVENT, Policy, normalize_ip
from bsopt_common.db import create_db_engine

OAuth = Any  # conftest.OAuth: the shared helpers

FAST = {
    "throttle_account_free_failures": 2,
    "throttle_account_lock_failures": 5,
    "throttle_account_lock_seconds": 2.0,
    "throttle_ip_free_failures": 1000,
    "throttle_client_free_failures": 2,
    "throttle_client_ip_free_failures": 1000,
    "throttle_base_delay_seconds": 0.2,
    "throttle_max_delay_seconds": 1.0,
}


@pytest.fixture(autouse=True)
def _no_counters_from_earlier_tests(engine) -> None:
    with engine.begin() as c:
        c.execute(LoginThrottle.__table__.delete())


@pytest.fixture
def make_oauth(settings: AuthSettings, engine, oauth) -> Callable[..., Any]:
    """``async with make_oauth(ip, **settings) as oauth``: an app with these settings over
    the module's database, seen from client address ``ip``."""

    @asynccontextmanager
    async def make(ip: str, *, app_engine=None, **overrides: Any) -> AsyncIterator[OAuth]:
        update = {**FAST, **overrides}
        update["throttle_max_delay_seconds"] = max(update["throttle_max_delay_seconds"],
                                                   update["throttle_base_delay_seconds"])
        custom = settings.model_copy(update=update)
        app = create_app(custom, app_engine or engine)
        transport = httpx.ASGITransport(app=app, client=(ip, 50123))
        async with httpx.AsyncClient(transport=transport, base_url=custom.issuer, follow_redirects=False) as c:
            yield type(oauth)(c, custom)

    return make


async def _wrong(oauth: OAuth, page: httpx.Response, username: str = "demo") -> httpx.Response:
    return await oauth.submit_login(page, username=username, password="not-the-password")


# --------------------------------------------------------------------------- account


async def test_thirty_wrong_passwords_are_throttled_then_the_account_locks_until_it_expires(
    make_oauth, caplog
) -> None:
    caplog.set_level(logging.INFO)
    async with make_oauth("203.0.113.10") as oauth:
        page = await oauth.authorize_page()
        statuses: list[int] = []
        for _ in range(30):
            resp = await _wrong(oauth, page)
            statuses.append(resp.status_code)
            assert resp.status_code in (401, 429), resp.text
            if resp.status_code == 429:
                assert int(resp.headers["retry-after"]) >= 1
                assert "Too many failed sign-in attempts" in resp.text
                if statuses.count(401) < 5:
                    await asyncio.sleep(0.25)  # wait out the backoff until the lock
            page = resp  # the form again each time
        # Throttled long before the 30th: the backoff starts after 2 free failures.
        assert statuses[:2] == [401, 401]
        assert 429 in statuses[:4]
        assert statuses.count(401) == 5  # the 5th counted failure locked the account
        assert statuses[-1] == 429
        locked = [r for r in caplog.records if r.getMessage().startswith(ACCOUNT_LOCKED_EVENT)]
        assert len(locked) == 1
        assert "203.0.113.10" not in caplog.text and "not-the-password" not in caplog.text

        # The right password is refused while the lock holds...
        refused = await oauth.submit_login(page)
        assert refused.status_code == 429
        wait = int(refused.headers["retry-after"])
        assert 1 <= wait <= 2
        # ...and works once it expired.
        await asyncio.sleep(wait + 0.2)
        ok = await oauth.submit_login(refused)
        assert ok.status_code == 303, ok.text
        assert "code=" in ok.headers["location"]


async def test_a_successful_login_resets_the_account_counter(make_oauth) -> None:
    async with make_oauth("203.0.113.11", throttle_base_delay_seconds=30, throttle_max_delay_seconds=30) as oauth:
        page = await oauth.authorize_page()
        assert (await _wrong(oauth, page)).status_code == 401
        assert (await _wrong(oauth, page)).status_code == 401
        assert (await oauth.submit_login(page)).status_code == 303  # resets the counter
        page = await oauth.authorize_page()
        assert (await _wrong(oauth, page)).status_code == 401
        assert (await _wrong(oauth, page)).status_code == 401  # free again: not 429
        assert (await _wrong(oauth, page)).status_code == 401  # the 3rd: blocks 30 s
        blocked = await oauth.submit_login(page)
        assert blocked.status_code == 429
        assert 29 <= int(blocked.headers["retry-after"]) <= 30


async def test_unknown_accounts_are_throttled_like_known_ones(make_oauth) -> None:
    async with make_oauth("203.0.113.12", throttle_base_delay_seconds=30) as oauth:
        page = await oauth.authorize_page()
        for _ in range(3):
            assert (await _wrong(oauth, page, username="nobody-here")).status_code == 401
        assert (await _wrong(oauth, page, username="nobody-here")).status_code == 429


# --------------------------------------------------------------------------- IP


async def test_one_address_is_throttled_across_usernames(make_oauth) -> None:
    async with make_oauth("198.51.100.7", throttle_ip_free_failures=3, throttle_base_delay_seconds=30) as oauth:
        page = await oauth.authorize_page()
        statuses = [(await _wrong(oauth, page, username=f"user{i}")).status_code for i in range(6)]
        assert statuses[:4] == [401, 401, 401, 401]
        assert statuses[4:] == [429, 429]
        # The right password of a never-failed account is refused too from this address.
        assert (await oauth.submit_login(page)).status_code == 429
    async with make_oauth("198.51.100.8", throttle_ip_free_failures=3) as other:
        ok = await other.submit_login(await other.authorize_page(), username="demo")
        assert ok.status_code == 303  # another address, the demo account untouched


def test_ipv6_addresses_count_per_64_and_ipv4_mapped_as_ipv4() -> None:
    assert normalize_ip("2001:db8:1:2:aaaa::1") == normalize_ip("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert normalize_ip("::ffff:192.0.2.1") == "192.0.2.1"
    assert normalize_ip(None) == "unknown"


def test_backoff_doubles_after_the_free_failures_and_is_capped() -> None:
    policy = Policy(free_failures=3, base_delay_seconds=1, max_delay_seconds=10)
    assert [policy.delay_after(f) for f in range(1, 9)] == [0, 0, 0, 1, 2, 4, 8, 10]
    assert policy.delay_after(10_000) == 10


# --------------------------------------------------------------------------- token endpoint


def _basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


async def test_repeated_bad_client_secrets_get_429_with_retry_after(make_oauth) -> None:
    async with make_oauth("192.0.2.20", throttle_base_delay_seconds=30) as oauth:
        for _ in range(3):
            resp = await oauth.client_credentials("broker-gateway", "wrong-secret")
            assert resp.status_code == 401
            assert resp.json()["error"] == "invalid_client"
        resp = await oauth.client_credentials("broker-gateway", "wrong-secret", method="post")
        assert resp.status_code == 429
        assert resp.json()["error"] == "temporarily_unavailable"
        assert 29 <= int(resp.headers["retry-after"]) <= 30
        assert resp.headers["cache-control"] == "no-store"
        # Even the right secret is not checked while the client_id is blocked.
        assert (await oauth.client_credentials("broker-gateway")).status_code == 429
    async with make_oauth("192.0.2.21") as other:  # the client_id counter is not per address
        assert (await other.client_credentials("broker-gateway")).status_code == 429
        assert (await other.client_credentials("digest-worker")).status_code == 200


async def test_client_auth_failures_are_throttled_per_address_across_client_ids(make_oauth) -> None:
    async with make_oauth("192.0.2.30", throttle_client_ip_free_failures=2, throttle_base_delay_seconds=30) as oauth:
        for client_id in ("no-such-1", "no-such-2", "no-such-3"):
            assert (await oauth.client_credentials(client_id, "x")).status_code == 401
        resp = await oauth.client_credentials("ml-scorer")
        assert resp.status_code == 429
        assert "retry-after" in resp.headers


async def test_introspection_and_revocation_are_throttled_like_the_token_endpoint(make_oauth) -> None:
    """Guessing a client secret at /oauth2/introspect or /oauth2/revoke instead of the token
    endpoint gains nothing: the same counters, the same 429."""
    async with make_oauth("192.0.2.40", throttle_base_delay_seconds=30) as oauth:
        for path in ("/oauth2/introspect", "/oauth2/revoke", "/oauth2/introspect"):
            resp = await oauth.client.post(path, data={"token": "x"}, headers=_basic("ml-scorer", "wrong"))
            assert resp.status_code == 401, (path, resp.text)
        for path in ("/oauth2/introspect", "/oauth2/revoke"):
            resp = await oauth.client.post(path, data={"token": "x"}, headers=_basic("ml-scorer", "wrong"))
            assert resp.status_code == 429, (path, resp.text)
            assert int(resp.headers["retry-after"]) > 0
        assert (await oauth.client_credentials("ml-scorer")).status_code == 429  # shared with the token endpoint


# --------------------------------------------------------------------------- replicas


async def test_two_app_instances_share_the_counters(make_oauth, postgres_url: str) -> None:
    second_engine = create_db_engine(postgres_url, application_name="bsopt-auth-tests-replica")
    try:
        async with (
            make_oauth("203.0.113.40", throttle_base_delay_seconds=30) as a,
            make_oauth("203.0.113.40", app_engine=second_engine, throttle_base_delay_seconds=30) as b,
        ):
            page = await a.authorize_page()
            for _ in range(3):
                assert (await _wrong(a, page)).status_code == 401
            # Instance B (its own engine and pool) sees A's counters at once.
            page_b = await b.authorize_page()
            assert (await b.submit_login(page_b)).status_code == 429
            # And a form rendered by A is accepted by B (shared CSRF key): one browser, two replicas.
            b.client.cookies.clear()
            b.client.cookies.update(a.client.cookies)
            assert (await _wrong(b, page, username="someone-else")).status_code == 401
    finally:
        second_engine.dispose()


# --------------------------------------------------------------------------- CSRF, Origin, 303


def _fields(oauth: OAuth, page: httpx.Response, **replace: str) -> list[tuple[str, str]]:
    fields = [(k, v) for k, v in oauth.parse_form(page.text).fields() if k not in ("username", "password")]
    fields = [(k, replace.get(k, v)) for k, v in fields if replace.get(k) != ""]
    return [*fields, ("username", "demo"), ("password", "demo-password")]


async def _post(oauth: OAuth, fields: list[tuple[str, str]], **headers: str) -> httpx.Response:
    return await oauth.client.post("/authorize", content=urlencode(fields),
                                   headers={"Content-Type": "application/x-www-form-urlencoded", **headers})


async def test_missing_or_wrong_csrf_token_is_403_and_the_form_can_be_retried(make_oauth) -> None:
    async with make_oauth("203.0.113.50") as oauth:
        page = await oauth.authorize_page(state="keep")
        fields = dict(oauth.parse_form(page.text).fields())
        assert fields[csrf.FIELD]
        assert csrf.cookie_name(oauth.settings) in page.headers["set-cookie"]
        assert "httponly" in page.headers["set-cookie"].lower()
        assert "samesite=strict" in page.headers["set-cookie"].lower()

        missing = await _post(oauth, _fields(oauth, page, csrf_token=""))
        assert missing.status_code == 403
        assert "expired or did not come from this site" in missing.text
        wrong = await _post(oauth, _fields(oauth, page, csrf_token=fields[csrf.FIELD][:-2] + "AA"))
        assert wrong.status_code == 403
        # A token of another authorization request (other state) does not fit this one.
        other = await oauth.authorize_page(state="other")
        swapped = await _post(oauth, _fields(oauth, page, csrf_token=dict(oauth.parse_form(other.text).fields())[
            csrf.FIELD]))
        assert swapped.status_code == 403
        # The refused page is the form again, with a fresh token: it works.
        assert dict(oauth.parse_form(wrong.text).fields())["state"] == "keep"
        ok = await oauth.submit_login(wrong)
        assert ok.status_code == 303, ok.text
        assert "state=keep" in ok.headers["location"]


async def test_the_token_needs_the_browsers_cookie(make_oauth) -> None:
    async with make_oauth("203.0.113.51") as oauth:
        page = await oauth.authorize_page()
        oauth.client.cookies.clear()
        refused = await oauth.submit_login(page)
        assert refused.status_code == 403
        ok = await oauth.submit_login(refused)  # the refusal set a cookie and a fresh token
        assert ok.status_code == 303


async def test_a_foreign_origin_is_403_and_the_issuers_origin_is_fine(make_oauth) -> None:
    async with make_oauth("203.0.113.52") as oauth:
        page = await oauth.authorize_page()
        for origin in ("https://evil.example", "null", "http://127.0.0.1:9001", "https://127.0.0.1:9000"):
            resp = await _post(oauth, _fields(oauth, page), Origin=origin)
            assert resp.status_code == 403, origin
            assert "location" not in resp.headers
            assert "<form" not in resp.text
        ok = await _post(oauth, _fields(oauth, page), Origin="http://127.0.0.1:9000")
        assert ok.status_code == 303
        assert urlsplit(ok.headers["location"]).path == "/callback"


async def test_success_is_303_see_other_and_the_login_page_sends_its_origin(make_oauth) -> None:
    async with make_oauth("203.0.113.53") as oauth:
        page = await oauth.authorize_page()
        assert '<meta name="referrer" content="same-origin">' in page.text
        resp = await oauth.submit_login(page)
        assert resp.status_code == 303
        assert resp.headers["cache-control"] == "no-store"
