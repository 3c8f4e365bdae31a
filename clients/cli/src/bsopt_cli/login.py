"""OAuth 2.1 authorization code + PKCE login for the public client ``bsopt-cli``.

The CLI listens on a loopback redirect URI on an ephemeral port (RFC 8252 §7.3), sends
the user to the authorization endpoint with an S256 code challenge (RFC 7636 §4.2), and
exchanges the code it receives, with the verifier, at the token endpoint. Endpoints
come from the issuer's metadata (RFC 8414).

Interactive use prints the authorization URL, then opens a browser (when there is a
usable one: :func:`has_usable_browser`; otherwise the CLI uses the device flow,
:mod:`bsopt_cli.device`). Headless use (``username``/``password`` given, as the
demo and tests do) fills in the authorization server's HTML login form over real HTTP,
exactly what a person's browser would submit. Either way the code arrives at the
loopback listener.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import sys
import threading
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlencode, urljoin, urlparse

import httpx

from bsopt_cli.dpop import DPoPKey, token_post

CLIENT_ID = "bsopt-cli"
#: ``offline_access`` (OIDC Core §11): a refresh token, so a login lasts beyond the access token.
DEFAULT_SCOPE = "openid profile offline_access trades:read trades:write training:read training:write"


class LoginError(RuntimeError):
    """The login did not produce a token; the message says at which step and why."""


@dataclass(frozen=True)
class TokenSet:
    access_token: str
    expires_in: int
    scope: str
    id_token: str | None
    refresh_token: str | None = None
    #: ``DPoP`` (RFC 9449 §5) or ``Bearer``.
    token_type: str = "Bearer"

    @classmethod
    def from_response(cls, body: dict) -> TokenSet:
        """From an RFC 6749 §5.1 token response."""
        return cls(body["access_token"], int(body.get("expires_in", 0)), body.get("scope", ""),
                   body.get("id_token"), body.get("refresh_token"), str(body.get("token_type", "Bearer")))


def has_usable_browser() -> bool:
    """A browser the user can see: macOS or Windows, or a registered browser
    (``webbrowser.get()``) on a machine with a display (``DISPLAY`` / ``WAYLAND_DISPLAY``).
    Over SSH without X forwarding: False (the console browsers webbrowser might find
    would take over the terminal)."""
    if sys.platform in ("darwin", "win32"):
        return True
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    try:
        webbrowser.get()
    except webbrowser.Error:
        return False
    return True


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge), RFC 7636 §4.1-4.2."""
    verifier = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


class _LoopbackReceiver:
    """One-shot HTTP listener on 127.0.0.1:<ephemeral> for the authorization response."""

    def __init__(self) -> None:
        self.params: dict[str, str] | None = None
        self.received = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                if url.path != "/callback":
                    self.send_response(404)
                    self.end_headers()
                    return
                owner.params = {k: v[0] for k, v in parse_qs(url.query).items()}
                body = b"<html><body>bsopt: login complete, you can close this window.</body></html>"
                self.send_response(200)
                self.send_header("content-type", "text/html; charset=utf-8")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                owner.received.set()

            def log_message(self, *args) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.redirect_uri = f"http://127.0.0.1:{self.server.server_address[1]}/callback"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _FormParser(HTMLParser):
    """Finds the first <form>: its action and its input fields."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self._in_form = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form" and self.action is None:
            self.action = a.get("action") or ""
            self._in_form = True
        elif tag == "input" and self._in_form and a.get("name"):
            self.fields[a["name"]] = a.get("value") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False


def discover(issuer: str, client: httpx.Client) -> dict:
    resp = client.get(issuer.rstrip("/") + "/.well-known/oauth-authorization-server")
    if resp.status_code != 200:
        raise LoginError(f"authorization server metadata unavailable at {issuer} (HTTP {resp.status_code})")
    meta = resp.json()
    if meta.get("issuer") != issuer.rstrip("/") and meta.get("issuer") != issuer:
        raise LoginError(f"metadata issuer {meta.get('issuer')!r} does not match {issuer!r} (RFC 8414 §3.3)")
    if "S256" not in meta.get("code_challenge_methods_supported", []):
        raise LoginError("authorization server does not support PKCE S256")
    return meta


def login(
    issuer: str,
    *,
    username: str | None = None,
    password: str | None = None,
    scope: str = DEFAULT_SCOPE,
    timeout_seconds: float = 120.0,
    announce: Callable[[str], None] | None = None,
    dpop_key: DPoPKey | None = None,
) -> TokenSet:
    """Run the code + PKCE flow and return the tokens. Raises LoginError. Interactive
    (no ``username``): ``announce`` gets the URL before the browser is opened. The code
    exchange carries a DPoP proof by ``dpop_key`` (RFC 9449; default: a new key kept
    only in memory), so the tokens are bound to it."""
    dpop_key = dpop_key if dpop_key is not None else DPoPKey.generate()
    receiver = _LoopbackReceiver()
    try:
        with httpx.Client(timeout=10.0, follow_redirects=False) as http:
            meta = discover(issuer, http)
            verifier, challenge = pkce_pair()
            state = secrets.token_urlsafe(16)
            nonce = secrets.token_urlsafe(16)
            query = {
                "response_type": "code", "client_id": CLIENT_ID, "redirect_uri": receiver.redirect_uri,
                "scope": scope, "state": state, "nonce": nonce,
                "code_challenge": challenge, "code_challenge_method": "S256",
            }
            authorize_url = meta["authorization_endpoint"] + "?" + urlencode(query)
            if username is None:
                if announce is not None:
                    announce(authorize_url)
                webbrowser.open(authorize_url)
            else:
                _submit_login_form(http, authorize_url, username, password or "")
            if not receiver.received.wait(timeout_seconds):
                raise LoginError(f"no authorization response reached the loopback redirect within "
                                 f"{timeout_seconds:.0f} s (no browser here? try `bsopt login --device`)")
            params = receiver.params or {}
            if "error" in params:
                raise LoginError(f"authorization failed: {params['error']}: {params.get('error_description', '')}")
            if params.get("state") != state:
                raise LoginError("state mismatch in the authorization response (possible CSRF)")
            if "iss" in params and params["iss"] != meta["issuer"]:
                raise LoginError("iss mismatch in the authorization response (RFC 9207)")
            resp = token_post(http, meta["token_endpoint"], {
                "grant_type": "authorization_code", "code": params.get("code", ""),
                "redirect_uri": receiver.redirect_uri, "client_id": CLIENT_ID, "code_verifier": verifier,
            }, dpop_key)
            if resp.status_code != 200:
                raise LoginError(f"token request failed: HTTP {resp.status_code} {resp.text[:200]}")
            return TokenSet.from_response(resp.json())
    finally:
        receiver.close()


def _submit_login_form(http: httpx.Client, authorize_url: str, username: str, password: str) -> None:
    page = http.get(authorize_url)
    if page.status_code != 200:
        raise LoginError(f"authorization endpoint answered HTTP {page.status_code}: {page.text[:200]}")
    form = _FormParser()
    form.feed(page.text)
    if form.action is None or "username" not in form.fields or "password" not in form.fields:
        raise LoginError("the authorization endpoint did not return a login form with username and password")
    fields = dict(form.fields, username=username, password=password)
    action = urljoin(str(page.url), form.action) if form.action else str(page.url)
    resp = http.post(action, data=fields)
    if resp.status_code not in (302, 303):
        raise LoginError(f"login form refused the credentials (HTTP {resp.status_code})")
    location = resp.headers.get("location", "")
    # The browser's job: follow the redirect to our loopback listener.
    http.get(location)
