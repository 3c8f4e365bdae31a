"""Backend failures reach the user as problem+json with the table's status: a backend
that is down (a closed loopback port) is 503 for every endpoint that calls one; a
backend that never answers is 503 after the deadline; our own credentials being
refused is 503; a body that does not match the schema is 422."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from bsopt_api.app import create_app
from bsopt_api.bootstrap import bootstrap
from bsopt_common.security.token_provider import ClientCredentialsTokenProvider

JOB = {
    "symbol": "GOOGL", "train_start": "2020-01-01", "train_end": "2021-12-31",
    "test_start": "2022-02-01", "test_end": "2022-12-31", "total_timesteps": 2048,
}
BACKEND_CALLS = [
    ("POST", "/v1/training-jobs", JOB),
    ("GET", "/v1/training-jobs/job-1", None),
    ("POST", "/v1/training-jobs/job-1/paper-trading", {"account_id": "acct-1"}),
    ("POST", "/v1/accounts", {"broker": "paper", "initial_cash": {"amount": "10000", "currency": "USD"}}),
    ("GET", "/v1/accounts/acct-1", None),
    ("POST", "/v1/accounts/acct-1/imports", {"start": "2024-01-01", "end": "2024-02-01T00:00:00Z"}),
    ("GET", "/v1/trades", None),
]


@pytest.mark.parametrize(("method", "path", "body"), BACKEND_CALLS,
                         ids=[f"{m} {p}" for m, p, _ in BACKEND_CALLS])
async def test_unreachable_backend_is_503_problem(client, tokens, method, path, body, running_api):
    resp = await client.request(method, path, json=body, headers=tokens.bearer(tokens.user()))
    assert resp.status_code == 503, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.headers["retry-after"]
    problem = resp.json()
    assert problem["status"] == 503
    assert problem["grpc_status"] == "UNAVAILABLE"
    assert problem["instance"] == path
    # the internal address of the backend is not disclosed
    for target in (running_api.settings.rl_trainer_target, running_api.settings.broker_gateway_target,
                   running_api.settings.ml_scorer_target):
        assert target.split(":")[1] not in resp.text


INVALID_BODIES = [
    ("POST", "/v1/training-jobs", {**JOB, "test_start": "2021-06-01"}, "test_start must be after train_end"),
    ("POST", "/v1/training-jobs", {**JOB, "train_start": "2020-13-01"}, None),
    ("POST", "/v1/training-jobs", {k: v for k, v in JOB.items() if k != "total_timesteps"}, None),
    ("POST", "/v1/training-jobs", {**JOB, "total_timesteps": 0}, None),
    ("POST", "/v1/training-jobs", {**JOB, "symbol": "GOOGL; DROP"}, None),
    ("POST", "/v1/training-jobs", {**JOB, "timesteps": 10}, None),
    ("POST", "/v1/training-jobs/job-1/paper-trading", {}, None),
    ("POST", "/v1/accounts", {"broker": "alpaca", "initial_cash": {"amount": "10", "currency": "USD"}}, None),
    ("POST", "/v1/accounts", {"broker": "paper", "initial_cash": {"amount": "0", "currency": "USD"}}, None),
    ("POST", "/v1/accounts/acct-1/imports", {"start": "2024-02-01", "end": "2024-01-01"},
     "start must be before end"),
    ("POST", "/v1/accounts/acct-1/imports", {"start": "last week", "end": "2024-01-01"}, None),
    ("GET", "/v1/trades?limit=0", None, None),
]


@pytest.mark.parametrize(("method", "path", "body", "message"), INVALID_BODIES)
async def test_invalid_request_is_422_problem_before_any_backend_call(
        client, tokens, method, path, body, message):
    resp = await client.request(method, path, json=body, headers=tokens.bearer(tokens.user()))
    assert resp.status_code == 422, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    problem = resp.json()
    assert problem["errors"]
    if message:
        assert any(message in e["msg"] for e in problem["errors"])


async def test_digest_not_found_is_404_problem(client, tokens):
    resp = await client.get("/v1/digests/latest", headers=tokens.bearer(tokens.user("trades:read")))
    assert resp.status_code == 404
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["title"] == "Not Found"


# --- the same app in this test's event loop (httpx.ASGITransport + lifespan) ------------


async def _request_in_loop(settings, token_provider, tokens, method, path, body):
    app = create_app(settings, runtime=bootstrap(settings, token_provider=token_provider))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c:
            return await c.request(method, path, json=body, headers=tokens.bearer(tokens.user()))


async def test_backend_that_never_answers_is_503_after_the_deadline(settings_for, token_provider, tokens):
    with socket.socket() as black_hole:  # accepts TCP, never speaks HTTP/2
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen(8)
        settings = settings_for(rl_trainer_target=f"127.0.0.1:{black_hole.getsockname()[1]}",
                                grpc_timeout_seconds=1.0)
        started = time.monotonic()
        resp = await _request_in_loop(settings, token_provider("resource-api"), tokens,
                                      "GET", "/v1/training-jobs/job-1", None)
    assert resp.status_code == 503, resp.text
    assert resp.json()["grpc_status"] == "DEADLINE_EXCEEDED"
    assert time.monotonic() - started < 15


async def test_refused_client_credentials_are_503_problem(settings_for, tokens):
    def token_endpoint(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": "invalid_client", "error_description": "bad secret"})

    refused = ClientCredentialsTokenProvider(
        "http://127.0.0.1:9/oauth2/token", "resource-api", "dev-wrong",
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(token_endpoint)),
    )
    resp = await _request_in_loop(settings_for(), refused, tokens, "GET", "/v1/trades", None)
    assert resp.status_code == 503, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert "credentials" in resp.json()["detail"]
    assert "dev-wrong" not in resp.text
