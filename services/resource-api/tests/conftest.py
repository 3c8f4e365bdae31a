"""Fixtures for the resource-api tests: the real app on a real uvicorn (127.0.0.1, free
port) over a real Postgres (``postgres_url``: a fresh database per test module), tokens
from the bsopt plugin's ``test_issuer``, and backend targets pointing at closed loopback
ports (no stand-ins of our own backends: full flows are the end-to-end test's job).

A module changes what it runs against by overriding ``api_settings`` (e.g. consumers
on, with ``kafka_bootstrap``).

Our tokens towards the backends (RFC 8693 exchanges of the user's token) come from the
real :class:`ClientCredentialsTokenProvider` asking ``test_issuer``'s token endpoint over
HTTP (``token_provider_for``); producers' events are signed with their keys registered at
``test_issuer`` (``TestIssuer.service_key``).
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from bsopt_api.bootstrap import ApiRuntime, bootstrap, serve
from bsopt_api.config import ApiSettings
from bsopt_common.db import create_db_engine, make_session_factory
from bsopt_common.security.token_provider import ClientCredentialsTokenProvider
from bsopt_common.settings import RESOURCE_API_AUDIENCE
from bsopt_common.testing.services import ServiceThread, free_port
from bsopt_common.testing.tokens import TestIssuer

ALL_SCOPES = "training:read training:write trades:read trades:write"


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def token_provider_for(issuer: TestIssuer, client_id: str) -> ClientCredentialsTokenProvider:
    """A real client-credentials provider for ``client_id`` talking over HTTP to the test
    issuer's token endpoint (any resource and scope asked are granted)."""
    return ClientCredentialsTokenProvider(issuer.token_url, client_id, "dev-test-secret")


@dataclass
class Tokens:
    """User access tokens for this API, good and bad (tests can't import conftest, so
    helpers come as fixtures)."""

    issuer: TestIssuer

    @staticmethod
    def new_user() -> str:
        return f"user-{uuid.uuid4().hex[:10]}"

    def user(self, scope: str = ALL_SCOPES, *, sub: str | None = None, **kw: object) -> str:
        return self.issuer.token(aud=RESOURCE_API_AUDIENCE, scope=scope, sub=sub or self.new_user(),
                                 client_id="bsopt-cli", **kw)

    def wrong_audience(self, scope: str = ALL_SCOPES) -> str:
        return self.issuer.token(aud="urn:bsopt:rl-trainer", scope=scope, client_id="bsopt-cli")

    def expired(self, scope: str = ALL_SCOPES) -> str:
        return self.issuer.expired_token(aud=RESOURCE_API_AUDIENCE, scope=scope, client_id="bsopt-cli")

    def unknown_key(self, scope: str = ALL_SCOPES) -> str:
        return self.issuer.token(aud=RESOURCE_API_AUDIENCE, scope=scope, client_id="bsopt-cli", rogue=True)

    @staticmethod
    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="session")
def tokens(test_issuer: TestIssuer) -> Tokens:
    return Tokens(test_issuer)


def make_settings(postgres_url: str, issuer: TestIssuer, **overrides: object) -> ApiSettings:
    values: dict[str, object] = {
        "environment": "test",
        "host": "127.0.0.1",
        "port": free_port(),
        "database_url": postgres_url,
        "issuer": issuer.issuer,
        "jwks_url": issuer.jwks_url,
        "client_jwks_url": issuer.client_jwks_url_template,
        "client_secret": "dev-test-secret",
        "consume_events": False,
        "broker_gateway_target": f"127.0.0.1:{closed_port()}",
        "ml_scorer_target": f"127.0.0.1:{closed_port()}",
        "rl_trainer_target": f"127.0.0.1:{closed_port()}",
        "grpc_timeout_seconds": 5.0,
        "shutdown_grace_seconds": 2.0,
    }
    values.update(overrides)
    return ApiSettings(_env_file=None, **values)


@pytest.fixture(scope="module")
def settings_for(service_database_urls: dict[str, str], test_issuer: TestIssuer) -> Callable[..., ApiSettings]:
    """``settings_for(**overrides)``: settings for this module's database (as resource-api's
    own role) and issuer."""
    return lambda **overrides: make_settings(service_database_urls["resource-api"], test_issuer, **overrides)


@pytest.fixture(scope="module")
def api_settings(settings_for: Callable[..., ApiSettings]) -> ApiSettings:
    return settings_for()


@pytest.fixture(scope="session")
def token_provider(test_issuer: TestIssuer) -> Callable[[str], ClientCredentialsTokenProvider]:
    """``token_provider(client_id)``: see :func:`token_provider_for`."""
    return lambda client_id: token_provider_for(test_issuer, client_id)


@dataclass
class RunningApi:
    settings: ApiSettings
    runtime: ApiRuntime

    @property
    def base_url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.settings.host}:{self.settings.port}/v1/ws/coach"


@pytest.fixture(scope="module")
def running_api(api_settings: ApiSettings, test_issuer: TestIssuer) -> Iterator[RunningApi]:
    """The app served by uvicorn in a background thread (its own event loop) for the
    module; drained on exit like a SIGTERM."""
    runtime = bootstrap(api_settings, token_provider=token_provider_for(test_issuer, "resource-api"))
    with ServiceThread(lambda stop: serve(api_settings, stop, runtime=runtime), port=api_settings.port):
        yield RunningApi(api_settings, runtime)


@pytest.fixture
async def client(running_api: RunningApi) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=running_api.base_url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def db(running_api: RunningApi, postgres_url: str) -> Iterator[sessionmaker[Session]]:
    """Session factory on the module's database, migrated by the running app."""
    engine = create_db_engine(postgres_url, application_name="bsopt-api-tests")
    yield make_session_factory(engine)
    engine.dispose()
