"""Fixtures for the auth-server tests: the real app over a real Postgres (``postgres_url``
from the bsopt pytest plugin: a fresh database per test module), migrated and seeded,
driven through httpx. ``oauth`` bundles the protocol steps the tests share."""

from __future__ import annotations

import base64
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from bsopt_auth.app import create_app
from bsopt_auth.config import AuthSettings
from bsopt_auth.db import migrate
from bsopt_auth.rfc7517 import configure_key_encryption
from bsopt_auth.rfc7636 import create_s256_code_challenge
from bsopt_auth.seed import CLI_CLIENT_ID, DEMO_PASSWORD, DEMO_USERNAME, seed_dev
from bsopt_common.db import create_db_engine, make_session_factory

ISSUER = "http://127.0.0.1:9000"
TOKEN_PATH = "/oauth2/token"


@pytest.fixture(scope="module")
def settings() -> AuthSettings:
    settings = AuthSettings(_env_file=None, issuer=ISSUER, environment="test", signing_alg="RS256",
                            # many deliberate invalid_client answers per module, all from one
                            # address (test_login_throttling sets its own limits)
                            throttle_client_free_failures=1000, throttle_client_ip_free_failures=1000)
    configure_key_encryption(settings.key_encryption_key_provider())  # the dev-only KEK
    return settings


@pytest.fixture(scope="module")
def engine(postgres_url: str) -> Iterator[Engine]:
    eng = create_db_engine(postgres_url, application_name="bsopt-auth-tests")
    migrate(eng)
    seed_dev(make_session_factory(eng))
    # The helpers below exchange codes as bsopt-cli without DPoP proofs; the seed registers
    # it with dpop_bound_access_tokens (RFC 9449 §5.2), which test_rfc9449_dpop turns on.
    with eng.begin() as conn:
        conn.execute(text("UPDATE auth.clients SET dpop_bound_access_tokens = false WHERE client_id = 'bsopt-cli'"))
    yield eng
    eng.dispose()


@pytest.fixture(scope="module")
def session_factory(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture
def app(settings: AuthSettings, engine: Engine):
    return create_app(settings, engine)


@pytest.fixture
async def client(app, settings: AuthSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=settings.issuer, follow_redirects=False
    ) as c:
        yield c


# --------------------------------------------------------------------------- helpers


class FormParser(HTMLParser):
    """The first <form>: its action, method and inputs (name, value, type)."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.method: str | None = None
        self.inputs: list[dict[str, str]] = []
        self._in_form = False
        self._done = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and not self._done:
            self._in_form = True
            self.action, self.method = a.get("action"), a.get("method", "get").lower()
        elif tag == "input" and self._in_form:
            self.inputs.append(a)

    def handle_endtag(self, tag: str) -> None:
        if tag == "form" and self._in_form:
            self._in_form, self._done = False, True

    def fields(self) -> list[tuple[str, str]]:
        return [(i["name"], i.get("value", "")) for i in self.inputs if i.get("name")]


def parse_form(html: str) -> FormParser:
    parser = FormParser()
    parser.feed(html)
    assert parser.action, "no <form> on the page"
    return parser


def new_verifier() -> str:
    return secrets.token_urlsafe(48)  # 64 chars of [A-Za-z0-9_-]


@dataclass
class AuthResult:
    """Outcome of the authorization step."""

    response: httpx.Response
    redirect_uri: str
    verifier: str
    query: dict[str, str] = field(default_factory=dict)

    @property
    def code(self) -> str:
        return self.query["code"]


@dataclass
class OAuth:
    client: httpx.AsyncClient
    settings: AuthSettings
    #: False: every authorization request starts like a fresh browser (the auth-server's
    #: session cookie is dropped first), so each ``login`` shows the password form; the
    #: session tests (test_sessions_logout_consent) keep it.
    keep_session: bool = False

    parse_form = staticmethod(parse_form)
    new_verifier = staticmethod(new_verifier)

    def loopback(self, port: int = 53123, host: str = "127.0.0.1", path: str = "/callback") -> str:
        return f"http://{host}:{port}{path}"

    def authorize_params(
        self, *, redirect_uri: str | None = None, verifier: str | None = None, **overrides: Any
    ) -> dict[str, Any]:
        params: dict[str, Any] = {
            "response_type": "code",
            "client_id": CLI_CLIENT_ID,
            "redirect_uri": self.loopback() if redirect_uri is None else redirect_uri,
            "scope": "openid profile trades:read",
            "state": "st-" + secrets.token_hex(4),
            "code_challenge": create_s256_code_challenge(verifier or new_verifier()),
            "code_challenge_method": "S256",
        }
        params.update(overrides)
        return {k: v for k, v in params.items() if v is not None}

    async def authorize_page(self, **kwargs: Any) -> httpx.Response:
        if not self.keep_session:
            for name in ("bsopt_session", "__Host-bsopt_session"):
                self.client.cookies.delete(name)
        return await self.client.get("/authorize", params=self.authorize_params(**kwargs))

    async def submit_login(
        self, page: httpx.Response, username: str = DEMO_USERNAME, password: str = DEMO_PASSWORD
    ) -> httpx.Response:
        form = parse_form(page.text)
        assert form.method == "post"
        fields = [(k, v) for k, v in form.fields() if k not in ("username", "password")]
        fields += [("username", username), ("password", password)]
        return await self.client.post(
            urlsplit(form.action).path,
            content=urlencode(fields),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )

    async def login(
        self, *, username: str = DEMO_USERNAME, password: str = DEMO_PASSWORD, **kwargs: Any
    ) -> AuthResult:
        verifier = kwargs.pop("verifier", None) or new_verifier()
        redirect_uri = kwargs.pop("redirect_uri", None) or self.loopback()
        page = await self.authorize_page(verifier=verifier, redirect_uri=redirect_uri, **kwargs)
        assert page.status_code == 200, page.text
        resp = await self.submit_login(page, username, password)
        query: dict[str, str] = {}
        if resp.status_code == 303:
            loc = urlsplit(resp.headers["location"])
            query = {k: v[0] for k, v in parse_qs(loc.query).items()}
        return AuthResult(resp, redirect_uri, verifier, query)

    async def exchange(
        self, code: str, verifier: str | None, redirect_uri: str, client_id: str = CLI_CLIENT_ID,
        **extra: str,
    ) -> httpx.Response:
        data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                "client_id": client_id, "code_verifier": verifier, **extra}
        return await self.client.post(TOKEN_PATH, data={k: v for k, v in data.items() if v is not None})

    async def user_tokens(self, **kwargs: Any) -> dict[str, Any]:
        result = await self.login(**kwargs)
        assert result.response.status_code == 303, result.response.text
        resp = await self.exchange(result.code, result.verifier, result.redirect_uri)
        assert resp.status_code == 200, resp.text
        return resp.json()

    async def client_credentials(
        self, client_id: str, secret: str | None = None, *, method: str = "basic", **data: Any
    ) -> httpx.Response:
        secret = secret if secret is not None else f"dev-{client_id}-secret"
        body: dict[str, Any] = {"grant_type": "client_credentials", **data}
        headers: dict[str, str] = {}
        if method == "basic":
            raw = f"{client_id}:{secret}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
        else:
            body.update(client_id=client_id, client_secret=secret)
        return await self.client.post(TOKEN_PATH, data=body, headers=headers)

    async def jwks(self) -> KeySet:
        resp = await self.client.get("/.well-known/jwks.json")
        assert resp.status_code == 200
        return KeySet.import_key_set(resp.json())

    async def decode(self, token: str) -> jwt.Token:
        """Verify ``token`` against the published JWKS (as any resource server would)."""
        return jwt.decode(token, await self.jwks(), algorithms=["RS256", "ES256"])


@pytest.fixture
def oauth(client: httpx.AsyncClient, settings: AuthSettings) -> OAuth:
    return OAuth(client, settings)
