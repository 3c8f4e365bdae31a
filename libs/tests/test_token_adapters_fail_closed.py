"""The three token adapters fail closed when the verifier itself breaks on some input (the
original audit finding: ``'list' object has no attribute 'get'`` escaped as HTTP 500 and
gRPC UNKNOWN). A verifier raising an unexpected AttributeError stands in for any such
bug: HTTP answers 401 invalid_token, the WebSocket handshake closes with 1008 before
accept, gRPC answers UNAUTHENTICATED; each with a fixed message that quotes nothing, and
the stack is logged."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import grpc
import httpx
import pytest
from fastapi import Depends, FastAPI, WebSocket

from bsopt.broker_gateway.v1 import broker_gateway_pb2 as pb
from bsopt.broker_gateway.v1 import broker_gateway_pb2_grpc as pb_grpc
from bsopt_common.grpc_server import GrpcServer, GrpcService
from bsopt_common.http_server import serve_asgi
from bsopt_common.security.fastapi import UNVERIFIABLE, WS_POLICY_VIOLATION, authenticate_websocket, require_scopes
from bsopt_common.security.jwt import AccessTokenClaims, AccessTokenVerifier, JWKSCache
from bsopt_common.testing.services import ServiceThread, free_port

LEAK = "'list' object has no attribute 'get'"


class BrokenVerifier(AccessTokenVerifier):
    def __init__(self) -> None:
        super().__init__("http://issuer.invalid", "urn:test", JWKSCache("http://127.0.0.1:9/jwks.json"))

    async def verify(self, token, required_scopes=(), *, now=None) -> AccessTokenClaims:
        raise AttributeError(LEAK)


def make_app() -> FastAPI:
    app = FastAPI()
    app.state.token_verifier = BrokenVerifier()

    @app.get("/me")
    async def me(claims: AccessTokenClaims = Depends(require_scopes("a:read"))) -> dict[str, str]:  # noqa: B008
        return {"sub": claims.subject}

    @app.websocket("/ws")
    async def ws(socket: WebSocket) -> None:
        if await authenticate_websocket(socket, "a:read") is not None:
            await socket.close()

    return app


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    port = free_port()
    app = make_app()
    with ServiceThread(lambda stop: serve_asgi(app, stop, host="127.0.0.1", port=port, grace_seconds=1), port=port):
        yield f"http://127.0.0.1:{port}"


def test_http_answers_401_with_a_fixed_message(http_url, caplog) -> None:
    with caplog.at_level(logging.ERROR):
        resp = httpx.get(http_url + "/me", headers={"Authorization": "Bearer a.b.c"})
    assert resp.status_code == 401
    assert resp.json() == {"detail": UNVERIFIABLE}
    assert 'error="invalid_token"' in resp.headers["www-authenticate"]
    assert "attribute" not in resp.text + resp.headers["www-authenticate"]


async def test_websocket_handshake_closes_1008_before_accept(caplog) -> None:
    app = make_app()
    sent: list[dict] = []
    incoming = [{"type": "websocket.connect"}]

    async def receive() -> dict:
        return incoming.pop(0) if incoming else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "websocket", "asgi": {"version": "3.0"}, "scheme": "ws", "path": "/ws", "raw_path": b"/ws",
        "query_string": b"", "headers": [(b"authorization", b"Bearer a.b.c")], "subprotocols": [],
        "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000), "app": app,
    }
    with caplog.at_level(logging.ERROR):
        await app(scope, receive, send)
    assert [m["type"] for m in sent] == ["websocket.close"]
    assert sent[0]["code"] == WS_POLICY_VIOLATION
    assert sent[0]["reason"] == UNVERIFIABLE
    assert any("unexpectedly" in r.getMessage() for r in caplog.records)


async def test_grpc_answers_unauthenticated_with_a_fixed_message(caplog) -> None:
    descriptor = pb.DESCRIPTOR.services_by_name["BrokerGatewayService"]
    service = GrpcService(descriptor, pb_grpc.add_BrokerGatewayServiceServicer_to_server,
                          pb_grpc.BrokerGatewayServiceServicer(), {m.name: ("a:read",) for m in descriptor.methods})
    server = GrpcServer(host="127.0.0.1", port=free_port(), services=[service], verifier=BrokenVerifier())
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await pb_grpc.BrokerGatewayServiceStub(channel).GetAccount(
                    pb.GetAccountRequest(account_id="a1"),
                    metadata=(("authorization", "Bearer a.b.c"),), timeout=10)
    finally:
        await server.stop(0)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert err.value.details() == UNVERIFIABLE
