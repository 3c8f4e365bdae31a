"""resource-api's Swagger UI "Authorize" against a real auth-server (uvicorn on 127.0.0.1):
the public client ``bsopt-docs`` signs in with code + PKCE, redirected to
``<resource-api>/docs/oauth2-redirect``, and the page, at resource-api's origin, POSTs the
code exchange to the token endpoint cross-origin. CORS is answered for the listed origins
(``token_endpoint_cors_origins``) on the token endpoint only, never with credentials."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from pydantic import ValidationError

from bsopt_auth.app import create_app
from bsopt_auth.config import AuthSettings
from bsopt_auth.seed import DEV_RESOURCE_API_ORIGIN, DOCS_CLIENT_ID, DOCS_REDIRECT_URI
from bsopt_common.http_server import serve_asgi
from bsopt_common.testing.services import ServiceThread, free_port

ORIGIN = DEV_RESOURCE_API_ORIGIN  # http://127.0.0.1:8000
TOKEN_PATH = "/oauth2/token"
#: What Swagger UI 5 sends with its token request (``authorizeRequest``).
SWAGGER_HEADERS = {"Accept": "application/json, text/plain, */*", "X-Requested-With": "XMLHttpRequest"}


def _serve(settings: AuthSettings, engine) -> Iterator[str]:
    app = create_app(settings, engine)
    port = free_port()
    with ServiceThread(lambda stop: serve_asgi(app, stop, host="127.0.0.1", port=port, grace_seconds=1),
                       port=port):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def cors_base_url(settings: AuthSettings, engine) -> Iterator[str]:
    yield from _serve(settings.model_copy(update={"token_endpoint_cors_origins": (ORIGIN,)}), engine)


@pytest.fixture
async def http(cors_base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=cors_base_url, follow_redirects=False, timeout=30) as c:
        yield c


def preflight_headers(origin: str, method: str = "POST",
                      headers: str = "content-type,x-requested-with") -> dict[str, str]:
    return {"Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers}


async def test_preflight_from_the_allowed_origin(http: httpx.AsyncClient) -> None:
    resp = await http.options(TOKEN_PATH, headers=preflight_headers(ORIGIN))
    assert resp.status_code == 200, resp.text
    assert resp.headers["access-control-allow-origin"] == ORIGIN
    assert [m.strip() for m in resp.headers["access-control-allow-methods"].split(",")] == ["POST"]
    allowed = {h.strip().lower() for h in resp.headers["access-control-allow-headers"].split(",")}
    assert {"content-type", "x-requested-with"} <= allowed and "authorization" not in allowed
    assert "access-control-allow-credentials" not in resp.headers
    assert "Origin" in resp.headers["vary"]
    assert int(resp.headers["access-control-max-age"]) > 0
    assert resp.headers["x-content-type-options"] == "nosniff"  # the edge headers still apply


@pytest.mark.parametrize("origin", [
    "http://evil.example", "http://127.0.0.1:8001", "https://127.0.0.1:8000", "http://localhost:8000", "null",
])
async def test_preflight_from_another_origin_is_not_answered(http: httpx.AsyncClient, origin: str) -> None:
    resp = await http.options(TOKEN_PATH, headers=preflight_headers(origin))
    assert resp.status_code == 400
    assert "access-control-allow-origin" not in resp.headers
    assert "access-control-allow-credentials" not in resp.headers


@pytest.mark.parametrize(("method", "headers"), [("PUT", "content-type"), ("POST", "authorization"),
                                                 ("POST", "content-type,cookie")])
async def test_preflight_for_anything_but_the_form_post_is_refused(http: httpx.AsyncClient, method: str,
                                                                   headers: str) -> None:
    resp = await http.options(TOKEN_PATH, headers=preflight_headers(ORIGIN, method, headers))
    assert resp.status_code == 400


@pytest.mark.parametrize("path", ["/authorize", "/userinfo", "/.well-known/openid-configuration",
                                  "/.well-known/jwks.json", "/oauth2/token/"])
async def test_no_cors_anywhere_but_the_token_endpoint(http: httpx.AsyncClient, path: str) -> None:
    pre = await http.options(path, headers=preflight_headers(ORIGIN, "GET", "authorization"))
    assert "access-control-allow-origin" not in pre.headers
    resp = await http.get(path, headers={"Origin": ORIGIN})
    assert "access-control-allow-origin" not in resp.headers


async def test_swagger_ui_sign_in_yields_a_code_and_a_token(http: httpx.AsyncClient, settings, oauth) -> None:
    oauth = type(oauth)(http, settings)  # the shared helpers, over real HTTP
    result = await oauth.login(redirect_uri=DOCS_REDIRECT_URI, scope="trades:read training:read",
                               client_id=DOCS_CLIENT_ID)
    assert result.response.status_code == 303, result.response.text
    location = urlsplit(result.response.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == DOCS_REDIRECT_URI
    query = {k: v[0] for k, v in parse_qs(location.query).items()}
    assert query["code"] and query["iss"] == settings.issuer

    # the page's POST, as Swagger UI sends it: form body, client_id, no secret, from ORIGIN
    form = {"grant_type": "authorization_code", "code": query["code"], "client_id": DOCS_CLIENT_ID,
            "redirect_uri": DOCS_REDIRECT_URI, "code_verifier": result.verifier}
    resp = await http.post(TOKEN_PATH, data=form, headers={**SWAGGER_HEADERS, "Origin": ORIGIN})
    assert resp.status_code == 200, resp.text
    assert resp.headers["access-control-allow-origin"] == ORIGIN
    assert "access-control-allow-credentials" not in resp.headers
    assert resp.headers["cache-control"] == "no-store"
    body = resp.json()
    assert body["token_type"] == "Bearer" and body["scope"] == "trades:read training:read"
    claims = (await oauth.decode(body["access_token"])).claims
    assert claims["client_id"] == DOCS_CLIENT_ID and "urn:bsopt:resource-api" in claims["aud"]


async def test_token_response_to_another_origin_carries_no_cors_header(http: httpx.AsyncClient) -> None:
    # CORS is the browser's check: the server answers, but a foreign page may not read it
    resp = await http.post(TOKEN_PATH, data={"grant_type": "authorization_code", "code": "x",
                                             "client_id": DOCS_CLIENT_ID},
                           headers={**SWAGGER_HEADERS, "Origin": "http://evil.example"})
    assert resp.status_code == 400
    assert "access-control-allow-origin" not in resp.headers


@pytest.mark.parametrize("redirect_uri", [
    "http://127.0.0.1:8000/docs/oauth2-redirect/",
    "http://127.0.0.1:8000/docs/other",
    "http://localhost:8000/docs/oauth2-redirect",
    "https://127.0.0.1:8000/docs/oauth2-redirect",
    "http://evil.example:8000/docs/oauth2-redirect",
])
async def test_only_the_registered_docs_redirect_is_accepted(http: httpx.AsyncClient, settings, oauth,
                                                            redirect_uri: str) -> None:
    page = await type(oauth)(http, settings).authorize_page(redirect_uri=redirect_uri)
    assert page.status_code == 400
    assert "location" not in page.headers


async def test_no_cors_by_default(client: httpx.AsyncClient, settings) -> None:
    assert settings.token_endpoint_cors_origins == ()
    resp = await client.options(TOKEN_PATH, headers=preflight_headers(ORIGIN))
    assert resp.status_code == 405
    assert "access-control-allow-origin" not in resp.headers


def test_cors_origins_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BSOPT_AUTH_TOKEN_ENDPOINT_CORS_ORIGINS", "http://127.0.0.1:8000, https://app.example")
    s = AuthSettings(_env_file=None, issuer="http://127.0.0.1:9000", environment="test")
    assert s.token_endpoint_cors_origins == ("http://127.0.0.1:8000", "https://app.example")
    for bad in ("*", "http://127.0.0.1:8000/docs", "http://127.0.0.1:8000/", "null", "ftp://x.example",
                "http://u:p@x.example", "http://x.example:99999", "*.example.com"):
        monkeypatch.setenv("BSOPT_AUTH_TOKEN_ENDPOINT_CORS_ORIGINS", bad)
        with pytest.raises(ValidationError, match="token_endpoint_cors_origins"):
            AuthSettings(_env_file=None, issuer="http://127.0.0.1:9000", environment="test")
