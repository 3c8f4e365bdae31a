"""The token endpoint as served (routes/token.py): a plain ASGI app ahead of FastAPI that
answers warm client-secret grants on the event loop without a database connection, and
falls back to its worker thread, from the start, whenever a cache is cold or a failure
must be recorded. Real Postgres, the real app, connections counted at the pool."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, event, select, text
from starlette.requests import Request

from bsopt_auth import audit
from bsopt_auth.app import create_app
from bsopt_auth.config import AuthSettings
from bsopt_auth.models import LoginThrottle
from bsopt_auth.rfc6749.client_auth import configure_client_cache
from bsopt_auth.rfc7517 import configure_active_key_cache
from bsopt_auth.routes import token as token_route
from bsopt_auth.routes.token import MAX_BODY_BYTES, MAX_FIELDS, parse_form
from bsopt_auth.throttle import Limiter, configure_check_cache

CLIENT, SECRET = "bsopt-admin", "dev-bsopt-admin-secret"
GRANT = {"grant_type": "client_credentials", "resource": "urn:bsopt:auth-server"}
FREE_FAILURES = 3


@pytest.fixture
def es_settings(settings: AuthSettings) -> AuthSettings:
    return settings.model_copy(update={"signing_alg": "ES256", "throttle_client_free_failures": FREE_FAILURES})


@pytest.fixture
def serving() -> Iterator[None]:
    """What ``serve`` turns on: batched audit facts (a long interval: nothing is written
    while the test looks) and the client, throttle and key caches."""
    audit.configure_batching(30)
    configure_client_cache(30)
    configure_check_cache(30)
    configure_active_key_cache(30)
    yield
    audit.configure_batching(0)
    configure_client_cache(0)
    configure_check_cache(0)
    configure_active_key_cache(1.0)


@pytest.fixture
def checkouts(engine: Engine) -> Iterator[list[int]]:
    """Connections the requests took from the engine's pool (one entry per checkout)."""
    taken: list[int] = []

    def on_checkout(*_: object) -> None:
        if threading.current_thread().name != "audit-writer":  # its batches are not requests
            taken.append(1)

    event.listen(engine, "checkout", on_checkout)
    yield taken
    event.remove(engine, "checkout", on_checkout)


@pytest.fixture
async def http(es_settings: AuthSettings, engine: Engine, serving: None) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(es_settings, engine)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=es_settings.issuer) as client:
        yield client


def _clear_throttle(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM auth.login_throttle"))


@pytest.fixture
def grant_threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The thread each grant ran on."""
    threads: list[str] = []
    real = token_route.handle_token_request

    def spy(*args: Any, **kwargs: Any) -> dict[str, Any]:
        threads.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(token_route, "handle_token_request", spy)
    return threads


async def test_warm_secret_grants_run_on_the_loop_without_a_database_connection(
        http, checkouts, engine, grant_threads) -> None:
    _clear_throttle(engine)
    first = await http.post("/oauth2/token", auth=(CLIENT, SECRET), data=GRANT)  # warms the caches
    assert first.status_code == 200, first.text
    checkouts.clear()
    grant_threads.clear()
    for _ in range(20):
        resp = await http.post("/oauth2/token", auth=(CLIENT, SECRET), data=GRANT)
        assert resp.status_code == 200, resp.text
        assert resp.json()["token_type"] == "Bearer"
    assert checkouts == []
    assert grant_threads == [threading.current_thread().name] * 20  # the event loop's thread


async def test_a_cold_cache_is_answered_from_the_worker_thread(http, checkouts, engine, grant_threads) -> None:
    _clear_throttle(engine)
    assert (await http.post("/oauth2/token", auth=(CLIENT, SECRET), data=GRANT)).status_code == 200
    checkouts.clear()
    grant_threads.clear()
    configure_client_cache(0)  # the next grant must read the client row
    resp = await http.post("/oauth2/token", auth=(CLIENT, SECRET), data=GRANT)
    assert resp.status_code == 200, resp.text
    assert checkouts, "the client row was read from the database"
    loop_thread = threading.current_thread().name
    assert grant_threads[0] == loop_thread and len(grant_threads) == 2  # tried inline, then again
    assert grant_threads[1] != loop_thread


async def test_failures_are_counted_once_and_throttle_the_right_secret_too(http, engine, es_settings,
                                                                          session_factory) -> None:
    _clear_throttle(engine)
    ok = await http.post("/oauth2/token", auth=(CLIENT, SECRET), data=GRANT)  # warm: inline from here
    assert ok.status_code == 200
    for _ in range(FREE_FAILURES + 1):
        bad = await http.post("/oauth2/token", auth=(CLIENT, "wrong-secret"), data=GRANT)
        assert bad.status_code == 401, bad.text
        assert bad.json()["error"] == "invalid_client"
    key = Limiter(es_settings, session_factory).client_key(CLIENT).key
    with session_factory() as s:
        failures = s.scalar(select(LoginThrottle.failures).where(LoginThrottle.key == key))
    assert failures == FREE_FAILURES + 1  # the inline attempt recorded nothing twice
    blocked = await http.post("/oauth2/token", auth=(CLIENT, SECRET), data=GRANT)
    assert blocked.status_code == 429, blocked.text
    assert int(blocked.headers["retry-after"]) >= 1
    _clear_throttle(engine)


async def test_malformed_requests_are_client_errors_with_the_usual_headers(http) -> None:
    huge = await http.post("/oauth2/token", auth=(CLIENT, SECRET),
                           content=b"grant_type=client_credentials&x=" + b"a" * MAX_BODY_BYTES,
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert huge.status_code == 413
    assert huge.json()["error"] == "invalid_request"
    many = await http.post("/oauth2/token", auth=(CLIENT, SECRET),
                           data={**GRANT, **{f"p{i}": "v" for i in range(MAX_FIELDS)}})
    assert many.status_code == 400
    assert many.json()["error"] == "invalid_request"
    as_json = await http.post("/oauth2/token", auth=(CLIENT, SECRET), json=GRANT)
    assert as_json.status_code == 400
    assert as_json.json()["error"] == "invalid_request"
    repeated = await http.post("/oauth2/token", auth=(CLIENT, SECRET),
                               content="grant_type=client_credentials&grant_type=client_credentials",
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert repeated.status_code == 400
    ok = await http.post("/oauth2/token", auth=(CLIENT, SECRET), data=GRANT)
    for resp in (huge, many, as_json, repeated, ok):
        assert resp.headers["content-type"] == "application/json"
        assert resp.headers["cache-control"] == "no-store"
        assert resp.headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in resp.headers["content-security-policy"]


async def test_a_get_is_not_the_token_endpoint(http) -> None:
    resp = await http.get("/oauth2/token")
    assert resp.status_code == 405


@pytest.mark.parametrize("body", [
    b"grant_type=client_credentials&scope=a+b%20c",
    b"a=&b=1&c",
    b"code=%E2%9C%93&state=x%2By",
    b"name=caf\xe9&x=%ff",
    b"",
    b"&&a=1&&",
])
async def test_the_form_reads_like_starlettes_parser(body: bytes) -> None:
    sent = False

    async def receive() -> dict[str, object]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    request = Request({"type": "http", "method": "POST", "path": "/", "headers": [
        (b"content-type", b"application/x-www-form-urlencoded")]}, receive)
    form = await request.form()
    assert parse_form(body) == [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
