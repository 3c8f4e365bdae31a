"""The sell module's close-all requests survive restarts, and connected accounts get sell
rules (issue 8 §4): real gRPC server, real Postgres, the local Alpaca stand-in over real
HTTP through alpaca-py."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml  # type: ignore[import-untyped]
from sqlalchemy import select

from bsopt.broker_gateway.v1 import broker_gateway_pb2 as pb
from bsopt.broker_gateway.v1 import broker_gateway_pb2_grpc as pb_grpc
from bsopt.broker_gateway.v1 import events_pb2
from bsopt_broker import models
from bsopt_broker.adapters.alpaca.accounts import load_accounts
from bsopt_broker.adapters.alpaca.prices import LatestTradePrices
from bsopt_broker.adapters.router import VenueRouter
from bsopt_broker.bootstrap import BrokerGateway, alpaca_venue
from bsopt_broker.config import BrokerSettings
from bsopt_broker.domain.records import MarketOrder, OrderResult
from bsopt_broker.sell import RequestStatus, SellModule
from bsopt_common.db import create_db_engine, make_session_factory
from bsopt_common.events import Outbox
from bsopt_common.settings import BROKER_GATEWAY_AUDIENCE
from bsopt_common.testing.grpc_calls import grpc_calls
from bsopt_common.testing.identity import service_identity
from bsopt_common.testing.services import ServiceThread, free_port
from bsopt_common.testing.standins import alpaca_standin_module

SCOPES = "broker:accounts broker:orders broker:import broker:connections broker:connections.read broker:sells"
SECRET_ENV = "ALPACA_SELL_DURABILITY_SECRET"
KEY = base64.b64encode(hashlib.sha256(b"test key of test_sell_durability").digest()).decode()


@pytest.fixture(scope="module")
def standin() -> Iterator[Any]:
    s = alpaca_standin_module().AlpacaStandin()
    for key in ("PKDURA", "PKKILL", "PKCONNA", "PKCONNB", "PKCONNC"):
        s.add_account(key, "durable-secret", cash=100_000)
    with s.serving():
        yield s


@pytest.fixture(scope="module")
def accounts(tmp_path_factory: pytest.TempPathFactory, standin: Any) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("accounts") / "accounts.yaml"
    path.write_text(yaml.safe_dump({"accounts": [
        {"name": f"{name}-d", "broker": "alpaca", "owner": "trader-d", "api_key_id": key,
         "api_secret_key_env": SECRET_ENV, "base_url": standin.base_url}
        for name, key in (("dura", "PKDURA"), ("kill", "PKKILL"))]}), encoding="utf-8")
    os.environ[SECRET_ENV] = "durable-secret"
    yield path
    os.environ.pop(SECRET_ENV, None)


@pytest.fixture(scope="module")
def settings(service_database_urls, kafka_bootstrap, test_issuer, accounts, standin) -> BrokerSettings:
    return BrokerSettings(database_url=service_database_urls["broker-gateway"],
                          kafka_bootstrap_servers=kafka_bootstrap, port=free_port(), accounts_file=accounts,
                          credentials_key=KEY, alpaca_trading_base_url=standin.base_url,
                          **service_identity(test_issuer, "broker-gateway"))


class Gateway:
    """A broker-gateway process that can be restarted (a fresh BrokerGateway each time)."""

    def __init__(self, settings: BrokerSettings):
        self.settings = settings
        self.target = f"127.0.0.1:{settings.port}"
        self.gw: BrokerGateway | None = None
        self._thread: ServiceThread | None = None

    def start(self) -> BrokerGateway:
        self.gw = BrokerGateway(self.settings)
        self._thread = ServiceThread(self.gw.run, port=self.settings.port)
        self._thread.__enter__()
        return self.gw

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.__exit__(None, None, None)
            self._thread = None


@pytest.fixture(scope="module")
def gateway(settings) -> Iterator[Gateway]:
    g = Gateway(settings)
    g.start()
    try:
        yield g
    finally:
        g.stop()


@pytest.fixture(scope="module")
def session_factory(service_database_urls, gateway):
    engine = create_db_engine(service_database_urls["broker-gateway"])
    yield make_session_factory(engine)
    engine.dispose()


def token(issuer: Any, user: str) -> str:
    return issuer.token(aud=BROKER_GATEWAY_AUDIENCE, scope=SCOPES, client_id="resource-api", sub=user,
                        act={"sub": "resource-api"})


call, refused = grpc_calls(pb_grpc.BrokerGatewayServiceStub)


def decisions(session_factory: Any, account_id: str, symbol: str | None = None) -> list[events_pb2.SellDecision]:
    t = Outbox(models.SCHEMA).table
    with session_factory() as s:
        rows = s.execute(select(t.c.payload).where(t.c.topic == "sells.decided.v1").order_by(t.c.created_at)).all()
    found = [events_pb2.SellDecision.FromString(r.payload) for r in rows]
    return [e for e in found if e.account_id == account_id and (symbol is None or e.symbol == symbol)]


def request_row(session_factory: Any, request_id: str) -> Any:
    t = models.close_all_requests
    with session_factory() as s:
        return s.execute(select(t).where(t.c.request_id == request_id)).one()


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
        await asyncio.sleep(0.05)


async def test_a_close_all_queued_before_a_restart_completes_after_it(gateway, standin, session_factory,
                                                                     test_issuer):
    gw = gateway.gw
    assert gw is not None and gw.sells is not None
    for symbol, qty in (("DR1", 3), ("DR2", 5), ("DR3", 2)):
        hold(standin, "PKDURA", symbol, qty, "40", "41")
    # the workers are down (the process is about to stop): the request is only recorded
    await asyncio.to_thread(gw.sells.stop)
    resp = await call(gateway.target, "CloseAllPositions", pb.CloseAllPositionsRequest(account_id="dura-d"),
                      token(test_issuer, "trader-d"))
    row = request_row(session_factory, resp.request_id)
    assert (row.account_id, row.user_id, row.status) == ("dura-d", "trader-d", "queued")
    assert row.requested_at is not None and len(standin.accounts["PKDURA"].positions) == 3

    await asyncio.to_thread(gateway.stop)  # restart: nothing of the request is in memory any more
    assert len(standin.accounts["PKDURA"].positions) == 3
    await asyncio.to_thread(gateway.start)

    await wait_until(lambda: request_row(session_factory, resp.request_id).status == "done")
    row = request_row(session_factory, resp.request_id)
    assert (row.positions_sold, row.positions_refused, row.error) == (3, 0, "")
    assert row.started_at is not None and row.finished_at is not None
    assert not standin.accounts["PKDURA"].positions
    for symbol in ("DR1", "DR2", "DR3"):
        assert len(sells(standin, "PKDURA", symbol)) == 1, symbol
    assert {(e.symbol, e.rule, e.outcome, e.request_id) for e in decisions(session_factory, "dura-d")} == {
        (s, "close_all", "sold", resp.request_id) for s in ("DR1", "DR2", "DR3")}


async def test_a_request_reports_how_far_it_came_to_its_user_only(gateway, standin, session_factory,
                                                                  test_issuer):
    hold(standin, "PKDURA", "ST1", 4, "40", "41")
    resp = await call(gateway.target, "CloseAllPositions", pb.CloseAllPositionsRequest(account_id="dura-d"),
                      token(test_issuer, "trader-d"))
    await wait_until(lambda: request_row(session_factory, resp.request_id).status == "done")
    got = await call(gateway.target, "GetCloseAllRequest", pb.GetCloseAllRequestRequest(request_id=resp.request_id),
                     token(test_issuer, "trader-d"))
    assert (got.request_id, got.account_id, got.status, got.positions_sold, got.positions_refused, got.error) == (
        resp.request_id, "dura-d", pb.CloseAllRequest.STATUS_DONE, 1, 0, "")
    assert got.HasField("started_at") and got.HasField("finished_at")
    for request_id, user in ((resp.request_id, "trader-other"), ("not-a-uuid", "trader-d"),
                             ("00000000-0000-4000-8000-000000000000", "trader-d")):
        err = await refused(gateway.target, "GetCloseAllRequest",
                            pb.GetCloseAllRequestRequest(request_id=request_id), token(test_issuer, user))
        assert err.code() == grpc.StatusCode.NOT_FOUND, (request_id, user)


async def test_the_sell_module_needs_broker_sells_and_orders_alone_do_not_reach_it(gateway, test_issuer):
    """A token that may place orders (rl-trainer's) cannot set rules or close positions,
    and a user's broker:sells cannot place an order: one scope per power."""
    orders_only = test_issuer.token(aud=BROKER_GATEWAY_AUDIENCE, scope="broker:accounts broker:orders",
                                    client_id="rl-trainer", sub="trader-d", act={"sub": "rl-trainer"})
    for method, request in (("SetSellRules", pb.SetSellRulesRequest(account_id="dura-d", stop_loss_pct=5)),
                            ("CloseAllPositions", pb.CloseAllPositionsRequest(account_id="dura-d"))):
        err = await refused(gateway.target, method, request, orders_only)
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED, method
    sells_only = test_issuer.token(aud=BROKER_GATEWAY_AUDIENCE, scope="broker:accounts broker:sells",
                                   client_id="resource-api", sub="trader-d", act={"sub": "resource-api"})
    err = await refused(gateway.target, "PlaceOrder", pb.PlaceOrderRequest(account_id="dura-d"), sells_only)
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED


class _Killed(BaseException):
    """The process dies (not an error any handler catches)."""


class _DiesAfterFirstOrder:
    """The router, but the process dies right after the first order reached Alpaca (its
    decision not recorded yet)."""

    def __init__(self, router: VenueRouter):
        self._router = router
        self.placed: list[OrderResult] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._router, name)

    def submit_market_order(self, order: MarketOrder) -> OrderResult:
        result = self._router.submit_market_order(order)
        self.placed.append(result)
        raise _Killed


def _router(gw: BrokerGateway, settings: BrokerSettings) -> VenueRouter:
    """A fresh process's router: new Alpaca clients, nothing remembered of earlier orders."""
    assert gw.router is not None and settings.accounts_file is not None
    accounts = load_accounts(settings.accounts_file)
    return VenueRouter(gw.router.paper, alpaca_venue(accounts, **settings.alpaca_options()), accounts)


async def test_a_module_killed_mid_request_sells_each_position_once_after_the_restart(
        gateway, settings, standin, session_factory, test_issuer):
    gw = gateway.gw
    assert gw is not None and gw.sells is not None and settings.accounts_file is not None
    accounts = load_accounts(settings.accounts_file)
    positions = {"KL1": (4, "10"), "KL2": (6, "20"), "KL3": (1, "30")}
    for symbol, (qty, avg) in positions.items():
        hold(standin, "PKKILL", symbol, qty, avg, avg)
    await asyncio.to_thread(gw.sells.stop)  # this test drives the passes itself

    dying = _DiesAfterFirstOrder(_router(gw, settings))
    first = SellModule(dying, accounts, LatestTradePrices.from_accounts(accounts),  # type: ignore[arg-type]
                       session_factory, Outbox(models.SCHEMA))
    request_id = await asyncio.to_thread(first.close_all, "kill-d", "trader-d")
    with pytest.raises(_Killed):
        await asyncio.to_thread(first.run_once, "kill-d")
    [placed] = dying.placed
    sold_first = placed.order.symbol
    assert request_row(session_factory, request_id).status == "running"
    assert decisions(session_factory, "kill-d") == []  # died before recording the decision
    # Worst case: Alpaca still shows the position (the fill not settled when the new process
    # reads it): the same snapshot gives the same client_order_id, which Alpaca places once.
    qty, avg = positions[sold_first]
    hold(standin, "PKKILL", sold_first, qty, avg, avg)

    restarted = SellModule(_router(gw, settings), accounts, LatestTradePrices.from_accounts(accounts),
                           session_factory, Outbox(models.SCHEMA))
    await asyncio.to_thread(restarted.start)  # resumes the running request
    try:
        assert "kill-d" in restarted.workers
        await wait_until(lambda: request_row(session_factory, request_id).status == "done")
    finally:
        await asyncio.to_thread(restarted.stop)
    for symbol in positions:
        assert len(sells(standin, "PKKILL", symbol)) == 1, symbol
    assert sells(standin, "PKKILL", sold_first)[0]["client_order_id"] == placed.order.client_order_id
    row = request_row(session_factory, request_id)
    assert row.positions_sold == 3 and row.positions_refused == 0
    assert sorted(e.symbol for e in decisions(session_factory, "kill-d")) == sorted(positions)
    # the request's status, as its user reads it
    status = restarted.close_all_request(request_id, "trader-d")
    assert status.status is RequestStatus.DONE and status.positions_sold == 3
    # a third process finds nothing left to do: no new order, no new decision
    third = SellModule(_router(gw, settings), accounts, LatestTradePrices.from_accounts(accounts),
                       session_factory, Outbox(models.SCHEMA))
    await asyncio.to_thread(third.run_once, "kill-d")
    assert sum(len(sells(standin, "PKKILL", s)) for s in positions) == 3
    await asyncio.to_thread(gw.sells.start)


async def connect_keys(target: str, issuer: Any, user: str, key_id: str) -> str:
    connection = await call(target, "ConnectBrokerWithKeys", pb.ConnectBrokerWithKeysRequest(
        broker="alpaca", api_key_id=key_id, api_secret_key="durable-secret", paper=True), token(issuer, user))
    return str(connection.connection_id)


async def test_a_connected_accounts_stop_loss_fires(gateway, standin, session_factory, test_issuer):
    gw = gateway.gw
    assert gw is not None and gw.sells is not None
    user = "conn-user-a"
    account_id = await connect_keys(gateway.target, test_issuer, user, "PKCONNA")
    hold(standin, "PKCONNA", "CSL", 8, "100", "100")
    tok = token(test_issuer, user)
    rules = await call(gateway.target, "SetSellRules",
                       pb.SetSellRulesRequest(account_id=account_id, stop_loss_pct=4), tok)
    assert rules.account_id == account_id and rules.stop_loss_pct == 4.0
    assert account_id in gw.sells.workers
    with standin.lock:
        standin.prices["CSL"] = Decimal("95")  # -5 %
    # the worker's next pass is check_interval_s away: setting the rule again wakes it
    await call(gateway.target, "SetSellRules", pb.SetSellRulesRequest(account_id=account_id, stop_loss_pct=4), tok)
    await wait_until(lambda: len(decisions(session_factory, account_id, "CSL")) == 1)
    [event] = decisions(session_factory, account_id, "CSL")
    assert (event.rule, event.outcome, event.quantity, event.user_id) == ("stop_loss", "sold", 8, user)
    assert len(sells(standin, "PKCONNA", "CSL")) == 1 and "CSL" not in standin.accounts["PKCONNA"].positions

    # close-all on a connected account, through the durable request
    hold(standin, "PKCONNA", "CC1", 2, "50", "50")
    resp = await call(gateway.target, "CloseAllPositions", pb.CloseAllPositionsRequest(account_id=account_id), tok)
    await wait_until(lambda: request_row(session_factory, resp.request_id).status == "done")
    assert len(sells(standin, "PKCONNA", "CC1")) == 1 and request_row(session_factory,
                                                                      resp.request_id).positions_sold == 1

    # a restart starts the connected account's worker again (its rule is stored)
    await asyncio.to_thread(gateway.stop)
    gw = await asyncio.to_thread(gateway.start)
    assert gw.sells is not None and account_id in gw.sells.workers

    # another user: not found
    err = await refused(gateway.target, "SetSellRules", pb.SetSellRulesRequest(account_id=account_id,
                                                                               stop_loss_pct=4),
                        token(test_issuer, "someone-else"))
    assert err.code() == grpc.StatusCode.NOT_FOUND


async def test_a_paused_connections_rule_does_not_fire_and_a_revoked_ones_worker_stops(
        gateway, standin, session_factory, test_issuer):
    gw = gateway.gw
    assert gw is not None and gw.sells is not None
    user = "conn-user-b"
    tok = token(test_issuer, user)
    account_id = await connect_keys(gateway.target, test_issuer, user, "PKCONNB")
    hold(standin, "PKCONNB", "PSX", 5, "100", "100")
    await call(gateway.target, "SetSellRules", pb.SetSellRulesRequest(account_id=account_id, take_profit_pct=5), tok)
    await call(gateway.target, "PauseBrokerConnection", pb.PauseBrokerConnectionRequest(connection_id=account_id),
               tok)
    with standin.lock:
        standin.prices["PSX"] = Decimal("120")  # +20 %: the rule would fire
    for _ in range(3):
        await asyncio.to_thread(gw.sells.run_once, account_id)
    await call(gateway.target, "SetSellRules", pb.SetSellRulesRequest(account_id=account_id, take_profit_pct=5), tok)
    await asyncio.sleep(0.5)
    assert sells(standin, "PKCONNB", "PSX") == [] and decisions(session_factory, account_id) == []
    assert standin.accounts["PKCONNB"].positions["PSX"] == (5, Decimal(100))
    err = await refused(gateway.target, "CloseAllPositions", pb.CloseAllPositionsRequest(account_id=account_id), tok)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "paused" in err.details()

    # resumed: the rule fires on the next pass
    await call(gateway.target, "ResumeBrokerConnection", pb.ResumeBrokerConnectionRequest(connection_id=account_id),
               tok)
    await asyncio.to_thread(gw.sells.run_once, account_id)
    assert len(sells(standin, "PKCONNB", "PSX")) == 1

    # revoked: the worker stops, the rules and close-all are NOT_FOUND
    hold(standin, "PKCONNB", "RVX", 5, "100", "200")
    await call(gateway.target, "RevokeBrokerConnection",
               pb.RevokeBrokerConnectionRequest(connection_id=account_id), tok)
    gw.sells._wake(account_id)
    await wait_until(lambda: account_id not in gw.sells.workers)
    assert sells(standin, "PKCONNB", "RVX") == []
    for method, request in (("SetSellRules", pb.SetSellRulesRequest(account_id=account_id, stop_loss_pct=5)),
                            ("CloseAllPositions", pb.CloseAllPositionsRequest(account_id=account_id))):
        err = await refused(gateway.target, method, request, tok)
        assert err.code() == grpc.StatusCode.NOT_FOUND, method


async def test_a_close_all_of_a_connection_revoked_before_its_turn_fails(gateway, standin, session_factory,
                                                                        test_issuer):
    gw = gateway.gw
    assert gw is not None and gw.sells is not None
    user = "conn-user-c"
    tok = token(test_issuer, user)
    account_id = await connect_keys(gateway.target, test_issuer, user, "PKCONNC")
    hold(standin, "PKCONNC", "RQX", 5, "100", "100")
    await asyncio.to_thread(gw.sells.stop)
    try:
        resp = await call(gateway.target, "CloseAllPositions", pb.CloseAllPositionsRequest(account_id=account_id),
                          tok)
        await call(gateway.target, "RevokeBrokerConnection",
                   pb.RevokeBrokerConnectionRequest(connection_id=account_id), tok)
    finally:
        await asyncio.to_thread(gw.sells.start)
    await wait_until(lambda: request_row(session_factory, resp.request_id).status == "failed")
    assert "revoked" in request_row(session_factory, resp.request_id).error
    assert sells(standin, "PKCONNC", "RQX") == [] and account_id not in gw.sells.workers
