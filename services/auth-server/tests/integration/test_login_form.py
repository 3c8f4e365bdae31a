"""The login form: wrong credentials, autoescaping, and what reaches the page."""

from __future__ import annotations

import logging

import pytest


@pytest.mark.parametrize(("username", "password"), [("demo", "wrong"), ("nobody", "demo-password"), ("", "x")])
async def test_bad_credentials_show_the_form_again_with_401(oauth, username: str, password: str) -> None:
    page = await oauth.authorize_page(state="keep-me")
    resp = await oauth.submit_login(page, username=username, password=password)
    assert resp.status_code == 401
    assert "location" not in resp.headers
    assert "Invalid username or password." in resp.text
    form = oauth.parse_form(resp.text)
    fields = dict(form.fields())
    assert fields["state"] == "keep-me"
    assert fields.get("password", "") == ""  # never echoed back
    if len(password) > 1:
        assert password not in resp.text


async def test_can_retry_after_a_failed_login(oauth) -> None:
    page = await oauth.authorize_page()
    failed = await oauth.submit_login(page, password="nope")
    assert failed.status_code == 401
    ok = await oauth.submit_login(failed)
    assert ok.status_code == 303
    assert "code=" in ok.headers["location"]


async def test_request_values_are_escaped(oauth) -> None:
    evil = '"><script>alert(1)</script>'
    page = await oauth.authorize_page(state=evil)
    assert page.status_code == 200
    assert "<script>" not in page.text
    assert "&lt;script&gt;" in page.text or "&#34;&gt;&lt;script&gt;" in page.text
    # and it still round-trips exactly
    form = oauth.parse_form(page.text)
    assert dict(form.fields())["state"] == evil
    resp = await oauth.submit_login(page, username=evil, password="x")
    assert resp.status_code == 401
    assert "<script>" not in resp.text


async def test_passwords_never_reach_the_logs(oauth, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    page = await oauth.authorize_page()
    await oauth.submit_login(page, password="s3cret-wrong-pw")
    await oauth.submit_login(page)
    await oauth.client_credentials("broker-gateway")
    await oauth.client_credentials("broker-gateway", "wrong-secret-xyz")
    text = caplog.text
    for secret in ("s3cret-wrong-pw", "demo-password", "dev-broker-gateway-secret", "wrong-secret-xyz"):
        assert secret not in text


async def test_unsupported_response_type_redirects_with_error(oauth) -> None:
    resp = await oauth.client.get("/authorize", params=oauth.authorize_params(response_type="token", state="t"))
    assert resp.status_code == 302
    assert "error=unsupported_response_type" in resp.headers["location"]
    assert "state=t" in resp.headers["location"]


async def test_scope_outside_the_clients_is_invalid_scope(oauth) -> None:
    resp = await oauth.client.get("/authorize", params=oauth.authorize_params(scope="openid broker:orders"))
    assert resp.status_code == 302
    assert "error=invalid_scope" in resp.headers["location"]


async def test_repeated_parameters_are_invalid_request(oauth) -> None:
    params = [*list(oauth.authorize_params(state="a").items()), ("state", "b")]
    resp = await oauth.client.get("/authorize", params=params)
    assert resp.status_code == 302
    assert "error=invalid_request" in resp.headers["location"]
