"""Security-audit replays against the real auth-server app (httpx over ASGI, real
Postgres, migrated and seeded):

- A1: a bearer token whose JOSE header is a JSON array / string / number / null is a 401
  at ``/userinfo``, never a 500;
- A2: a NUL byte in ``client_id``, ``redirect_uri``, ``username``, ``state`` or any other
  parameter of /authorize (GET and the login POST) or the token endpoint is a 400
  (``invalid_request``), never a 500;
- A5/A6: an OpenAPI document is published, Swagger UI loads from this server only;
- B: security headers on every response (errors and 404s included), no-store on the
  token and userinfo responses, HSTS only for an https issuer.
"""

from __future__ import annotations

import base64
import json
import re
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from bsopt_auth.app import create_app
from bsopt_auth.config import AuthSettings
from bsopt_auth.seed import CLI_CLIENT_ID
from bsopt_common.http_security import HSTS_VALUE


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token_with_header(header: object) -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(b'{}')}.{_b64(b'sig')}"


MALFORMED = {"array": ["typ", "at+jwt"], "string": "at+jwt", "number": 7, "null": None}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


# --- A1 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("kind", MALFORMED)
async def test_userinfo_refuses_a_non_object_jose_header_with_401(client, kind, method) -> None:
    resp = await client.request(method, "/userinfo",
                                headers={"Authorization": f"Bearer {token_with_header(MALFORMED[kind])}"})
    assert resp.status_code == 401, resp.text
    assert 'error="invalid_token"' in resp.headers["www-authenticate"]
    assert "attribute" not in resp.text


# --- A2 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["client_id", "redirect_uri", "state", "scope", "code_challenge", "nonce"])
async def test_nul_in_an_authorize_parameter_is_400(oauth, name) -> None:
    params = oauth.authorize_params(nonce="n-1")
    params[name] = params[name][:3] + "\x00" + params[name][3:]
    resp = await oauth.client.get("/authorize", params=params)
    assert resp.status_code == 400, resp.text
    assert "invalid_request" in resp.text
    assert "location" not in resp.headers  # never redirected: the values cannot be trusted


@pytest.mark.parametrize("name", ["username", "password", "state", "client_id"])
async def test_nul_in_the_login_form_is_400(oauth, name) -> None:
    page = await oauth.authorize_page()
    assert page.status_code == 200
    fields = dict(oauth.parse_form(page.text).fields())
    fields.update(username="demo", password="not-the-password")
    fields[name] = "de\x00mo"
    resp = await oauth.client.post("/authorize", content=urlencode(fields), headers=FORM)
    assert resp.status_code == 400, resp.text
    assert "invalid_request" in resp.text
    assert "location" not in resp.headers


@pytest.mark.parametrize("data", [
    {"grant_type": "client_credentials", "client_id": "bro\x00ker", "client_secret": "x"},
    {"grant_type": "authorization_code", "client_id": CLI_CLIENT_ID, "code": "a\x00b",
     "redirect_uri": "http://127.0.0.1:53123/callback", "code_verifier": "v" * 43},
    {"grant_type": "client\x00credentials"},
    {"grant_type": "client_credentials", "scope": "a\x00b"},
    {"grant_type": "client_credentials", "resource": "urn:\x00"},
], ids=["client_id", "code", "grant_type", "scope", "resource"])
async def test_nul_in_a_token_request_is_400_invalid_request(oauth, data) -> None:
    resp = await oauth.client.post("/oauth2/token", content=urlencode(data), headers=FORM)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"] == "invalid_request"
    assert resp.headers["cache-control"] == "no-store"


async def test_nul_in_basic_credentials_is_invalid_client(oauth) -> None:
    raw = base64.b64encode(b"bro\x00ker:secret").decode()
    resp = await oauth.client.post("/oauth2/token", content="grant_type=client_credentials",
                                   headers={**FORM, "Authorization": f"Basic {raw}"})
    assert resp.status_code in (400, 401), resp.text
    assert resp.json()["error"] in ("invalid_request", "invalid_client")


# --- A5 / A6 --------------------------------------------------------------------------------


async def test_openapi_document_is_published(client, settings) -> None:
    resp = await client.get("/openapi.json")
    assert resp.status_code == 200
    doc = resp.json()
    assert {"/authorize", "/oauth2/token", "/userinfo"} <= set(doc["paths"])
    token = doc["paths"]["/oauth2/token"]["post"]
    assert "application/x-www-form-urlencoded" in token["requestBody"]["content"]
    assert {"200", "400", "401"} <= set(token["responses"])
    flow = doc["components"]["securitySchemes"]["bsopt"]["flows"]["authorizationCode"]
    assert flow["authorizationUrl"] == settings.issuer + "/authorize"
    assert flow["tokenUrl"] == settings.issuer + "/oauth2/token"


async def test_swagger_ui_is_served_without_a_cdn(client) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text) + re.findall(r"url: '([^']+)'", page.text)
    assert any(u.endswith(".js") for u in urls) and any(u.endswith(".css") for u in urls)
    for url in urls:
        assert not urlsplit(url).netloc, f"/docs references an external host: {url}"
        assert (await client.get(url)).status_code == 200, url
    assert "'sha256-" in page.headers["content-security-policy"]


# --- B --------------------------------------------------------------------------------------


def assert_security_headers(resp: httpx.Response) -> None:
    assert resp.headers["x-content-type-options"] == "nosniff", resp.request.url
    assert resp.headers["referrer-policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in resp.headers["content-security-policy"]
    assert "camera=()" in resp.headers["permissions-policy"]


async def test_every_response_carries_the_security_headers(oauth) -> None:
    c = oauth.client
    user = await oauth.user_tokens(scope="openid profile")
    token_ok = await c.post("/oauth2/token", data={"grant_type": "client_credentials"},
                            headers={"Authorization": "Basic " + base64.b64encode(
                                b"broker-gateway:dev-broker-gateway-secret").decode()})
    responses = {
        "token 200": token_ok,
        "token 400": await c.post("/oauth2/token", data={"grant_type": "password"}),
        "userinfo 200": await c.get("/userinfo", headers={"Authorization": f"Bearer {user['access_token']}"}),
        "userinfo 401": await c.get("/userinfo"),
        "authorize 200": await oauth.authorize_page(),
        "authorize 400": await c.get("/authorize"),
        "authorize 302": await c.get("/authorize", params=oauth.authorize_params(response_type="token")),
        "404": await c.get("/no/such/path"),
        "405": await c.delete("/oauth2/token"),
        "metadata": await c.get("/.well-known/openid-configuration"),
        "jwks": await c.get("/.well-known/jwks.json"),
        "openapi": await c.get("/openapi.json"),
        "docs": await c.get("/docs"),
        "healthz": await c.get("/healthz"),
    }
    assert {k: r.status_code for k, r in responses.items()} == {
        "token 200": 200, "token 400": 400, "userinfo 200": 200, "userinfo 401": 401, "authorize 200": 200,
        "authorize 400": 400, "authorize 302": 302, "404": 404, "405": 405, "metadata": 200, "jwks": 200,
        "openapi": 200, "docs": 200, "healthz": 200,
    }
    for name, resp in responses.items():
        assert_security_headers(resp)
        assert "strict-transport-security" not in resp.headers, name  # the issuer is http here
    for name in ("token 200", "token 400", "userinfo 200", "userinfo 401", "authorize 200", "authorize 302"):
        assert responses[name].headers["cache-control"] == "no-store", name
    assert parse_qs(urlsplit(responses["authorize 302"].headers["location"]).query)["error"] == [
        "unsupported_response_type"]


async def test_hsts_only_for_an_https_issuer(engine) -> None:
    for issuer, expected in (("https://auth.bsopt.example", HSTS_VALUE), ("http://127.0.0.1:9000", None)):
        settings = AuthSettings(_env_file=None, issuer=issuer, environment="test", signing_alg="RS256")
        app = create_app(settings, engine)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=issuer) as c:
            for resp in (await c.get("/healthz"), await c.get("/nowhere"),
                         await c.post("/oauth2/token", data={"grant_type": "password"})):
                assert resp.headers.get("strict-transport-security") == expected
                assert_security_headers(resp)
