"""``bsopt login`` / ``whoami`` / ``logout`` against the real auth-server over real HTTP
(uvicorn on 127.0.0.1, real Postgres): the device flow (RFC 8628) with the verification
page driven like a browser by httpx while the CLI code polls; the credentials file's
mode; transparent refresh; logout revoking the refresh token (RFC 7009)."""

from __future__ import annotations

import json
import stat
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from bsopt_auth.app import create_app
from bsopt_auth.config import AuthSettings
from bsopt_auth.db import migrate
from bsopt_auth.models import DeviceAuthorization
from bsopt_auth.rfc7517 import configure_key_encryption
from bsopt_auth.seed import DEMO_PASSWORD, DEMO_USERNAME, seed_dev
from bsopt_cli import __main__ as cli_main
from bsopt_cli.credentials import Credentials, FileStore, NotLoggedInError, logout, valid_access_token
from bsopt_cli.device import device_login
from bsopt_cli.dpop import load_or_create_key, token_post
from bsopt_cli.login import CLIENT_ID, LoginError
from bsopt_cli.login import login as pkce_login
from bsopt_common.db import create_db_engine, make_session_factory, session_scope
from bsopt_common.http_server import serve_asgi
from bsopt_common.testing.services import ServiceThread, free_port


@pytest.fixture(scope="module")
def server(postgres_url: str) -> Iterator[tuple[str, Any]]:
    """The auth-server on a free port; (issuer, session_factory)."""
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    settings = AuthSettings(_env_file=None, issuer=issuer, environment="test", device_code_interval_seconds=1,
                            access_token_ttl_seconds=300)
    configure_key_encryption(settings.key_encryption_key_provider())
    engine = create_db_engine(postgres_url, application_name="bsopt-cli-tests")
    migrate(engine)
    factory = make_session_factory(engine)
    seed_dev(factory)
    app = create_app(settings, engine)
    with ServiceThread(lambda stop: serve_asgi(app, stop, host="127.0.0.1", port=port, grace_seconds=1), port=port):
        yield issuer, factory
    engine.dispose()


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "cfg" / "bsopt"
    monkeypatch.setenv("BSOPT_CONFIG_DIR", str(d))
    monkeypatch.setenv("BSOPT_CREDENTIALS_STORE", "file")
    return d


class _Form(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.fields: dict[str, str] = {}
        self.depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "input" and a.get("name"):
            self.fields[a["name"]] = a.get("value", "")


def browser_decides(url: str, decision: str, password: str = DEMO_PASSWORD) -> httpx.Response:
    """What a person does in a browser: open ``verification_uri_complete``, sign in, decide."""
    with httpx.Client(timeout=10.0) as browser:
        page = browser.get(url)
        assert page.status_code == 200, page.text
        form = _Form()
        form.feed(page.text)
        fields = dict(form.fields, username=DEMO_USERNAME, password=password, decision=decision)
        return browser.post(url.split("?")[0], data=fields)


class Announcements:
    """Collects what the CLI prints; finds the complete verification URL."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.url = threading.Event()
        self.complete: str = ""

    def __call__(self, text: str) -> None:
        self.lines.append(text)
        for word in text.split():
            if "/device?user_code=" in word:
                self.complete = word
                self.url.set()


def run_in_thread(fn, *args, **kwargs) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["result"] = fn(*args, **kwargs)
        except Exception as exc:  # handed to the test
            out["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, out


def test_device_login_end_to_end_with_slow_down(server):
    issuer, factory = server
    said = Announcements()
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:
            return  # the second poll comes too soon: the server answers slow_down
        with session_scope(factory) as s:  # instead of waiting: make the last poll look old
            s.execute(update(DeviceAuthorization).values(last_polled_at=datetime.now(UTC) - timedelta(hours=1)))
        time.sleep(0.05)

    thread, out = run_in_thread(device_login, issuer, announce=said, sleep=sleep)
    assert said.url.wait(10), said.lines
    text = "\n".join(said.lines)
    assert f"{issuer}/device" in text  # the verification URI and the code, at once
    code = said.complete.split("user_code=")[1]
    assert code in text and len(code) == 9 and code[4] == "-"
    while len(sleeps) < 4:  # pending, slow_down, pending...
        time.sleep(0.05)
    done = browser_decides(said.complete, "approve")
    assert done.status_code == 200 and "Device connected" in done.text
    thread.join(20)
    assert "error" not in out, out.get("error")
    tokens = out["result"]
    assert tokens.refresh_token and tokens.access_token and "offline_access" in tokens.scope
    assert sleeps[:3] == [1.0, 1.0, 6.0]  # slow_down: +5 s for this and every later poll
    assert all(s == 6.0 for s in sleeps[2:])


@pytest.mark.parametrize("outcome", ["denied", "expired"])
def test_device_login_denied_or_expired(server, outcome):
    issuer, factory = server
    said = Announcements()
    thread, out = run_in_thread(device_login, issuer, announce=said, sleep=lambda s: time.sleep(1.05))
    assert said.url.wait(10)
    if outcome == "denied":
        resp = browser_decides(said.complete, "deny")
        assert resp.status_code == 200 and "denied" in resp.text
    else:
        with session_scope(factory) as s:
            s.execute(update(DeviceAuthorization).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
                      .where(DeviceAuthorization.status == "pending"))
    thread.join(20)
    assert isinstance(out.get("error"), LoginError)
    assert ("denied" if outcome == "denied" else "expired") in str(out["error"])


def test_credentials_file_is_private(config_dir):
    store = FileStore()
    store.save(Credentials(issuer="http://x", access_token="a", expires_at=1.0, refresh_token="r"))
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(config_dir.stat().st_mode) == 0o700
    assert json.loads(store.path.read_text())["refresh_token"] == "r"
    store.save(Credentials(issuer="http://x", access_token="b", expires_at=2.0))  # replaced, still 0600
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert store.load().access_token == "b"  # type: ignore[union-attr]
    assert sorted(p.name for p in config_dir.iterdir()) == ["credentials.json"]


def test_login_command_stores_refreshes_and_logout_revokes(server, config_dir):
    issuer, _ = server
    runner = CliRunner()
    result = runner.invoke(cli_main.app, ["login", "--issuer", issuer, "--username", DEMO_USERNAME,
                                          "--password", DEMO_PASSWORD])
    assert result.exit_code == 0, result.output
    assert "with a refresh token" in result.output
    store = FileStore()
    first = store.load()
    assert first is not None and first.refresh_token and first.issuer == issuer
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600

    # valid for long enough: no refresh
    assert valid_access_token(store) == first.access_token
    # within 60 s of expiry: refreshed transparently, the rotated refresh token stored
    store.save(Credentials(**{**first.__dict__, "expires_at": time.time() + 30}))
    token = valid_access_token(store)
    second = store.load()
    assert second is not None
    assert token == second.access_token != first.access_token
    assert second.refresh_token and second.refresh_token != first.refresh_token
    assert second.expires_at > time.time() + 200

    # whoami uses the helper: a stand-in resource-api records the bearer it got
    seen: list[str] = []
    proofs: list[str] = []

    class Api(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("authorization", ""))
            proofs.append(self.headers.get("dpop", ""))
            body = json.dumps({"sub": "u1", "client_id": CLIENT_ID, "scopes": ["trades:read"]}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    api = HTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    try:
        store.save(Credentials(**{**second.__dict__, "expires_at": time.time() + 10}))
        result = runner.invoke(cli_main.app, ["whoami", "--api-url", f"http://127.0.0.1:{api.server_address[1]}"])
    finally:
        api.shutdown()
        api.server_close()
    assert result.exit_code == 0, result.output
    assert "subject: u1" in result.output
    third = store.load()
    assert third is not None and third.refresh_token != second.refresh_token  # refreshed first
    # RFC 9449: bsopt-cli's tokens are bound to the installation's key (0600 beside them)
    assert third.token_type == "DPoP"
    assert seen == [f"DPoP {third.access_token}"] and proofs[0].count(".") == 2
    key_file = store.directory / "dpop-key.json"
    assert key_file.exists() and oct(key_file.stat().st_mode & 0o777) == "0o600"

    # logout: revoked at the server (the refresh token no longer works), file deleted
    result = runner.invoke(cli_main.app, ["logout"])
    assert result.exit_code == 0, result.output
    assert "revoked" in result.output
    assert not store.path.exists()
    with httpx.Client() as http:  # even with the key's proof (bsopt-cli must send one)
        resp = token_post(http, f"{issuer}/oauth2/token", {"grant_type": "refresh_token", "client_id": CLIENT_ID,
                                                           "refresh_token": third.refresh_token},
                          load_or_create_key(store))
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_grant"
    with pytest.raises(NotLoggedInError):
        valid_access_token(store)
    assert logout(store).had_credentials is False


def test_login_without_a_browser_uses_the_device_flow(server, config_dir, monkeypatch):
    """No DISPLAY (an SSH session): `bsopt login` prints the URL and code at once and polls."""
    issuer, _ = server
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr("sys.platform", "linux")
    printed = Announcements()
    monkeypatch.setattr(cli_main, "_say", printed)
    thread, out = run_in_thread(CliRunner().invoke, cli_main.app, ["login", "--issuer", issuer])
    assert printed.url.wait(10), printed.lines
    assert "device flow" in printed.lines[0]
    assert browser_decides(printed.complete, "approve").status_code == 200
    thread.join(30)
    result = out["result"]
    assert result.exit_code == 0, result.output
    assert FileStore().load() is not None


def test_refresh_of_a_revoked_login_asks_to_log_in_again(server, config_dir):
    issuer, _ = server
    store = FileStore()
    tokens = pkce_login(issuer, username=DEMO_USERNAME, password=DEMO_PASSWORD)
    creds = Credentials.from_tokens(issuer, tokens)
    store.save(Credentials(**{**creds.__dict__, "expires_at": time.time()}))
    httpx.post(f"{issuer}/oauth2/revoke", data={"token": tokens.refresh_token, "client_id": CLIENT_ID})
    with pytest.raises(NotLoggedInError, match="bsopt login"):
        valid_access_token(store)
    assert store.load() is None
