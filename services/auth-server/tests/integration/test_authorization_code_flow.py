"""The whole authorization code + PKCE flow through the HTML login form (RFC 6749 §4.1,
RFC 7636, RFC 9207, OIDC Core §3.1), verified against the published JWKS."""

from __future__ import annotations

import base64
import hashlib
import uuid
from urllib.parse import parse_qs, urlsplit

from bsopt_common.settings import RESOURCE_API_AUDIENCE


async def test_full_flow_via_login_form(oauth, settings) -> None:
    nonce = "n-" + uuid.uuid4().hex
    redirect_uri = oauth.loopback(port=49152)
    verifier = oauth.new_verifier()
    page = await oauth.authorize_page(verifier=verifier, redirect_uri=redirect_uri, nonce=nonce, state="s1")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["x-frame-options"] == "DENY"
    form = oauth.parse_form(page.text)
    names = [i.get("name") for i in form.inputs]
    assert "username" in names and "password" in names
    hidden = dict(form.fields())
    assert hidden["client_id"] == "bsopt-cli" and hidden["state"] == "s1" and hidden["nonce"] == nonce
    assert urlsplit(form.action).path == "/authorize"

    resp = await oauth.submit_login(page)
    assert resp.status_code == 303
    location = urlsplit(resp.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == redirect_uri
    query = {k: v[0] for k, v in parse_qs(location.query).items()}
    assert query["state"] == "s1"
    assert query["iss"] == settings.issuer  # RFC 9207
    assert len(query["code"]) >= 32

    token_resp = await oauth.exchange(query["code"], verifier, redirect_uri)
    assert token_resp.status_code == 200, token_resp.text
    assert token_resp.headers["cache-control"] == "no-store"
    body = token_resp.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == settings.access_token_ttl_seconds
    assert body["scope"] == "openid profile trades:read"

    access = await oauth.decode(body["access_token"])
    assert access.header["typ"] == "at+jwt"
    assert access.header["kid"] in {k.kid for k in await oauth.jwks()}
    claims = access.claims
    assert claims["iss"] == settings.issuer
    assert claims["client_id"] == "bsopt-cli"
    assert uuid.UUID(claims["sub"])
    assert set(claims["aud"]) == {RESOURCE_API_AUDIENCE, settings.issuer}
    assert claims["scope"] == "openid profile trades:read"
    assert claims["exp"] - claims["iat"] == settings.access_token_ttl_seconds
    assert claims["nbf"] == claims["iat"]
    assert uuid.UUID(claims["jti"]).version == 4
    assert isinstance(claims["auth_time"], int)

    id_token = await oauth.decode(body["id_token"])
    assert id_token.header["kid"] == access.header["kid"]
    idc = id_token.claims
    assert idc["iss"] == settings.issuer
    assert idc["aud"] == "bsopt-cli"
    assert idc["sub"] == claims["sub"]
    assert idc["nonce"] == nonce
    assert idc["auth_time"] == claims["auth_time"]
    digest = hashlib.sha256(body["access_token"].encode()).digest()
    assert idc["at_hash"] == base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()


async def test_without_openid_no_id_token_and_aud_is_the_resource_api(oauth) -> None:
    body = await oauth.user_tokens(scope="trades:read trades:write")
    assert "id_token" not in body
    claims = (await oauth.decode(body["access_token"])).claims
    assert claims["aud"] == RESOURCE_API_AUDIENCE
    assert claims["scope"] == "trades:read trades:write"


async def test_explicit_resource_indicator(oauth) -> None:
    body = await oauth.user_tokens(scope="trades:read", resource=RESOURCE_API_AUDIENCE)
    claims = (await oauth.decode(body["access_token"])).claims
    assert claims["aud"] == RESOURCE_API_AUDIENCE


async def test_resource_not_allowed_at_authorize_redirects_invalid_target(oauth) -> None:
    page = await oauth.authorize_page(resource="urn:bsopt:broker-gateway", state="s9")
    assert page.status_code == 302
    query = parse_qs(urlsplit(page.headers["location"]).query)
    assert query["error"] == ["invalid_target"]
    assert query["state"] == ["s9"]


async def test_no_scope_defaults_to_every_allowed_scope(oauth) -> None:
    body = await oauth.user_tokens(scope=None)
    assert set(body["scope"].split()) == {
        "openid", "profile", "trades:read", "trades:write", "training:read", "training:write"
    }


async def test_redirect_uri_keeps_its_query_string_out_of_the_code(oauth) -> None:
    # the code travels in the query of the exact redirect URI; no fragment is ever used
    result = await oauth.login(state="abc")
    assert "#" not in result.response.headers["location"]
    assert result.query["state"] == "abc"
