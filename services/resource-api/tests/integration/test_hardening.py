"""Security-audit replays against the real resource-api (uvicorn on 127.0.0.1, real
Postgres, tokens from the test issuer; backends are closed ports):

- A1: a bearer token whose JOSE header is a JSON array / string / number / null is a 401
  (HTTP) and a refused handshake (WebSocket), never a 500;
- A2: a NUL byte (or an over-long id) in a path id or body id is a 422 before any backend
  call;
- A3: an RFC 3339 instant that overflows in UTC is a 422, not an OverflowError;
- A5/A6: the OpenAPI document declares the OAuth2 scheme and the problem responses; Swagger
  UI loads from this server only;
- B: security headers on every response (errors and 404s included), no-store on /v1,
  HSTS only when the public URL is https.
"""

from __future__ import annotations

import base64
import json
import re
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from bsopt_api.app import create_app
from bsopt_api.bootstrap import bootstrap
from bsopt_common.http_security import DEFAULT_CSP, HSTS_VALUE


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token_with_header(header: object) -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(b'{}')}.{_b64(b'sig')}"


MALFORMED = {"array": ["typ", "at+jwt"], "string": "at+jwt", "number": 7, "null": None}


# --- A1 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", MALFORMED)
@pytest.mark.parametrize("path", ["/v1/me", "/v1/trades", "/v1/digests/latest"])
async def test_non_object_jose_header_is_401(client, kind, path):
    resp = await client.get(path, headers={"Authorization": f"Bearer {token_with_header(MALFORMED[kind])}"})
    assert resp.status_code == 401, resp.text
    assert 'error="invalid_token"' in resp.headers["www-authenticate"]
    assert resp.headers["content-type"] == "application/problem+json"
    assert "attribute" not in resp.text


@pytest.mark.parametrize("kind", MALFORMED)
async def test_non_object_jose_header_refuses_the_websocket_handshake(running_api, kind):
    token = token_with_header(MALFORMED[kind])
    with pytest.raises(InvalidStatus) as refused:
        async with connect(running_api.ws_url, additional_headers={"Authorization": f"Bearer {token}"}):
            pass
    assert refused.value.response.status_code == 401  # refused before accept, like the HTTP API
    with pytest.raises(InvalidStatus) as refused:  # the browser form: subprotocols ["bearer", token]
        async with connect(running_api.ws_url, subprotocols=["bearer", token]):
            pass
    assert refused.value.response.status_code == 401


# --- A2 -------------------------------------------------------------------------------------

NUL_PATHS = [
    ("GET", "/v1/training-jobs/a%00b", None),
    ("POST", "/v1/training-jobs/a%00b/paper-trading", {"account_id": "acct-1"}),
    ("GET", "/v1/accounts/a%00b", None),
    ("POST", "/v1/accounts/a%00b/imports", {"start": "2024-01-01", "end": "2024-02-01"}),
    ("GET", "/v1/imports/a%00b", None),
    ("GET", "/v1/accounts/" + "x" * 2000, None),
]


@pytest.mark.parametrize(("method", "path", "body"), NUL_PATHS, ids=[f"{m} {p[:40]}" for m, p, _ in NUL_PATHS])
async def test_nul_or_overlong_path_id_is_422_before_any_backend_call(client, tokens, method, path, body):
    resp = await client.request(method, path, json=body, headers=tokens.bearer(tokens.user()))
    assert resp.status_code == 422, resp.text  # a backend call would be 503 (closed ports)
    assert resp.headers["content-type"] == "application/problem+json"
    [error] = resp.json()["errors"]
    assert error["loc"][0] == "path"
    assert "x" * 600 not in resp.text  # the over-long id is not echoed in full


async def test_nul_in_body_id_is_422(client, tokens):
    resp = await client.post("/v1/training-jobs/job-1/paper-trading", json={"account_id": "a\x00b"},
                             headers=tokens.bearer(tokens.user()))
    assert resp.status_code == 422, resp.text


# --- A3 -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("start", "end"), [
    ("2024-01-01", "9999-12-31T23:59:59.999999-23:59"),
    ("0001-01-01T00:00:00+23:59", "2024-01-01"),
])
async def test_instant_overflowing_in_utc_is_422(client, tokens, start, end):
    resp = await client.post("/v1/accounts/acct-1/imports", json={"start": start, "end": end},
                             headers=tokens.bearer(tokens.user()))
    assert resp.status_code == 422, resp.text
    assert any("out of range" in e["msg"] for e in resp.json()["errors"])


async def test_the_latest_instant_in_utc_is_accepted(client, tokens):
    resp = await client.post("/v1/accounts/acct-1/imports",
                             json={"start": "2024-01-01", "end": "9999-12-31T23:59:59.999999Z"},
                             headers=tokens.bearer(tokens.user()))
    assert resp.status_code == 503, resp.text  # valid: it reached the (absent) backend


# --- A5 / A6 --------------------------------------------------------------------------------


async def test_openapi_declares_oauth2_code_flow_and_problem_responses(client, running_api):
    doc = (await client.get("/openapi.json")).json()
    flow = doc["components"]["securitySchemes"]["bsopt"]["flows"]["authorizationCode"]
    issuer = running_api.settings.issuer.rstrip("/")
    assert flow["authorizationUrl"] == issuer + "/authorize"
    assert flow["tokenUrl"] == issuer + "/oauth2/token"
    assert set(flow["scopes"]) == {"training:read", "training:write", "trades:read", "trades:write"}
    get_account = doc["paths"]["/v1/accounts/{account_id}"]["get"]
    assert get_account["security"] == [{"bsopt": ["trades:read"]}]
    for status in ("401", "403", "404", "409", "422", "503"):
        assert "application/problem+json" in get_account["responses"][status]["content"], status
    assert "Retry-After" in get_account["responses"]["503"]["headers"]
    digest = doc["paths"]["/v1/digests/latest"]["get"]["responses"]
    assert {"401", "403", "404"} <= set(digest)
    assert "HTTPValidationError" not in doc["components"]["schemas"]


async def test_swagger_ui_is_served_without_a_cdn(client):
    page = await client.get("/docs")
    assert page.status_code == 200
    html = page.text
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html) + re.findall(r"url: '([^']+)'", html)
    assert urls
    for url in urls:
        assert not urlsplit(url).netloc, f"/docs references an external host: {url}"
        asset = await client.get(url)
        assert asset.status_code == 200, url
    assert any(u.endswith(".js") for u in urls) and any(u.endswith(".css") for u in urls)
    csp = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "'sha256-" in csp and "script-src 'self'" in csp
    assert "https:" not in csp.replace(page.url.host, "")  # no remote origin may load scripts
    assert (await client.get("/docs/oauth2-redirect")).status_code == 200


# --- B --------------------------------------------------------------------------------------


def assert_security_headers(resp: httpx.Response) -> None:
    assert resp.headers["x-content-type-options"] == "nosniff", resp.request.url
    assert resp.headers["referrer-policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in resp.headers["content-security-policy"]
    assert "camera=()" in resp.headers["permissions-policy"]


async def test_every_response_carries_the_security_headers(client, tokens):
    token = tokens.bearer(tokens.user())
    responses = [
        await client.get("/v1/me", headers=token),  # 200
        await client.get("/v1/me"),  # 401
        await client.get("/v1/digests/latest", headers=token),  # 404 problem
        await client.get("/no/such/path"),  # router 404
        await client.get("/v1/trades?limit=0", headers=token),  # 422
        await client.get("/v1/trades", headers=token),  # 503 (backend down)
        await client.delete("/v1/me", headers=token),  # 405
        await client.get("/healthz"),
        await client.get("/openapi.json"),
        await client.get("/docs"),
    ]
    assert [r.status_code for r in responses] == [200, 401, 404, 404, 422, 503, 405, 200, 200, 200]
    for resp in responses:
        assert_security_headers(resp)
    for resp in responses[:7]:
        if resp.request.url.path.startswith("/v1"):
            assert resp.headers["cache-control"] == "no-store", resp.request.url
        assert resp.headers["content-security-policy"] == DEFAULT_CSP
    assert "strict-transport-security" not in responses[0].headers  # http public URL


async def test_hsts_only_when_the_public_url_is_https(settings_for, token_provider):
    for public_url, expected in (("https://api.bsopt.example", HSTS_VALUE), ("http://127.0.0.1:8000", None),
                                 (None, None)):
        settings = settings_for(public_url=public_url)
        app = create_app(settings, runtime=bootstrap(settings, token_provider=token_provider("resource-api")))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c:
            for resp in (await c.get("/healthz"), await c.get("/nowhere")):
                assert resp.headers.get("strict-transport-security") == expected
                assert_security_headers(resp)
