"""Attack replays against a real backend of this API: broker-gateway served by its own
``serve()`` (real Postgres under its own role, the session's Kafka broker), called over
real gRPC as resource-api calls it, with a token acting for a user (RFC 8693).

- A NUL byte in a request string (``user_id`` then, an id now, or a nested field) reached
  Postgres and ended as INTERNAL; now INVALID_ARGUMENT naming the field (the shared serve
  helper's input guard).
- A bearer token whose JOSE header is a JSON array or string ended as UNKNOWN
  (``'list' object has no attribute 'get'``); now UNAUTHENTICATED.
"""

from __future__ import annotations

import base64
import json

import grpc
import pytest

from bsopt.broker_gateway.v1 import broker_gateway_pb2 as pb
from bsopt.broker_gateway.v1 import broker_gateway_pb2_grpc as pb_grpc
from bsopt.type.v1 import money_pb2
from bsopt_broker.bootstrap import serve
from bsopt_broker.config import BrokerSettings
from bsopt_common.grpc_server import MAX_STRING_LENGTH
from bsopt_common.settings import BROKER_GATEWAY_AUDIENCE
from bsopt_common.testing.delegation import delegated_token
from bsopt_common.testing.grpc_calls import grpc_calls
from bsopt_common.testing.identity import service_identity
from bsopt_common.testing.services import ServiceThread, free_port

SCOPES = "broker:accounts broker:orders broker:import"


@pytest.fixture(scope="module")
def gateway(service_database_urls, kafka_bootstrap, test_issuer):
    port = free_port()
    settings = BrokerSettings(
        database_url=service_database_urls["broker-gateway"], kafka_bootstrap_servers=kafka_bootstrap, port=port,
        **service_identity(test_issuer, "broker-gateway"),
    )
    with ServiceThread(lambda stop: serve(settings, stop), port=port):
        yield f"127.0.0.1:{port}"


call, _ = grpc_calls(pb_grpc.BrokerGatewayServiceStub)


def our_token(issuer) -> str:
    return delegated_token(issuer, user="u1", aud=BROKER_GATEWAY_AUDIENCE, scope=SCOPES)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.mark.parametrize("header", [["typ", "at+jwt"], "at+jwt"], ids=["array", "string"])
async def test_non_object_jose_header_is_unauthenticated(gateway, header):
    token = f"{_b64(json.dumps(header).encode())}.{_b64(b'{}')}.{_b64(b'sig')}"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(gateway, "GetAccount", pb.GetAccountRequest(account_id="a1"), token)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "attribute" not in (err.value.details() or "")


@pytest.mark.parametrize(("method", "request_", "field"), [
    ("GetAccount", pb.GetAccountRequest(account_id="a\x001"), "account_id"),
    ("CreateAccount", pb.CreateAccountRequest(broker="pa\x00per",
                                              initial_cash=money_pb2.Money(currency_code="USD", units=100)), "broker"),
    ("ImportTrades", pb.ImportTradesRequest(account_id="a\x001"), "account_id"),
    ("StartImport", pb.StartImportRequest(account_id="a\x001"), "account_id"),
    ("GetImport", pb.GetImportRequest(import_id="i\x001"), "import_id"),
], ids=["GetAccount", "CreateAccount", "ImportTrades", "StartImport", "GetImport"])
async def test_nul_in_a_string_field_is_invalid_argument(gateway, test_issuer, method, request_, field):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(gateway, method, request_, our_token(test_issuer))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == f"{field} must not contain NUL (0x00) characters"


async def test_nul_in_a_nested_field_and_over_long_strings_are_invalid_argument(gateway, test_issuer):
    token = our_token(test_issuer)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(gateway, "CreateAccount", pb.CreateAccountRequest(
            broker="paper", initial_cash=money_pb2.Money(currency_code="U\x00D", units=1)), token)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("initial_cash.currency_code ")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(gateway, "GetAccount",
                   pb.GetAccountRequest(account_id="a" * (MAX_STRING_LENGTH + 1)), token)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(err.value.details()) < 100  # the value is not echoed


async def test_a_clean_request_still_works(gateway, test_issuer):
    account = await call(gateway, "CreateAccount", pb.CreateAccountRequest(
        broker="paper", initial_cash=money_pb2.Money(currency_code="USD", units=100)),
        our_token(test_issuer))
    assert account.account_id
