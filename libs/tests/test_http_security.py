"""The shared HTTP hardening (``bsopt_common.http_security``) on a small FastAPI app served
by a real uvicorn (the shared serve helper) on 127.0.0.1: headers on every response,
unhandled 500s included; no-store only under the configured prefixes; HSTS only when
asked; Swagger UI from local assets with a CSP that allows exactly its inline scripts."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from bsopt_common.http_security import (
    DEFAULT_CSP,
    HSTS_VALUE,
    hsts_for,
    install_security_headers,
    install_swagger_ui,
    script_hashes,
)
from bsopt_common.http_server import serve_asgi
from bsopt_common.testing.services import ServiceThread, free_port


def make_app(*, hsts: bool) -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None)

    @app.get("/v1/data")
    async def data() -> dict[str, str]:
        return {"user": "u1"}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("unhandled")

    @app.get("/page")
    async def page() -> HTMLResponse:
        return HTMLResponse("<p>hi</p>", headers={"Content-Security-Policy": "default-src 'none'"})

    install_swagger_ui(app, connect_src=["http://issuer.example"])
    install_security_headers(app, hsts=hsts, no_store_prefixes=("/v1",))
    return app


@pytest.fixture(scope="module", params=[False, True], ids=["http", "https"])
def base_url(request) -> Iterator[tuple[str, bool]]:
    port = free_port()
    app = make_app(hsts=request.param)
    with ServiceThread(lambda stop: serve_asgi(app, stop, host="127.0.0.1", port=port, grace_seconds=1), port=port):
        yield f"http://127.0.0.1:{port}", request.param


def test_every_response_has_the_headers_500_and_404_included(base_url) -> None:
    url, hsts = base_url
    with httpx.Client(base_url=url) as c:
        responses = {path: c.get(path) for path in ("/v1/data", "/nowhere", "/page", "/docs", "/openapi.json")}
        responses["405"] = c.post("/v1/data")
    # uvicorn closes the connection after an unhandled error: its own connection
    responses["/boom"] = httpx.get(url + "/boom")
    assert {p: r.status_code for p, r in responses.items()} == {
        "/v1/data": 200, "/boom": 500, "/nowhere": 404, "/page": 200, "/docs": 200, "/openapi.json": 200, "405": 405}
    for path, resp in responses.items():
        assert resp.headers["x-content-type-options"] == "nosniff", path
        assert resp.headers["referrer-policy"] == "no-referrer", path
        assert resp.headers["x-frame-options"] == "DENY", path
        assert "microphone=()" in resp.headers["permissions-policy"], path
        assert "frame-ancestors 'none'" in resp.headers["content-security-policy"], path
        assert resp.headers.get("strict-transport-security") == (HSTS_VALUE if hsts else None), path
    assert responses["/boom"].headers["content-security-policy"] == DEFAULT_CSP
    assert responses["/v1/data"].headers["cache-control"] == "no-store"
    assert responses["405"].headers["cache-control"] == "no-store"
    assert "cache-control" not in responses["/nowhere"].headers
    # a page's own policy is kept, completed with frame-ancestors
    assert responses["/page"].headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"


def test_swagger_ui_runs_only_local_scripts(base_url) -> None:
    url, _ = base_url
    with httpx.Client(base_url=url) as c:
        page = c.get("/docs")
        csp = page.headers["content-security-policy"]
        assert script_hashes(page.text) and all(h in csp for h in script_hashes(page.text))
        assert "connect-src 'self' http://issuer.example" in csp
        assert "unsafe-eval" not in csp and "script-src 'self' 'sha256-" in csp
        srcs = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
        assert {s.rsplit("/", 1)[-1] for s in srcs} == {"swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"}
        for src in srcs:
            assert src.startswith("/docs/static/")
            asset = c.get(src)
            assert asset.status_code == 200 and len(asset.content) > 100
            assert asset.headers["x-content-type-options"] == "nosniff"
        redirect = c.get("/docs/oauth2-redirect")
        assert redirect.status_code == 200
        assert all(h in redirect.headers["content-security-policy"] for h in script_hashes(redirect.text))


@pytest.mark.parametrize(("url", "expected"), [
    ("https://api.example", True), ("HTTPS://api.example", True), ("http://127.0.0.1:8000", False), (None, False),
    ("", False),
])
def test_hsts_only_for_https(url, expected) -> None:
    assert hsts_for(url) is expected
