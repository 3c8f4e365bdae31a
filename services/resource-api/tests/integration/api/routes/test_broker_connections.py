"""Connecting a user's own Alpaca account through the REST API (issue 8 §1), end to end
over real components: this API on uvicorn, broker-gateway over real gRPC (real Postgres,
the session's Kafka broker), the local Alpaca stand-in over real HTTP (Trading API and
OAuth endpoints), the user's browser played by ``requests`` following Alpaca's redirect
to the callback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import grpc
import httpx
import pytest
import requests

from bsopt.broker_gateway.v1 import broker_gateway_pb2 as pb
from bsopt.broker_gateway.v1 import broker_gateway_pb2_grpc as pb_grpc
from bsopt_api.config import ApiSettings
from bsopt_broker.bootstrap import BrokerGateway
from bsopt_broker.config import BrokerSettings
from bsopt_common.settings import BROKER_GATEWAY_AUDIENCE
from bsopt_common.testing.delegation import delegated_token
from bsopt_common.testing.identity import service_identity
from bsopt_common.testing.services import ServiceThread, free_port
from bsopt_common.testing.standins import alpaca_standin_module

CLIENT_ID, CLIENT_SECRET = "bsopt-oauth-app", "standin-oauth-secret"
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def api_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def callback_url(api_port: int) -> str:
    return f"http://127.0.0.1:{api_port}/v1/brokers/alpaca/callback"


@pytest.fixture(scope="module")
def standin(callback_url: str) -> Iterator[Any]:
    s = alpaca_standin_module().AlpacaStandin()
    s.add_account("PKRESTA", "rest-secret-a", cash=40_000)
    s.add_account("PKRESTB", "rest-secret-b", cash=20_000)
    s.oauth.add_client(CLIENT_ID, CLIENT_SECRET, callback_url)
    with s.serving():
        yield s


@pytest.fixture(scope="module")
def gateway(service_database_urls, kafka_bootstrap, test_issuer, standin, callback_url) -> Iterator[str]:
    port = free_port()
    settings = BrokerSettings(
        database_url=service_database_urls["broker-gateway"], kafka_bootstrap_servers=kafka_bootstrap, port=port,
        alpaca_oauth_client_id=CLIENT_ID, alpaca_oauth_client_secret=CLIENT_SECRET,
        alpaca_oauth_authorize_url=f"{standin.base_url}/oauth/authorize",
        alpaca_oauth_token_url=f"{standin.base_url}/oauth/token", alpaca_oauth_redirect_uri=callback_url,
        alpaca_trading_base_url=standin.base_url, **service_identity(test_issuer, "broker-gateway"))
    with ServiceThread(BrokerGateway(settings).run, port=port):
        yield f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def api_settings(settings_for: Callable[..., ApiSettings], gateway: str, api_port: int) -> ApiSettings:
    return settings_for(port=api_port, broker_gateway_target=gateway)


def bearer(tokens: Any, user: str, scope: str = "trades:read trades:write") -> dict[str, str]:
    return tokens.bearer(tokens.user(scope, sub=user))


def browser_approves(authorize_url: str, key_id: str) -> requests.Response:
    """The user's browser: approve at Alpaca (the stand-in), follow its redirect to our callback."""
    return requests.get(authorize_url, params={"approve_as": key_id}, timeout=30)


async def place_order(gateway: str, issuer: Any, user: str, account_id: str, cid: str) -> Any:
    token = delegated_token(issuer, user=user, aud=BROKER_GATEWAY_AUDIENCE, scope="broker:orders")
    async with grpc.aio.insecure_channel(gateway) as channel:
        return await pb_grpc.BrokerGatewayServiceStub(channel).PlaceOrder(
            pb.PlaceOrderRequest(account_id=account_id, client_order_id=cid, symbol="AAPL", side=pb.SIDE_BUY,
                                 quantity=2), metadata=(("authorization", f"Bearer {token}"),), timeout=30)


async def test_oauth_connect_through_the_api(client: httpx.AsyncClient, tokens, standin, gateway, test_issuer,
                                             callback_url):
    user = tokens.new_user()
    started = await client.post("/v1/brokers/alpaca/connect", headers=bearer(tokens, user))
    assert started.status_code == 200, started.text
    assert started.headers["cache-control"] == "no-store"
    body = started.json()
    q = parse_qs(urlsplit(body["authorize_url"]).query)
    assert q["redirect_uri"] == [callback_url] and q["state"] == [body["state"]] and body["expires_at"]

    landed = browser_approves(body["authorize_url"], "PKRESTA")
    assert landed.status_code == 200, landed.text
    assert landed.url.startswith(callback_url + "?")
    conn = landed.json()
    assert conn["status"] == "active" and conn["method"] == "oauth" and conn["account_kind"] == "paper"
    assert conn["account_id"] == conn["connection_id"]

    listed = await client.get("/v1/broker-connections", headers=bearer(tokens, user, "trades:read"))
    assert [c["connection_id"] for c in listed.json()["connections"]] == [conn["connection_id"]]
    account = await client.get(f"/v1/accounts/{conn['account_id']}", headers=bearer(tokens, user))
    assert account.status_code == 200, account.text
    assert account.json()["broker"] == "alpaca" and account.json()["cash"] == {"amount": "40000",
                                                                               "currency": "USD"}
    placed = await place_order(gateway, test_issuer, user, conn["account_id"], "rest-oauth-1")
    assert placed.order.status == pb.ORDER_STATUS_FILLED

    # the same redirect again (a replayed state) is refused, and names neither state nor code
    replay = requests.get(landed.url, timeout=30)
    assert replay.status_code == 400 and replay.headers["content-type"].startswith(PROBLEM)
    assert "used already" in replay.json()["detail"] and body["state"] not in replay.text


async def test_callback_refuses_unknown_states_and_alpaca_errors(client: httpx.AsyncClient):
    unknown = await client.get("/v1/brokers/alpaca/callback", params={"state": "f" * 48, "code": "abc"})
    assert unknown.status_code == 400 and "unknown state" in unknown.json()["detail"]
    denied = await client.get("/v1/brokers/alpaca/callback", params={"state": "f" * 48, "error": "access_denied"})
    assert denied.status_code == 400 and "access_denied" in denied.json()["detail"]
    for params in ({}, {"state": "a b", "code": "c"}, {"state": "s\x00", "code": "c"}):
        bad = await client.get("/v1/brokers/alpaca/callback", params=params)
        assert bad.status_code == 422 and bad.headers["content-type"].startswith(PROBLEM)


async def test_api_keys_connect_pause_revoke_and_other_users(client: httpx.AsyncClient, tokens, standin, gateway,
                                                            test_issuer):
    owner, other = tokens.new_user(), tokens.new_user()
    wrong = await client.post("/v1/brokers/alpaca/connect", headers=bearer(tokens, owner),
                              json={"api_key_id": "PKRESTB", "api_secret_key": "not-the-secret"})
    assert wrong.status_code == 400 and wrong.headers["content-type"].startswith(PROBLEM)
    assert "refused these credentials" in wrong.json()["detail"] and "not-the-secret" not in wrong.text
    assert (await client.get("/v1/broker-connections", headers=bearer(tokens, owner))).json() == {"connections": []}
    half = await client.post("/v1/brokers/alpaca/connect", headers=bearer(tokens, owner),
                             json={"api_key_id": "PKRESTB"})
    assert half.status_code == 422
    read_only = await client.post("/v1/brokers/alpaca/connect", headers=bearer(tokens, owner, "trades:read"))
    assert read_only.status_code == 403

    made = await client.post("/v1/brokers/alpaca/connect", headers=bearer(tokens, owner),
                             json={"api_key_id": "PKRESTB", "api_secret_key": "rest-secret-b"})
    assert made.status_code == 201, made.text
    conn = made.json()
    cid = conn["connection_id"]
    assert made.headers["location"] == f"/v1/broker-connections/{cid}" and conn["method"] == "api_key"
    assert "rest-secret-b" not in made.text

    # another user: not listed, and 404 for the account, pause and revoke
    assert (await client.get("/v1/broker-connections", headers=bearer(tokens, other))).json() == {"connections": []}
    for method, path in (("GET", f"/v1/accounts/{cid}"), ("POST", f"/v1/broker-connections/{cid}:pause"),
                         ("POST", f"/v1/broker-connections/{cid}:resume"), ("DELETE", f"/v1/broker-connections/{cid}")):
        r = await client.request(method, path, headers=bearer(tokens, other))
        assert r.status_code == 404, (method, path, r.text)

    paused = await client.post(f"/v1/broker-connections/{cid}:pause", headers=bearer(tokens, owner))
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await place_order(gateway, test_issuer, owner, cid, "rest-paused-1")
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (await client.get(f"/v1/accounts/{cid}", headers=bearer(tokens, owner))).status_code == 200
    resumed = await client.post(f"/v1/broker-connections/{cid}:resume", headers=bearer(tokens, owner))
    assert resumed.status_code == 200 and resumed.json()["status"] == "active"
    assert (await place_order(gateway, test_issuer, owner, cid, "rest-resumed-1")).order.status == \
        pb.ORDER_STATUS_FILLED

    revoked = await client.delete(f"/v1/broker-connections/{cid}", headers=bearer(tokens, owner))
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    assert (await client.get(f"/v1/accounts/{cid}", headers=bearer(tokens, owner))).status_code == 404
    assert (await client.delete(f"/v1/broker-connections/{cid}", headers=bearer(tokens, owner))).status_code == 404
    assert (await client.get("/v1/broker-connections", headers=bearer(tokens, owner))).json() == {"connections": []}
