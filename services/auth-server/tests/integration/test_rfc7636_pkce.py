"""RFC 7636 (PKCE) and single-use codes (RFC 6749 §4.1.2) at both endpoints."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import select, update

from bsopt_auth.models import AuthorizationCode
from bsopt_common.db import session_scope


def _error_of(resp) -> dict[str, list[str]]:
    # 302 from the GET, 303 from the login form's POST (RFC 9700 §4.12)
    expected = 303 if resp.request.method == "POST" else 302
    assert resp.status_code == expected, resp.text
    return parse_qs(urlsplit(resp.headers["location"]).query)


async def test_wrong_verifier_is_invalid_grant(oauth) -> None:
    result = await oauth.login()
    resp = await oauth.exchange(result.code, oauth.new_verifier(), result.redirect_uri)
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_grant"
    assert resp.headers["cache-control"] == "no-store"


async def test_failed_exchange_burns_the_code(oauth) -> None:
    result = await oauth.login()
    bad = await oauth.exchange(result.code, oauth.new_verifier(), result.redirect_uri)
    assert bad.json()["error"] == "invalid_grant"
    retry = await oauth.exchange(result.code, result.verifier, result.redirect_uri)
    assert retry.status_code == 400 and retry.json()["error"] == "invalid_grant"


async def test_missing_verifier_is_invalid_request(oauth) -> None:
    result = await oauth.login()
    resp = await oauth.exchange(result.code, None, result.redirect_uri)
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_request"


async def test_code_replay_is_invalid_grant(oauth) -> None:
    result = await oauth.login()
    first = await oauth.exchange(result.code, result.verifier, result.redirect_uri)
    assert first.status_code == 200
    replay = await oauth.exchange(result.code, result.verifier, result.redirect_uri)
    assert replay.status_code == 400
    assert replay.json() == {"error": "invalid_grant", "error_description": "authorization code already used"}


async def test_unknown_code_is_invalid_grant(oauth) -> None:
    resp = await oauth.exchange("not-a-code", oauth.new_verifier(), oauth.loopback())
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_grant"


async def test_redirect_uri_must_match_the_authorization_request(oauth) -> None:
    result = await oauth.login(redirect_uri=oauth.loopback(port=50001))
    resp = await oauth.exchange(result.code, result.verifier, oauth.loopback(port=50002))
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_grant"


async def test_expired_code_is_invalid_grant(oauth, session_factory) -> None:
    result = await oauth.login()
    code_hash = hashlib.sha256(result.code.encode()).hexdigest()
    with session_scope(session_factory) as s:
        s.execute(update(AuthorizationCode).where(AuthorizationCode.code_hash == code_hash)
                  .values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    resp = await oauth.exchange(result.code, result.verifier, result.redirect_uri)
    assert resp.status_code == 400
    assert resp.json() == {"error": "invalid_grant", "error_description": "authorization code expired"}


async def test_only_the_code_hash_is_stored(oauth, session_factory, settings) -> None:
    result = await oauth.login()
    with session_scope(session_factory) as s:
        rows = s.scalars(select(AuthorizationCode)).all()
        hashes = {r.code_hash for r in rows}
        row = next(r for r in rows if r.code_hash == hashlib.sha256(result.code.encode()).hexdigest())
        ttl = (row.expires_at - row.created_at).total_seconds()
    assert result.code not in hashes
    assert row.code_challenge_method == "S256"
    assert abs(ttl - settings.authorization_code_ttl_seconds) < 5


async def test_plain_method_is_rejected(oauth) -> None:
    verifier = oauth.new_verifier()
    resp = await oauth.client.get("/authorize", params=oauth.authorize_params(
        code_challenge=verifier, code_challenge_method="plain", state="p1"))
    err = _error_of(resp)
    assert err["error"] == ["invalid_request"]
    assert err["state"] == ["p1"]
    assert "S256" in err["error_description"][0]


async def test_missing_method_means_plain_and_is_rejected(oauth) -> None:
    resp = await oauth.client.get("/authorize", params=oauth.authorize_params(code_challenge_method=None))
    assert _error_of(resp)["error"] == ["invalid_request"]


async def test_missing_challenge_is_rejected(oauth, settings) -> None:
    resp = await oauth.client.get("/authorize", params=oauth.authorize_params(code_challenge=None, state="p2"))
    err = _error_of(resp)
    assert err["error"] == ["invalid_request"]
    assert err["iss"] == [settings.issuer]


async def test_plain_cannot_sneak_in_through_the_login_form(oauth) -> None:
    page = await oauth.authorize_page()
    form = oauth.parse_form(page.text)
    fields = [(k, "plain" if k == "code_challenge_method" else v) for k, v in form.fields()]
    fields = [(k, v) for k, v in fields if k not in ("username", "password")]
    fields += [("username", "demo"), ("password", "demo-password")]
    resp = await oauth.client.post("/authorize", data=dict(fields))
    assert _error_of(resp)["error"] == ["invalid_request"]
    assert "code" not in _error_of(resp)
