"""HTTP response hardening shared by auth-server and resource-api (``http`` extra).

:func:`install_security_headers` wraps an app's whole middleware stack (outside
Starlette's ``ServerErrorMiddleware``, so 500s and 404s get the headers too) in
:class:`SecurityHeadersMiddleware`, which sets on every HTTP response:

- ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer``,
  ``X-Frame-Options: DENY``, a ``Permissions-Policy`` turning off powerful features;
- ``Content-Security-Policy``: :data:`DEFAULT_CSP` (nothing may load, no framing) unless
  the response set its own (HTML pages do: the login form, the Swagger page); an own
  policy without ``frame-ancestors`` gets ``frame-ancestors 'none'`` appended;
- ``Cache-Control: no-store`` on responses under the ``no_store_prefixes`` (token and
  user data);
- ``Strict-Transport-Security`` when the service's public URL is https (:func:`hsts_for`).

:func:`install_swagger_ui` serves Swagger UI without a CDN: the assets come from the
``fastapi-offline`` wheel and are served by the app itself under ``/docs/static``; the
page's inline scripts are allowed by their SHA-256 in the page's CSP, nothing else runs.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.resources
import re
from collections.abc import Iterable, Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from starlette.datastructures import MutableHeaders
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Policy of every response that brings none of its own (JSON, problem+json, errors).
DEFAULT_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
PERMISSIONS_POLICY = (
    "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), microphone=(), "
    "payment=(), usb=()"
)
HSTS_VALUE = "max-age=31536000; includeSubDomains"
STATIC_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Permissions-Policy": PERMISSIONS_POLICY,
}


def hsts_for(public_url: str | None) -> bool:
    """Whether a service reached at ``public_url`` sends HSTS (only over https)."""
    return bool(public_url) and str(public_url).lower().startswith("https://")


class SecurityHeadersMiddleware:
    """Pure ASGI middleware adding the headers of the module docstring to every HTTP
    response, including the HTTP answer that refuses a WebSocket upgrade (the ASGI
    WebSocket Denial Response extension: ``websocket.http.response.start``); lifespan
    scopes pass through untouched."""

    def __init__(self, app: ASGIApp, *, hsts: bool = False, no_store_prefixes: Sequence[str] = ()):
        self.app = app
        self.hsts = hsts
        self.no_store_prefixes = tuple(no_store_prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        no_store = path.startswith(self.no_store_prefixes) if self.no_store_prefixes else False

        async def send_with_headers(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.http.response.start"):
                headers = MutableHeaders(scope=message)
                for name, value in STATIC_HEADERS.items():
                    headers[name] = value
                own = headers.get("content-security-policy")
                if own is None:
                    headers["Content-Security-Policy"] = DEFAULT_CSP
                elif "frame-ancestors" not in own:
                    headers["Content-Security-Policy"] = own.rstrip("; ") + "; frame-ancestors 'none'"
                if no_store:
                    headers["Cache-Control"] = "no-store"
                if self.hsts:
                    headers["Strict-Transport-Security"] = HSTS_VALUE
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install_security_headers(app: FastAPI, *, hsts: bool, no_store_prefixes: Sequence[str] = ()) -> None:
    """Wrap ``app``'s whole middleware stack (built on its first call) in
    :class:`SecurityHeadersMiddleware`. ``app.add_middleware`` would sit inside
    Starlette's ``ServerErrorMiddleware`` and miss the 500 responses."""
    build = app.build_middleware_stack

    def build_with_headers() -> ASGIApp:
        return SecurityHeadersMiddleware(build(), hsts=hsts, no_store_prefixes=no_store_prefixes)

    setattr(app, "build_middleware_stack", build_with_headers)  # noqa: B010 (a method replaced on purpose)


# --- Swagger UI without a CDN ------------------------------------------------------------

#: Swagger UI 5 (bundle, css, favicon) as shipped in the fastapi-offline wheel.
SWAGGER_ASSETS = importlib.resources.files("fastapi_offline") / "static"
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def script_hashes(html: str) -> list[str]:
    """CSP ``'sha256-…'`` sources of the inline ``<script>`` blocks of ``html``."""
    return [
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
        for body in _INLINE_SCRIPT.findall(html)
    ]


def page_csp(html: str, *, connect_src: Iterable[str] = (), form_action: Iterable[str] = ()) -> str:
    """The CSP of a page that runs only same-origin scripts and its own inline ones."""
    connect = " ".join(["'self'", *connect_src])
    forms = " ".join(form_action) or "'none'"
    return (
        f"default-src 'none'; script-src 'self' {' '.join(script_hashes(html))}; "
        "style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self'; "
        f"connect-src {connect}; form-action {forms}; frame-ancestors 'none'; base-uri 'none'"
    )


def _page(response: HTMLResponse, **csp: Any) -> tuple[str, dict[str, str]]:
    html = bytes(response.body).decode()
    return html, {"Content-Security-Policy": page_csp(html, **csp), "Cache-Control": "no-cache"}


def install_swagger_ui(
    app: FastAPI,
    *,
    docs_url: str = "/docs",
    init_oauth: dict[str, Any] | None = None,
    connect_src: Iterable[str] = (),
) -> None:
    """Serve Swagger UI at ``docs_url`` (create the app with ``docs_url=None``), its
    assets at ``<docs_url>/static/`` and the OAuth2 redirect page at
    ``<docs_url>/oauth2-redirect``. ``connect_src``: origins the page may call besides
    its own (the issuer's token endpoint, for "Authorize")."""
    static_url = f"{docs_url}/static"
    redirect_url = f"{docs_url}/oauth2-redirect"
    app.swagger_ui_oauth2_redirect_url = redirect_url
    connect = tuple(connect_src)
    openapi_url = app.openapi_url or "/openapi.json"
    page, page_headers = _page(
        get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{static_url}/swagger-ui-bundle.js",
            swagger_css_url=f"{static_url}/swagger-ui.css",
            swagger_favicon_url=f"{static_url}/favicon.png",
            oauth2_redirect_url=redirect_url,
            init_oauth=init_oauth,
            swagger_ui_parameters=app.swagger_ui_parameters,
        ),
        connect_src=connect,
    )
    redirect_page, redirect_headers = _page(get_swagger_ui_oauth2_redirect_html())

    app.mount(static_url, StaticFiles(directory=str(SWAGGER_ASSETS)), name="swagger-ui-assets")

    async def swagger_ui() -> HTMLResponse:
        return HTMLResponse(page, headers=page_headers)

    async def oauth2_redirect() -> HTMLResponse:
        return HTMLResponse(redirect_page, headers=redirect_headers)

    app.add_api_route(docs_url, swagger_ui, methods=["GET"], include_in_schema=False)
    app.add_api_route(redirect_url, oauth2_redirect, methods=["GET"], include_in_schema=False)


__all__ = [
    "DEFAULT_CSP",
    "HSTS_VALUE",
    "PERMISSIONS_POLICY",
    "SecurityHeadersMiddleware",
    "hsts_for",
    "install_security_headers",
    "install_swagger_ui",
    "page_csp",
    "script_hashes",
]
