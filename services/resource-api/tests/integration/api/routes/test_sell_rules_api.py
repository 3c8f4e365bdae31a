"""Sell rules and close-all set per user through the REST API (issue 8 §4), end to end over
real components: this API on uvicorn, broker-gateway over real gRPC (real Postgres, the
session's Kafka broker) with its sell module, the local Alpaca stand-in over real HTTP
through alpaca-py."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml  # type: ignore[import-untyped]

from bsopt.broker_gateway.v1 import events_pb2
from bsopt_api.config import ApiSettings
from bsopt_broker.bootstrap import BrokerGateway
from bsopt_broker.config import BrokerSettings
from bsopt_common.testing.identity import service_identity
from bsopt_common.testing.services import ServiceThread, free_port
from bsopt_common.testing.standins import alpaca_standin_module

PROBLEM = "application/problem+json"
SECRET_ENV = "ALPACA_SELL_REST_SECRET"


@pytest.fixture(scope="module")
def standin() -> Iterator[Any]:
    s = alpaca_standin_module().AlpacaStandin()
    for key in ("PKSRCONN", "PKSRFILE", "PKSRRO"):
        s.add_account(key, "sell-rest-secret", cash=50_000)
    with s.serving():
        yield s


@pytest.fixture(scope="module")
def owner(tokens: Any) -> str:
    return str(tokens.new_user())


@pytest.fixture(scope="module")
def accounts_file(tmp_path_factory: pytest.TempPathFactory, standin: Any, owner: str) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("accounts") / "accounts.yaml"
    common = {"broker": "alpaca", "owner": owner, "api_secret_key_env": SECRET_ENV, "base_url": standin.base_url}
    path.write_text(yaml.safe_dump({"accounts": [
        {"name": f"file-{owner}", "api_key_id": "PKSRFILE", **common},
        {"name": f"ro-{owner}", "api_key_id": "PKSRRO", "read_only": True, **common},
    ]}), encoding="utf-8")
    os.environ[SECRET_ENV] = "sell-rest-secret"
    yield path
    os.environ.pop(SECRET_ENV, None)


@pytest.fixture(scope="module")
def gateway(service_database_urls, kafka_bootstrap, test_issuer, standin, accounts_file) -> Iterator[str]:
    port = free_port()
    settings = BrokerSettings(
        database_url=service_database_urls["broker-gateway"], kafka_bootstrap_servers=kafka_bootstrap, port=port,
        accounts_file=accounts_file, alpaca_trading_base_url=standin.base_url,
        **service_identity(test_issuer, "broker-gateway"))
    with ServiceThread(BrokerGateway(settings).run, port=port):
        yield f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def api_settings(settings_for: Callable[..., ApiSettings], gateway: str) -> ApiSettings:
    return settings_for(broker_gateway_target=gateway)


def bearer(tokens: Any, user: str, scope: str = "trades:read trades:write") -> dict[str, str]:
    return dict(tokens.bearer(tokens.user(scope, sub=user)))


def decisions(database_url: str, account_id: str) -> list[events_pb2.SellDecision]:
    dsn = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT payload FROM broker.outbox WHERE topic = 'sells.decided.v1' "
                            "ORDER BY created_at").fetchall()
    found = [events_pb2.SellDecision.FromString(bytes(r[0])) for r in rows]
    return [e for e in found if e.account_id == account_id]


def sells(standin: Any, key: str, symbol: str) -> list[dict[str, Any]]:
    return [o for o in standin.accounts[key].orders.values() if o["symbol"] == symbol and o["side"] == "sell"]


def hold(standin: Any, key: str, symbol: str, qty: int, avg: str, price: str) -> None:
    with standin.lock:
        standin.prices[symbol] = Decimal(price)
        standin.accounts[key].positions[symbol] = (qty, Decimal(avg))


async def wait_until(predicate: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_put_rules_of_a_connected_account_then_a_price_move_sells(
        client: httpx.AsyncClient, tokens, standin, service_database_urls):
    user = tokens.new_user()
    made = await client.post("/v1/brokers/alpaca/connect", headers=bearer(tokens, user),
                             json={"api_key_id": "PKSRCONN", "api_secret_key": "sell-rest-secret", "paper": True})
    assert made.status_code == 201, made.text
    account_id = made.json()["account_id"]
    hold(standin, "PKSRCONN", "RSX", 6, "100", "100")

    put = await client.put(f"/v1/accounts/{account_id}/sell-rules", headers=bearer(tokens, user),
                           json={"stop_loss_pct": 2.5, "take_profit_pct": None})
    assert put.status_code == 200, put.text
    assert put.json() == {"account_id": account_id, "stop_loss_pct": 2.5, "take_profit_pct": None,
                          "check_interval_s": 5.0}
    assert sells(standin, "PKSRCONN", "RSX") == []  # inside the band

    with standin.lock:
        standin.prices["RSX"] = Decimal("97")  # -3 %: the worker's next pass sells
    url = service_database_urls["broker-gateway"]
    await wait_until(lambda: len(decisions(url, account_id)) == 1)
    [event] = decisions(url, account_id)
    assert (event.symbol, event.rule, event.outcome, event.quantity, event.user_id) == (
        "RSX", "stop_loss", "sold", 6, user)
    [order] = sells(standin, "PKSRCONN", "RSX")
    assert order["client_order_id"] == event.decision_id and "RSX" not in standin.accounts["PKSRCONN"].positions

    # another user: 404 problem for both routes, nothing stored or queued
    other = tokens.new_user()
    for method, path, body in (("PUT", f"/v1/accounts/{account_id}/sell-rules", {"stop_loss_pct": 5}),
                               ("POST", f"/v1/accounts/{account_id}:close-all-positions", None)):
        r = await client.request(method, path, headers=bearer(tokens, other), json=body)
        assert r.status_code == 404, (method, r.text)
        assert r.headers["content-type"].startswith(PROBLEM) and r.json()["status"] == 404


async def test_close_all_through_the_api(client: httpx.AsyncClient, tokens, standin, owner, service_database_urls):
    account_id = f"file-{owner}"
    hold(standin, "PKSRFILE", "CL1", 2, "10", "11")
    hold(standin, "PKSRFILE", "CL2", 3, "20", "19")
    r = await client.post(f"/v1/accounts/{account_id}:close-all-positions", headers=bearer(tokens, owner))
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["account_id"] == account_id and body["status"] == "queued" and body["request_id"]
    await wait_until(lambda: not standin.accounts["PKSRFILE"].positions)
    assert len(sells(standin, "PKSRFILE", "CL1")) == 1 and len(sells(standin, "PKSRFILE", "CL2")) == 1
    url = service_database_urls["broker-gateway"]
    await wait_until(lambda: len(decisions(url, account_id)) == 2)
    assert {e.request_id for e in decisions(url, account_id)} == {body["request_id"]}

    # its status resource (Location), readable with trades:read, done with both sold
    location = r.headers["location"]
    assert location == f"/v1/accounts/{account_id}/close-all-requests/{body['request_id']}"
    reader = bearer(tokens, owner, "trades:read")
    for _ in range(100):
        got = await client.get(location, headers=reader)
        assert got.status_code == 200, got.text
        if got.json()["status"] == "done":
            break
        await asyncio.sleep(0.1)
    status_ = got.json()
    assert (status_["status"], status_["positions_sold"], status_["positions_refused"], status_["error"]) == (
        "done", 2, 0, "")
    assert status_["requested_at"] <= status_["started_at"] <= status_["finished_at"]
    # another user's, another account's, an unknown and a malformed id: 404 / 404 / 404 / 422
    other = tokens.new_user()
    assert (await client.get(location, headers=bearer(tokens, other, "trades:read"))).status_code == 404
    wrong_account = location.replace(account_id, f"ro-{owner}")
    assert (await client.get(wrong_account, headers=reader)).status_code == 404
    unknown = f"/v1/accounts/{account_id}/close-all-requests/00000000-0000-4000-8000-000000000000"
    assert (await client.get(unknown, headers=reader)).status_code == 404
    assert (await client.get(f"/v1/accounts/{account_id}/close-all-requests/not%20an%20id",
                             headers=reader)).status_code == 422


async def test_refusals_are_problems_never_5xx(client: httpx.AsyncClient, tokens, owner):
    headers = bearer(tokens, owner)
    path = f"/v1/accounts/file-{owner}/sell-rules"
    for bad in ({"stop_loss_pct": 100}, {"stop_loss_pct": 0}, {"stop_loss_pct": -1}, {"take_profit_pct": 0},
                {"take_profit_pct": "lots"}, {"stop_loss_pct": 5, "trailing": 1}, {"stop_loss_pct": "5"}):
        r = await client.put(path, headers=headers, json=bad)
        assert r.status_code == 422, (bad, r.text)
        assert r.headers["content-type"].startswith(PROBLEM)
    for raw in (b"{not json", b'{"stop_loss_pct": 1e400}', b'{"take_profit_pct": NaN}', b'{"stop_loss_pct": true}'):
        r = await client.put(path, headers={**headers, "Content-Type": "application/json"}, content=raw)
        assert r.status_code == 422, (raw, r.text)
    # read-only account: rules may be stored, selling everything is refused (409)
    ro = await client.post(f"/v1/accounts/ro-{owner}:close-all-positions", headers=headers)
    assert ro.status_code == 409 and ro.headers["content-type"].startswith(PROBLEM)
    assert "read-only" in ro.json()["detail"]
    # unknown account, a paper account id, a control character: 404 / 404 / 422
    for account_id in ("no-such-account", "00000000-0000-0000-0000-000000000000"):
        r = await client.post(f"/v1/accounts/{account_id}:close-all-positions", headers=headers)
        assert r.status_code == 404, r.text
    r = await client.put("/v1/accounts/a%00b/sell-rules", headers=headers, json={"stop_loss_pct": 5})
    assert r.status_code == 422
    # reading only: 403
    r = await client.put(path, headers=bearer(tokens, owner, "trades:read"), json={"stop_loss_pct": 5})
    assert r.status_code == 403
