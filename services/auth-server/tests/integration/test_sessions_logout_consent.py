"""Authorization-server sessions (OIDC Core §3.1.2.1 prompt / max_age, §3.1.2.6
login_required), RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0) and the
consent screen, over real HTTP against real Postgres. Each test's ``client`` is one
browser (it keeps cookies); token exchanges go through authlib's client, a second,
independent implementation."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from authlib.integrations.httpx_client import AsyncOAuth2Client
from sqlalchemy import select, text

from bsopt_auth.app import create_app
from bsopt_auth.models import AuthSession, Client, Consent, User
from bsopt_auth.passwords import hash_secret
from bsopt_auth.seed import CLI_CLIENT_ID, CLI_POST_LOGOUT_REDIRECT_URI, DEMO_USERNAME, dev_client_secret
from bsopt_common.db import session_scope

LOGOUT = "/oauth2/logout"
OFFLINE = "openid trades:read offline_access"
THIRD_PARTY_ID = "third-party-app"
THIRD_PARTY_LOGOUT_URI = "https://third.example/bye"
RS_ID = "resource-api"


def _query(resp: httpx.Response) -> dict[str, str]:
    assert resp.status_code in (302, 303), (resp.status_code, resp.text[:500])
    return {k: v[0] for k, v in parse_qs(urlsplit(resp.headers["location"]).query).items()}


def _is_login_form(resp: httpx.Response) -> bool:
    return resp.status_code == 200 and 'name="password"' in resp.text


def _is_consent_page(resp: httpx.Response) -> bool:
    return resp.status_code == 200 and 'value="approve"' in resp.text


@pytest.fixture
def oauth(oauth: Any) -> Any:
    """The shared helper, as one browser that keeps its session cookie."""
    oauth.keep_session = True
    return oauth


@pytest.fixture(scope="module", autouse=True)
def third_party_client(session_factory) -> None:
    """A public code-flow client that is not first-party (default), with a logout URI."""
    with session_scope(session_factory) as s:
        s.merge(Client(client_id=THIRD_PARTY_ID, client_type="public", token_endpoint_auth_method="none",
                       redirect_uris=["http://127.0.0.1:53123/callback"],
                       post_logout_redirect_uris=[THIRD_PARTY_LOGOUT_URI],
                       grant_types=["authorization_code", "refresh_token"],
                       allowed_scopes=["openid", "trades:read", "trades:write", "offline_access"],
                       allowed_resources=["urn:bsopt:resource-api"]))


@pytest.fixture
async def authlib_cli(app, settings) -> AsyncIterator[AsyncOAuth2Client]:
    async with AsyncOAuth2Client(client_id=CLI_CLIENT_ID, token_endpoint_auth_method="none",
                                 transport=httpx.ASGITransport(app=app), base_url=settings.issuer) as c:
        yield c


async def _exchange(authlib_cli: AsyncOAuth2Client, code: str, verifier: str, redirect_uri: str,
                    client_id: str = CLI_CLIENT_ID) -> dict[str, Any]:
    authlib_cli.client_id = client_id
    token = await authlib_cli.fetch_token("/oauth2/token", grant_type="authorization_code", code=code,
                                          redirect_uri=redirect_uri, code_verifier=verifier)
    return dict(token)


async def _signed_in(oauth, **kwargs: Any) -> dict[str, Any]:
    """Sign in with the password (the browser gets the session cookie); the tokens."""
    result = await oauth.login(**kwargs)
    assert result.response.status_code == 303, result.response.text
    resp = await oauth.exchange(result.code, result.verifier, result.redirect_uri,
                                client_id=kwargs.get("client_id", CLI_CLIENT_ID))
    assert resp.status_code == 200, resp.text
    return resp.json()


async def _introspect(client: httpx.AsyncClient, token: str) -> dict[str, Any]:
    auth = base64.b64encode(f"{RS_ID}:{dev_client_secret(RS_ID)}".encode()).decode()
    resp = await client.post("/oauth2/introspect", data={"token": token}, headers={"Authorization": "Basic " + auth})
    assert resp.status_code == 200, resp.text
    return resp.json()


# --------------------------------------------------------------------------- sessions


async def test_second_authorization_in_the_session_needs_no_password(oauth, authlib_cli) -> None:
    first = await _signed_in(oauth)
    verifier = oauth.new_verifier()
    resp = await oauth.authorize_page(verifier=verifier, state="again", nonce="n-2")
    query = _query(resp)
    assert resp.status_code == 302 and query["state"] == "again" and query["iss"] == oauth.settings.issuer
    token = await _exchange(authlib_cli, query["code"], verifier, oauth.loopback())
    claims = (await oauth.decode(token["id_token"])).claims
    first_claims = (await oauth.decode(first["id_token"])).claims
    assert claims["nonce"] == "n-2"
    assert claims["auth_time"] == first_claims["auth_time"]  # the password was given once
    assert (await oauth.decode(token["access_token"])).claims["sub"] == first_claims["sub"]


async def test_id_tokens_carry_the_sessions_sid_and_a_refresh_keeps_it(oauth, authlib_cli) -> None:
    """OIDC Front-/Back-Channel Logout ``sid``: the same for every ID token of one browser
    session (also after a refresh), the SHA-256 of the session cookie, never the cookie."""
    import hashlib

    first = await _signed_in(oauth, scope=OFFLINE)
    cookie = next(v for k, v in oauth.client.cookies.items() if k.endswith("bsopt_session"))
    sid = (await oauth.decode(first["id_token"])).claims["sid"]
    assert sid == hashlib.sha256(cookie.encode()).hexdigest() and cookie not in first["id_token"]
    verifier = oauth.new_verifier()
    again = _query(await oauth.authorize_page(verifier=verifier, state="again", scope=OFFLINE))
    second = await _exchange(authlib_cli, again["code"], verifier, oauth.loopback())
    assert (await oauth.decode(second["id_token"])).claims["sid"] == sid
    refreshed = await oauth.client.post("/oauth2/token", data={
        "grant_type": "refresh_token", "refresh_token": first["refresh_token"], "client_id": CLI_CLIENT_ID})
    assert refreshed.status_code == 200, refreshed.text
    assert (await oauth.decode(refreshed.json()["id_token"])).claims["sid"] == sid
    # the access token's sid is the token family (what revocation and introspection check)
    assert (await oauth.decode(first["access_token"])).claims["sid"] != sid


async def test_prompt_login_asks_for_the_password_again(oauth) -> None:
    await _signed_in(oauth)
    page = await oauth.authorize_page(prompt="login")
    assert _is_login_form(page)
    assert dict(oauth.parse_form(page.text).fields())["prompt"] == "login"
    resp = await oauth.submit_login(page)
    assert resp.status_code == 303 and "code" in _query(resp)


async def test_prompt_none_without_a_session_is_login_required(oauth) -> None:
    resp = await oauth.authorize_page(prompt="none", state="s-none")
    query = _query(resp)
    assert resp.status_code == 302 and query["error"] == "login_required" and query["state"] == "s-none"
    await _signed_in(oauth)
    assert "code" in _query(await oauth.authorize_page(prompt="none"))


@pytest.mark.parametrize("prompt", ["none login", "bogus"])
async def test_bad_prompt_is_invalid_request(oauth, prompt: str) -> None:
    assert _query(await oauth.authorize_page(prompt=prompt))["error"] == "invalid_request"


async def test_max_age_forces_a_fresh_sign_in_and_auth_time_is_in_the_id_token(oauth, authlib_cli) -> None:
    first = await _signed_in(oauth)
    first_auth_time = (await oauth.decode(first["id_token"])).claims["auth_time"]
    assert "code" in _query(await oauth.authorize_page(max_age="3600"))  # recent enough
    time.sleep(1.1)
    page = await oauth.authorize_page(max_age="0")
    assert _is_login_form(page)
    assert _query(await oauth.authorize_page(max_age="0", prompt="none"))["error"] == "login_required"
    verifier = oauth.new_verifier()
    page = await oauth.authorize_page(max_age="0", verifier=verifier)
    resp = await oauth.submit_login(page)
    token = await _exchange(authlib_cli, _query(resp)["code"], verifier, oauth.loopback())
    auth_time = (await oauth.decode(token["id_token"])).claims["auth_time"]
    assert auth_time > first_auth_time and abs(auth_time - time.time()) < 30
    assert _query(await oauth.authorize_page(max_age="abc"))["error"] == "invalid_request"


async def test_session_cookie_attributes_over_http(oauth, session_factory) -> None:
    result = await oauth.login()
    cookie = next(v for v in result.response.headers.get_list("set-cookie") if v.startswith("bsopt_session="))
    attrs = [a.strip().lower() for a in cookie.split(";")]
    assert "httponly" in attrs and "samesite=lax" in attrs and "path=/" in attrs
    assert "secure" not in attrs
    value = cookie.split(";", 1)[0].split("=", 1)[1]
    with session_scope(session_factory) as s:
        ids = set(s.scalars(select(AuthSession.id)))
    assert value not in ids  # only its SHA-256 is stored
    import hashlib

    assert hashlib.sha256(value.encode()).hexdigest() in ids


async def test_session_cookie_is_host_prefixed_and_secure_under_https(oauth, engine, settings) -> None:
    https_settings = settings.model_copy(update={"issuer": "https://auth.example.test"})
    app = create_app(https_settings, engine)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://auth.example.test") as c:
        browser = type(oauth)(c, https_settings, keep_session=True)
        result = await browser.login()
        assert result.response.status_code == 303, result.response.text
        cookie = next(v for v in result.response.headers.get_list("set-cookie")
                      if v.startswith("__Host-bsopt_session="))
        attrs = [a.strip().lower() for a in cookie.split(";")]
        assert {"httponly", "secure", "samesite=lax", "path=/"} <= set(attrs)
        assert not any(a.startswith("domain=") for a in attrs)
        assert "code" in _query(await browser.authorize_page())  # the secure cookie works


async def test_a_disabled_users_session_is_not_accepted(oauth, session_factory) -> None:
    with session_scope(session_factory) as s:
        if not hasattr(User, "disabled_at"):
            pytest.skip("users.disabled_at (revision 0007) is not there")
        s.merge(User(username="soon-disabled", password_hash=hash_secret("pw-soon-disabled")))
    await _signed_in(oauth, username="soon-disabled", password="pw-soon-disabled")
    assert "code" in _query(await oauth.authorize_page())
    with session_scope(session_factory) as s:
        s.execute(text("UPDATE auth.users SET disabled_at = now() WHERE username = 'soon-disabled'"))
    assert _query(await oauth.authorize_page(prompt="none"))["error"] == "login_required"
    assert _is_login_form(await oauth.authorize_page())


async def test_a_new_sign_in_ends_the_browsers_previous_session(oauth, session_factory) -> None:
    await _signed_in(oauth)
    old = oauth.client.cookies.get("bsopt_session")
    page = await oauth.authorize_page(prompt="login")
    await oauth.submit_login(page)
    new = oauth.client.cookies.get("bsopt_session")
    assert old and new and old != new  # never the same session id after a sign-in (no fixation)
    import hashlib

    with session_scope(session_factory) as s:
        row = s.get_one(AuthSession, hashlib.sha256(old.encode()).hexdigest())
        assert row.ended_at is not None


# --------------------------------------------------------------------------- logout


async def test_logout_with_id_token_hint_ends_the_session_and_revokes_its_tokens(oauth, authlib_cli) -> None:
    first = await _signed_in(oauth, scope=OFFLINE)
    # a second code from the same session: its family is revoked too
    verifier = oauth.new_verifier()
    second = await _exchange(authlib_cli, _query(await oauth.authorize_page(verifier=verifier, scope=OFFLINE))["code"],
                             verifier, oauth.loopback())
    assert (await _introspect(oauth.client, first["access_token"]))["active"] is True

    resp = await oauth.client.get(LOGOUT, params={"id_token_hint": first["id_token"], "state": "bye-1",
                                                  "post_logout_redirect_uri": CLI_POST_LOGOUT_REDIRECT_URI})
    assert resp.status_code == 302
    assert resp.headers["location"] == CLI_POST_LOGOUT_REDIRECT_URI + "?state=bye-1"
    cleared = next(v for v in resp.headers.get_list("set-cookie") if v.startswith("bsopt_session="))
    assert "max-age=0" in cleared.lower() or "expires=" in cleared.lower()

    for body in (first, second):
        refused = await oauth.client.post("/oauth2/token", data={
            "grant_type": "refresh_token", "refresh_token": body["refresh_token"], "client_id": CLI_CLIENT_ID})
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
        assert (await _introspect(oauth.client, body["access_token"]))["active"] is False
        assert (await _introspect(oauth.client, body["refresh_token"]))["active"] is False
    # the next authorization asks for the password again
    assert _is_login_form(await oauth.authorize_page())
    assert _query(await oauth.authorize_page(prompt="none"))["error"] == "login_required"


async def test_logout_leaves_other_sessions_tokens_alone(oauth, app, settings) -> None:
    other = await _signed_in(oauth, scope=OFFLINE)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=settings.issuer) as c2:
        browser = type(oauth)(c2, settings, keep_session=True)
        mine = await browser.login(scope=OFFLINE)
        tokens = (await browser.exchange(mine.code, mine.verifier, mine.redirect_uri)).json()
        resp = await c2.get(LOGOUT, params={"id_token_hint": tokens["id_token"]})
        assert resp.status_code == 200 and "Signed out" in resp.text
    assert (await _introspect(oauth.client, other["refresh_token"]))["active"] is True
    assert (await _introspect(oauth.client, tokens["refresh_token"]))["active"] is False


async def test_logout_accepts_an_expired_hint(oauth, session_factory, settings) -> None:
    from bsopt_auth.oidc import issue_id_token
    from bsopt_auth.rfc7517 import get_active_key

    tokens = await _signed_in(oauth)
    sub = (await oauth.decode(tokens["id_token"])).claims["sub"]
    with session_scope(session_factory) as s:
        key = get_active_key(s, settings.signing_alg)
    expired = issue_id_token(key, issuer=settings.issuer, subject=sub, client_id=CLI_CLIENT_ID,
                             auth_time=int(time.time()) - 7200, ttl_seconds=60, now=int(time.time()) - 3600)
    resp = await oauth.client.post(LOGOUT, data={"id_token_hint": expired})
    assert resp.status_code == 200 and "Signed out" in resp.text
    assert _is_login_form(await oauth.authorize_page())


@pytest.mark.parametrize("uri", ["https://evil.example/", CLI_POST_LOGOUT_REDIRECT_URI + "/x",
                                 CLI_POST_LOGOUT_REDIRECT_URI.upper()])
async def test_logout_refuses_an_unregistered_post_logout_redirect_uri(oauth, uri: str) -> None:
    tokens = await _signed_in(oauth)
    resp = await oauth.client.get(LOGOUT, params={"id_token_hint": tokens["id_token"], "post_logout_redirect_uri": uri})
    assert resp.status_code == 400 and "location" not in resp.headers
    assert "code" in _query(await oauth.authorize_page())  # still signed in


async def test_logout_refuses_a_hint_we_did_not_issue(oauth) -> None:
    tokens = await _signed_in(oauth)
    for hint in ("not-a-jwt", tokens["access_token"], tokens["id_token"][:-4] + "AAAA"):
        resp = await oauth.client.get(LOGOUT, params={"id_token_hint": hint})
        assert resp.status_code == 400, hint
    resp = await oauth.client.get(LOGOUT, params={"id_token_hint": tokens["id_token"], "client_id": THIRD_PARTY_ID})
    assert resp.status_code == 400  # the hint was not issued to that client
    assert "code" in _query(await oauth.authorize_page())


async def test_logout_without_a_hint_asks_for_confirmation(oauth) -> None:
    tokens = await _signed_in(oauth, scope=OFFLINE)
    page = await oauth.client.get(LOGOUT, params={"client_id": CLI_CLIENT_ID, "state": "s-c",
                                                  "post_logout_redirect_uri": CLI_POST_LOGOUT_REDIRECT_URI})
    assert page.status_code == 200 and "Sign out of bsopt?" in page.text
    assert "code" in _query(await oauth.authorize_page())  # nothing happened yet
    form = oauth.parse_form(page.text)
    fields = [*form.fields(), ("confirm", "yes")]
    # a forged confirmation (no or wrong CSRF token) does nothing
    forged = [(k, v) for k, v in fields if k != "csrf_token"] + [("csrf_token", "1.AAAA")]
    refused = await oauth.client.post(LOGOUT, content=urlencode(forged),
                                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert refused.status_code == 403
    assert "code" in _query(await oauth.authorize_page())
    resp = await oauth.client.post(urlsplit(form.action).path, content=urlencode(fields),
                                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 303
    assert resp.headers["location"] == CLI_POST_LOGOUT_REDIRECT_URI + "?state=s-c"
    assert _is_login_form(await oauth.authorize_page())
    assert (await _introspect(oauth.client, tokens["refresh_token"]))["active"] is False


async def test_logout_without_a_session_just_redirects(oauth) -> None:
    resp = await oauth.client.get(LOGOUT, params={"client_id": CLI_CLIENT_ID, "state": "z",
                                                  "post_logout_redirect_uri": CLI_POST_LOGOUT_REDIRECT_URI})
    assert resp.status_code == 302 and resp.headers["location"].endswith("?state=z")
    unknown = await oauth.client.get(LOGOUT, params={"post_logout_redirect_uri": "https://x.example/"})
    assert unknown.status_code == 400


async def test_discovery_advertises_the_end_session_endpoint(oauth) -> None:
    meta = (await oauth.client.get("/.well-known/openid-configuration")).json()
    assert meta["end_session_endpoint"] == oauth.settings.issuer + LOGOUT
    assert {"none", "login", "consent"} <= set(meta["prompt_values_supported"])


# --------------------------------------------------------------------------- consent


async def _consent_post(oauth, page: httpx.Response, decision: str) -> httpx.Response:
    form = oauth.parse_form(page.text)
    fields = [*form.fields(), ("decision", decision)]
    return await oauth.client.post(urlsplit(form.action).path, content=urlencode(fields),
                                   headers={"Content-Type": "application/x-www-form-urlencoded"})


async def test_consent_for_a_third_party_client(oauth, authlib_cli, session_factory) -> None:
    verifier = oauth.new_verifier()
    page = await oauth.authorize_page(client_id=THIRD_PARTY_ID, scope="openid trades:read", verifier=verifier)
    consent = await oauth.submit_login(page)
    assert _is_consent_page(consent)
    assert THIRD_PARTY_ID in consent.text and "trades:read" in consent.text
    # prompt=none cannot show the page
    none = await oauth.authorize_page(client_id=THIRD_PARTY_ID, scope="openid", prompt="none")
    assert _query(none)["error"] == "consent_required"
    # a forged approval is refused
    form = oauth.parse_form(consent.text)
    forged = [(k, v) for k, v in form.fields() if k != "csrf_token"] + [("decision", "approve")]
    refused = await oauth.client.post("/authorize/consent", content=urlencode(forged),
                                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert refused.status_code == 403
    approved = await _consent_post(oauth, consent, "approve")
    assert approved.status_code == 303
    token = await _exchange(authlib_cli, _query(approved)["code"], verifier, oauth.loopback(), client_id=THIRD_PARTY_ID)
    assert token["scope"] == "openid trades:read"
    with session_scope(session_factory) as s:
        user_id = s.scalar(select(User.id).where(User.username == DEMO_USERNAME))
        assert sorted(s.get_one(Consent, (user_id, THIRD_PARTY_ID)).scopes) == ["openid", "trades:read"]

    # remembered: a subset skips the page
    assert "code" in _query(await oauth.authorize_page(client_id=THIRD_PARTY_ID, scope="trades:read"))
    # more scopes ask again
    assert _is_consent_page(await oauth.authorize_page(client_id=THIRD_PARTY_ID, scope="openid trades:write"))
    # prompt=consent forces the page
    forced = await oauth.authorize_page(client_id=THIRD_PARTY_ID, scope="openid", prompt="consent")
    assert _is_consent_page(forced)
    # first-party clients never ask
    assert "code" in _query(await oauth.authorize_page(prompt="consent"))


async def test_consent_denied_is_access_denied(oauth) -> None:
    page = await oauth.authorize_page(client_id=THIRD_PARTY_ID, scope="trades:write", state="s-deny")
    consent = await oauth.submit_login(page)
    assert _is_consent_page(consent)
    denied = await _consent_post(oauth, consent, "deny")
    query = _query(denied)
    assert denied.status_code == 303 and query["error"] == "access_denied" and query["state"] == "s-deny"
    assert query["iss"] == oauth.settings.issuer
