"""``GET /v1/accounts/{id}/orders`` and ``/fills`` over real components: this API on
uvicorn, broker-gateway over real gRPC (real Postgres, the session's Kafka broker), a
live and a paper Alpaca account of its accounts file served by the local Alpaca stand-in
over real HTTP, and paper accounts of the built-in paper broker."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import yaml  # type: ignore[import-untyped]
from google.protobuf.timestamp_pb2 import Timestamp

from bsopt.broker_gateway.v1 import broker_gateway_pb2 as pb
from bsopt.broker_gateway.v1 import broker_gateway_pb2_grpc as pb_grpc
from bsopt_api.config import ApiSettings
from bsopt_broker.bootstrap import BrokerGateway
from bsopt_broker.config import BrokerSettings
from bsopt_common.settings import BROKER_GATEWAY_AUDIENCE
from bsopt_common.testing.grpc_calls import grpc_calls
from bsopt_common.testing.identity import service_identity
from bsopt_common.testing.services import ServiceThread, free_port
from bsopt_common.testing.standins import alpaca_standin_module

PROBLEM = "application/problem+json"
OWNER = "rest-lister"
SECRET_ENV = "REST_LISTING_TEST_SECRET"
START = datetime(2025, 6, 2, 14, 0, tzinfo=UTC)
# Trading days of the bundled GOOGL bars.
DAYS = ["2017-04-03", "2017-04-04", "2017-04-05", "2017-04-06", "2017-04-07"]


@pytest.fixture(scope="module")
def standin() -> Iterator[Any]:
    s = alpaca_standin_module().AlpacaStandin()
    s.add_account("AKRESTLIVE", "rest-listing-secret", cash=10_000)
    s.add_account("PKRESTPAPER", "rest-listing-secret", cash=10_000)
    s.seed_fills("AKRESTLIVE", 5, START, START + timedelta(days=2))
    s.seed_fills("PKRESTPAPER", 3, START, START + timedelta(days=2))
    with s.serving():
        yield s


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, service_database_urls, kafka_bootstrap, test_issuer, standin) -> Iterator[str]:
    path = tmp_path_factory.mktemp("accounts") / "accounts.yaml"
    path.write_text(yaml.safe_dump({"accounts": [
        {"name": name, "broker": "alpaca", "owner": OWNER, "api_key_id": key, "api_secret_key_env": SECRET_ENV,
         "base_url": standin.base_url} for name, key in (("rest-live", "AKRESTLIVE"), ("rest-paper", "PKRESTPAPER"))
    ]}), encoding="utf-8")
    os.environ[SECRET_ENV] = "rest-listing-secret"
    port = free_port()
    settings = BrokerSettings(database_url=service_database_urls["broker-gateway"],
                              kafka_bootstrap_servers=kafka_bootstrap, port=port, accounts_file=path,
                              **service_identity(test_issuer, "broker-gateway"))
    try:
        with ServiceThread(BrokerGateway(settings).run, port=port):
            yield f"127.0.0.1:{port}"
    finally:
        os.environ.pop(SECRET_ENV, None)


@pytest.fixture(scope="module")
def api_settings(settings_for: Callable[..., ApiSettings], gateway: str) -> ApiSettings:
    return settings_for(broker_gateway_target=gateway)


call, _ = grpc_calls(pb_grpc.BrokerGatewayServiceStub)


def bearer(tokens: Any, user: str, scope: str = "trades:read trades:write") -> dict[str, str]:
    return tokens.bearer(tokens.user(scope, sub=user))


async def paper_account(client: httpx.AsyncClient, tokens: Any, user: str) -> str:
    """A new paper account of ``user`` (REST)."""
    created = await client.post("/v1/accounts", json={"initial_cash": {"amount": "100000", "currency": "USD"}},
                                headers=bearer(tokens, user))
    assert created.status_code == 201, created.text
    return str(created.json()["account_id"])


async def place_paper_orders(gateway: str, test_issuer: Any, user: str, account_id: str) -> None:
    """One order a day of :data:`DAYS` (REST has no order route: through gRPC, as rl-trainer)."""
    tok = test_issuer.token(aud=BROKER_GATEWAY_AUDIENCE, scope="broker:orders", client_id="resource-api", sub=user,
                            act={"sub": "resource-api"})
    for i, day in enumerate(DAYS):
        at = Timestamp()
        at.FromDatetime(datetime.fromisoformat(day).replace(tzinfo=UTC))
        await call(gateway, "PlaceOrder", pb.PlaceOrderRequest(
            account_id=account_id, client_order_id=f"rest-{i}", symbol="GOOGL", side=pb.SIDE_BUY, quantity=1,
            as_of=at), tok)


async def every_page(client: httpx.AsyncClient, path: str, headers: dict[str, str], field: str,
                     **params: Any) -> tuple[list[dict[str, Any]], int]:
    items: list[dict[str, Any]] = []
    pages = 0
    token = None
    while True:
        r = await client.get(path, params={**params, **({"page_token": token} if token else {})}, headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        pages += 1
        items.extend(body[field])
        token = body["next_page_token"]
        if token is None:
            return items, pages
        assert pages < 50


async def test_paper_account_orders_and_fills_say_paper(client, tokens, gateway, test_issuer):
    user = tokens.new_user()
    account_id = await paper_account(client, tokens, user)
    await place_paper_orders(gateway, test_issuer, user, account_id)
    headers = bearer(tokens, user, "trades:read")

    orders, pages = await every_page(client, f"/v1/accounts/{account_id}/orders", headers, "orders", page_size=2)
    assert pages == 3
    assert [o["client_order_id"] for o in orders] == [f"rest-{i}" for i in reversed(range(len(DAYS)))]
    for o in orders:
        assert o["account_kind"] == "paper" and o["status"] == "filled" and o["side"] == "buy"
        assert o["symbol"] == "GOOGL" and o["quantity"] == o["filled_quantity"] == 1
        assert o["average_price"]["currency"] == "USD" and isinstance(o["average_price"]["amount"], str)
        assert o["fee"]["currency"] == "USD" and o["submitted_at"].endswith("Z") and o["filled_at"]

    fills, _ = await every_page(client, f"/v1/accounts/{account_id}/fills", headers, "fills", page_size=3)
    assert [f["executed_at"][:10] for f in fills] == list(reversed(DAYS))
    assert len({f["trade_id"] for f in fills}) == len(DAYS)
    for f in fills:
        assert f["account_kind"] == "paper" and f["client_order_id"].startswith("rest-")
        assert f["price"]["currency"] == "USD" and f["fee"]["amount"]

    window = await client.get(f"/v1/accounts/{account_id}/fills", params={"since": DAYS[1], "until": DAYS[3]},
                              headers=headers)
    assert window.status_code == 200
    assert [f["executed_at"][:10] for f in window.json()["fills"]] == [DAYS[2], DAYS[1]]


@pytest.mark.parametrize(("account_id", "kind", "count"), [("rest-live", "live", 5), ("rest-paper", "paper", 3)])
async def test_alpaca_accounts_say_live_or_paper(client, tokens, account_id, kind, count):
    headers = bearer(tokens, OWNER, "trades:read")
    account = await client.get(f"/v1/accounts/{account_id}", headers=headers)
    assert account.status_code == 200 and account.json()["account_kind"] == kind
    fills, pages = await every_page(client, f"/v1/accounts/{account_id}/fills", headers, "fills", page_size=2)
    assert len(fills) == count == len({f["trade_id"] for f in fills}) and pages == (count + 1) // 2
    assert [f["executed_at"] for f in fills] == sorted((f["executed_at"] for f in fills), reverse=True)
    assert {f["account_kind"] for f in fills} == {kind}
    orders, _ = await every_page(client, f"/v1/accounts/{account_id}/orders", headers, "orders")
    assert len(orders) == count and {o["account_kind"] for o in orders} == {kind}
    assert all(o["submitted_at"] is None and o["filled_at"] and o["fill_latency_ms"] is None for o in orders)
    assert all(o["timing"] is None for o in orders)  # not placed through bsopt: no timing known


async def test_an_alpaca_order_placed_through_bsopt_shows_its_timing(client, tokens, gateway, test_issuer):
    tok = test_issuer.token(aud=BROKER_GATEWAY_AUDIENCE, scope="broker:orders", client_id="resource-api",
                            sub=OWNER, act={"sub": "resource-api"})
    placed = await call(gateway, "PlaceOrder", pb.PlaceOrderRequest(
        account_id="rest-paper", client_order_id="rest-timed-1", symbol="AAPL", side=pb.SIDE_BUY, quantity=2), tok)
    headers = bearer(tokens, OWNER, "trades:read")
    orders, _ = await every_page(client, "/v1/accounts/rest-paper/orders", headers, "orders")
    [mine] = [o for o in orders if o["client_order_id"] == "rest-timed-1"]
    assert mine["order_id"] == placed.order.order_id and mine["account_kind"] == "paper"
    assert mine["submitted_at"].endswith("Z") and mine["filled_quantity"] == 2
    timing = mine["timing"]
    assert timing["received_at"].endswith("Z")
    steps = [timing[k] for k in ("balance_checked_ms", "sent_ms", "acknowledged_ms", "filled_ms")]
    assert all(isinstance(v, float) for v in steps) and steps == sorted(steps) and steps[0] >= 0
    assert len(orders) == 3 + 1  # the seeded fills' orders, and this one once (not again from its fill)


async def test_another_users_account_is_404(client, tokens):
    owner = tokens.new_user()
    account_id = await paper_account(client, tokens, owner)
    other = bearer(tokens, tokens.new_user(), "trades:read")
    for path in (f"/v1/accounts/{account_id}/orders", f"/v1/accounts/{account_id}/fills",
                 "/v1/accounts/rest-live/fills", "/v1/accounts/rest-live/orders", "/v1/accounts/nope/orders"):
        r = await client.get(path, headers=other)
        assert r.status_code == 404 and r.headers["content-type"].startswith(PROBLEM), (path, r.text)


async def test_bad_tokens_and_parameters_are_client_errors(client, tokens):
    user = tokens.new_user()
    account_id = await paper_account(client, tokens, user)
    headers = bearer(tokens, user, "trades:read")
    for listing in ("orders", "fills"):
        path = f"/v1/accounts/{account_id}/{listing}"
        for garbage in ("garbage", "garbage!", "eyJ2IjoxfQ", "x" * 1000):
            r = await client.get(path, params={"page_token": garbage}, headers=headers)
            assert r.status_code == 400 and r.headers["content-type"].startswith(PROBLEM), (garbage, r.text)
        r = await client.get(path, params={"since": "2017-04-05", "until": "2017-04-03"}, headers=headers)
        assert r.status_code == 400 and r.headers["content-type"].startswith(PROBLEM), r.text
        for size in ("0", "501", "-1", "lots"):
            r = await client.get(path, params={"page_size": size}, headers=headers)
            assert r.status_code == 422 and r.headers["content-type"].startswith(PROBLEM), r.text
        r = await client.get(path, params={"page_token": "x" * 2000}, headers=headers)
        assert r.status_code == 422
        r = await client.get(path, headers=bearer(tokens, user, "training:read"))
        assert r.status_code == 403
        r = await client.get(path, params={"page_size": "500"}, headers=headers)
        assert r.status_code == 200 and r.json() == {listing: [], "next_page_token": None}
