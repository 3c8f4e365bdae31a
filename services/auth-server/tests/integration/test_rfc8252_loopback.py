"""RFC 8252 §7.3 loopback redirects: any port on 127.0.0.1 / [::1]; anything else is
refused with an HTML error page and no redirect (RFC 6749 §4.1.2.1)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest


@pytest.mark.parametrize("port", [1024, 49152, 53123, 65535])
async def test_any_loopback_port_is_accepted(oauth, port: int) -> None:
    redirect_uri = oauth.loopback(port=port)
    result = await oauth.login(redirect_uri=redirect_uri)
    assert result.response.status_code == 303
    loc = urlsplit(result.response.headers["location"])
    assert (loc.hostname, loc.port, loc.path) == ("127.0.0.1", port, "/callback")
    token = await oauth.exchange(result.code, result.verifier, redirect_uri)
    assert token.status_code == 200


async def test_ipv6_loopback_is_accepted(oauth) -> None:
    redirect_uri = "http://[::1]:61000/callback"
    result = await oauth.login(redirect_uri=redirect_uri)
    assert result.response.status_code == 303
    assert result.response.headers["location"].startswith("http://[::1]:61000/callback?")


async def test_loopback_without_port_is_the_registered_uri(oauth) -> None:
    result = await oauth.login(redirect_uri="http://127.0.0.1/callback")
    assert result.response.status_code == 303


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "http://evil.example:53123/callback",
        "http://localhost:53123/callback",  # not an IP literal (RFC 8252 §8.3)
        "http://127.0.0.2:53123/callback",
        "https://127.0.0.1:53123/callback",
        "http://127.0.0.1:53123/other",
        "http://127.0.0.1:53123/callback/extra",
        "http://127.0.0.1:53123/callback?x=1",
        "http://127.0.0.1:53123/callback#frag",
        "http://127.0.0.1:99999/callback",
        "http://user@127.0.0.1:53123/callback",
        "http://127.0.0.1:53123@evil.example/callback",
        "",
    ],
)
async def test_other_redirects_are_refused_without_redirecting(oauth, redirect_uri: str) -> None:
    resp = await oauth.client.get("/authorize", params=oauth.authorize_params(redirect_uri=redirect_uri))
    assert resp.status_code == 400
    assert "location" not in resp.headers
    assert resp.headers["content-type"].startswith("text/html")
    assert "redirect_uri" in resp.text


async def test_missing_redirect_uri_is_refused(oauth) -> None:
    params = oauth.authorize_params()
    del params["redirect_uri"]
    resp = await oauth.client.get("/authorize", params=params)
    assert resp.status_code == 400
    assert "location" not in resp.headers


async def test_unknown_client_is_refused_without_redirecting(oauth) -> None:
    resp = await oauth.client.get("/authorize", params=oauth.authorize_params(client_id="nope"))
    assert resp.status_code == 400
    assert "location" not in resp.headers


async def test_bad_redirect_is_checked_again_on_post(oauth) -> None:
    page = await oauth.authorize_page()
    form = oauth.parse_form(page.text)
    fields = {k: v for k, v in form.fields()}
    fields.update(redirect_uri="http://evil.example/callback", username="demo", password="demo-password")
    resp = await oauth.client.post("/authorize", data=fields)
    assert resp.status_code == 400
    assert "location" not in resp.headers


async def test_confidential_client_cannot_use_the_code_flow(oauth) -> None:
    # resource-api has no redirect URIs: the request cannot be trusted, no redirect
    resp = await oauth.client.get("/authorize", params=oauth.authorize_params(client_id="resource-api"))
    assert resp.status_code == 400
