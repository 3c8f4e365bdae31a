"""Attack replays against a real gRPC server built by the shared serve helper
(``GrpcServer``: token interceptor + error interceptor), serving the broker-gateway
contract with a servicer that, like the real stores, passes request strings to Postgres.

- a bearer token whose JOSE header is a JSON array or string used to end as UNKNOWN
  (``'list' object has no attribute 'get'``): now UNAUTHENTICATED;
- a NUL byte in a request string (``user_id`` then, ``account_id`` now) used to reach Postgres and end as INTERNAL: now
  INVALID_ARGUMENT naming the field, before the servicer runs; so is an over-long
  string, and the reply never echoes it.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from sqlalchemy import Engine, text

from bsopt.broker_gateway.v1 import broker_gateway_pb2 as pb
from bsopt.broker_gateway.v1 import broker_gateway_pb2_grpc as pb_grpc
from bsopt.type.v1 import money_pb2
from bsopt_common.db import create_db_engine
from bsopt_common.errors import InvalidArgument
from bsopt_common.grpc_server import (
    MAX_ERROR_MESSAGE_LENGTH,
    MAX_STRING_LENGTH,
    GrpcServer,
    GrpcService,
    check_request_strings,
    status_for,
)
from bsopt_common.security.jwt import AccessTokenVerifier, JWKSCache
from bsopt_common.settings import BROKER_GATEWAY_AUDIENCE
from bsopt_common.testing.services import free_port
from bsopt_common.testing.tokens import TestIssuer

SERVICE = pb.DESCRIPTOR.services_by_name["BrokerGatewayService"]
SCOPE = "broker:accounts"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token_with_header(header: object) -> str:
    """A compact JWS whose header segment is ``header`` as JSON (not a JOSE object)."""
    return f"{_b64(json.dumps(header).encode())}.{_b64(b'{}')}.{_b64(b'sig')}"


MALFORMED_HEADERS = [["typ", "at+jwt"], "at+jwt", 42, None]


class _UserStore(pb_grpc.BrokerGatewayServiceServicer):
    """Looks the user up in Postgres, as the real account store does."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.calls = 0

    async def GetAccount(self, request: pb.GetAccountRequest, context: object) -> pb.Account:
        self.calls += 1

        def lookup() -> str:
            with self.engine.connect() as conn:
                return str(conn.execute(text("SELECT CAST(:u AS text)"), {"u": request.account_id}).scalar_one())

        account_id = await asyncio.to_thread(lookup)
        return pb.Account(account_id=account_id, broker="paper")

    async def CreateAccount(self, request: pb.CreateAccountRequest, context: object) -> pb.Account:
        self.calls += 1
        return pb.Account(account_id="a1", broker=request.broker)


@pytest.fixture(scope="module")
def engine(postgres_url: str) -> Iterator[Engine]:
    eng = create_db_engine(postgres_url, application_name="bsopt-grpc-guard-tests")
    yield eng
    eng.dispose()


@pytest.fixture
async def backend(test_issuer: TestIssuer, engine: Engine) -> AsyncIterator[tuple[pb_grpc.BrokerGatewayServiceStub,
                                                                                  _UserStore]]:
    servicer = _UserStore(engine)
    service = GrpcService(SERVICE, pb_grpc.add_BrokerGatewayServiceServicer_to_server, servicer,
                          {m.name: (SCOPE,) for m in SERVICE.methods})
    verifier = AccessTokenVerifier(test_issuer.issuer, BROKER_GATEWAY_AUDIENCE, JWKSCache(test_issuer.jwks_url))
    server = GrpcServer(host="127.0.0.1", port=free_port(), services=[service], verifier=verifier)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield pb_grpc.BrokerGatewayServiceStub(channel), servicer
    finally:
        await server.stop(0)
        await verifier.jwks.aclose()


def _md(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@pytest.mark.parametrize("header", MALFORMED_HEADERS, ids=["array", "string", "number", "null"])
async def test_non_object_jose_header_is_unauthenticated(backend, header) -> None:
    stub, servicer = backend
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetAccount(pb.GetAccountRequest(account_id="a1"),
                              metadata=_md(token_with_header(header)), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, err.value.details()
    assert "attribute" not in (err.value.details() or "")
    assert servicer.calls == 0


async def test_nul_in_a_string_field_is_invalid_argument_naming_the_field(backend, test_issuer) -> None:
    stub, servicer = backend
    token = test_issuer.token(aud=BROKER_GATEWAY_AUDIENCE, scope=SCOPE)
    # the same call without the NUL reaches Postgres and succeeds
    ok = await stub.GetAccount(pb.GetAccountRequest(account_id="ab"), metadata=_md(token), timeout=10)
    assert ok.account_id == "ab"
    calls = servicer.calls
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetAccount(pb.GetAccountRequest(account_id="a\x00b"), metadata=_md(token), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "account_id must not contain NUL (0x00) characters"
    assert servicer.calls == calls  # refused before the servicer ran


async def test_nul_in_a_nested_field_is_named_with_its_path(backend, test_issuer) -> None:
    stub, _ = backend
    token = test_issuer.token(aud=BROKER_GATEWAY_AUDIENCE, scope=SCOPE)
    request = pb.CreateAccountRequest(broker="paper",
                                      initial_cash=money_pb2.Money(currency_code="US\x00", units=10))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateAccount(request, metadata=_md(token), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("initial_cash.currency_code ")


async def test_over_long_string_is_invalid_argument_and_not_echoed(backend, test_issuer) -> None:
    stub, servicer = backend
    token = test_issuer.token(aud=BROKER_GATEWAY_AUDIENCE, scope=SCOPE)
    huge = "x" * (MAX_STRING_LENGTH + 1)
    calls = servicer.calls
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetAccount(pb.GetAccountRequest(account_id=huge), metadata=_md(token), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == f"account_id is longer than {MAX_STRING_LENGTH} characters"
    assert servicer.calls == calls
    # exactly the maximum is accepted
    await stub.GetAccount(pb.GetAccountRequest(account_id="x" * MAX_STRING_LENGTH),
                          metadata=_md(token), timeout=10)


def test_repeated_fields_are_walked() -> None:
    response = pb.Account(positions=[pb.Position(symbol="OK"), pb.Position(symbol="B\x00D")])
    with pytest.raises(InvalidArgument, match=r"^positions\[1\]\.symbol must not contain NUL"):
        check_request_strings(response)


def test_error_messages_are_truncated() -> None:
    code, message = status_for(InvalidArgument("bad value " + "y" * 10_000))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert len(message) == MAX_ERROR_MESSAGE_LENGTH and message.endswith("\u2026")
