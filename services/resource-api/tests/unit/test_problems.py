"""The one gRPC -> HTTP table and the problem+json bodies (RFC 9457) built from it."""

from __future__ import annotations

import grpc
import httpx
import pytest
from fastapi import FastAPI
from grpc import aio

from bsopt_api.problems import GRPC_TO_HTTP, PROBLEM_JSON, http_status_for, install_problem_handlers

EXPECTED = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 503,
}


def test_table_is_exactly_the_documented_mapping():
    assert dict(GRPC_TO_HTTP) == EXPECTED


@pytest.mark.parametrize("code", [c for c in grpc.StatusCode
                                  if c not in EXPECTED and c != grpc.StatusCode.OK])
def test_every_other_status_is_bad_gateway(code):
    assert http_status_for(code) == 502


def _app_raising(code: grpc.StatusCode, details: str) -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise aio.AioRpcError(code, aio.Metadata(), aio.Metadata(), details=details)

    return app


async def _get(app: FastAPI) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c:
        return await c.get("/boom")


@pytest.mark.parametrize("code", [c for c, s in EXPECTED.items() if s < 500])
async def test_client_errors_carry_the_backends_message(code):
    resp = await _get(_app_raising(code, "account acct-9 not found"))
    assert resp.status_code == EXPECTED[code]
    assert resp.headers["content-type"] == PROBLEM_JSON
    body = resp.json()
    assert body == {
        "type": "about:blank", "title": body["title"], "status": EXPECTED[code],
        "detail": "account acct-9 not found", "instance": "/boom", "grpc_status": code.name,
    }


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL,
                                  grpc.StatusCode.UNKNOWN])
async def test_server_errors_hide_transport_details(code):
    details = "failed to connect to all addresses; last error: ipv4:10.0.0.7:50051"
    resp = await _get(_app_raising(code, details))
    assert resp.status_code == http_status_for(code)
    assert "10.0.0.7" not in resp.text
    assert resp.json()["grpc_status"] == code.name


async def test_unavailable_says_when_to_retry():
    resp = await _get(_app_raising(grpc.StatusCode.UNAVAILABLE, "down"))
    assert resp.status_code == 503
    assert int(resp.headers["retry-after"]) > 0
    assert resp.json()["title"] == "Service Unavailable"


async def test_over_quota_is_429_with_the_backends_message_and_when_to_retry():
    resp = await _get(_app_raising(grpc.StatusCode.RESOURCE_EXHAUSTED, "you have 3 queued training jobs"))
    assert resp.status_code == 429
    assert int(resp.headers["retry-after"]) > 0
    assert resp.json()["detail"] == "you have 3 queued training jobs"


async def test_unexpected_errors_are_500_problem_without_internals():
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/bug")
    async def bug() -> None:
        raise KeyError("secret internal state")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
        resp = await c.get("/bug")
    assert resp.status_code == 500
    assert resp.headers["content-type"] == PROBLEM_JSON
    assert "secret" not in resp.text
