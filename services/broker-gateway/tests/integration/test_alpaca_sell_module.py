"""The sell module (issue 8 section 4) wired into broker-gateway: real gRPC server, real
Postgres (rules table, outbox), the local Alpaca stand-in over real HTTP."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
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
from bsopt_broker.adapters.alpaca.accounts import AccountsFileError, parse_accounts
from bsopt_broker.adapters.alpaca.prices import LatestTradePrices
from bsopt_broker.bootstrap import BrokerGateway
from bsopt_broker.config import BrokerSettings
from bsopt_broker.sell import SellModule
from bsopt_common import codec
from bsopt_common.db import create_db_engine, make_session_factory
from bsopt_common.events import Outbox
from bsopt_common.money import Money
from bsopt_common.settings import BROKER_GATEWAY_AUDIENCE
from bsopt_common.testing.grpc_calls import grpc_calls
from bsopt_common.testing.identity import service_identity
from bsopt_common.testing.services import ServiceThread, free_port
from bsopt_common.testing.standins import alpaca_standin_module

SCOPES = "broker:accounts broker:orders broker:import broker:sells"
SECRET_ENV = "ALPACA_SELL_TEST_SECRET"
SLOW = 3600  # check_interval_s of the file's rules: the tests drive the passes themselves


def entry(standin: Any, name: str, owner: str, key: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "broker": "alpaca", "owner": owner, "api_key_id": key, "api_secret_key_env": SECRET_ENV,
            "base_url": standin.base_url, **extra}


@pytest.fixture(scope="module")
def standin() -> Iterator[Any]:
    s = alpaca_standin_module().AlpacaStandin()
    for key in ("PKRULES", "PKCLOSE", "PKRO", "PKAPI"):
        s.add_account(key, "sell-secret", cash=100_000)
    with s.serving():
        yield s


@pytest.fixture(scope="module")
def accounts(tmp_path_factory: pytest.TempPathFactory, standin: Any) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("accounts") / "accounts.yaml"
    rules = {"stop_loss_pct": 5, "take_profit_pct": 10, "check_interval_s": SLOW}
    path.write_text(yaml.safe_dump({"accounts": [
        entry(standin, "rules-a", "trader-a", "PKRULES", sell_rules=rules),
        entry(standin, "close-a", "trader-a", "PKCLOSE"),
        entry(standin, "ro-a", "trader-a", "PKRO", read_only=True, sell_rules=rules),
        entry(standin, "api-a", "trader-a", "PKAPI"),
    ]}), encoding="utf-8")
    os.environ[SECRET_ENV] = "sell-secret"
    yield path
    os.environ.pop(SECRET_ENV, None)


@pytest.fixture(scope="module")
def gateway(service_database_urls, kafka_bootstrap, test_issuer, accounts) -> Iterator[tuple[str, BrokerGateway]]:
    port = free_port()
    settings = BrokerSettings(database_url=service_database_urls["broker-gateway"],
                              kafka_bootstrap_servers=kafka_bootstrap, port=port, accounts_file=accounts,
                              **service_identity(test_issuer, "broker-gateway"))
    gw = BrokerGateway(settings)
    with ServiceThread(gw.run, port=port):
        yield f"127.0.0.1:{port}", gw


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
        rows = s.execute(select(t.c.payload, t.c.event_id).where(t.c.topic == "sells.decided.v1")
                         .order_by(t.c.created_at)).all()
    found = [events_pb2.SellDecision.FromString(r.payload) for r in rows]
    return [e for e in found if e.account_id == account_id and (symbol is None or e.symbol == symbol)]


def sells(standin: Any, key: str, symbol: str) -> list[dict[str, Any]]:
    return [o for o in standin.accounts[key].orders.values() if o["symbol"] == symbol and o["side"] == "sell"]


def hold(standin: Any, key: str, symbol: str, qty: int, avg: str, price: str) -> None:
    with standin.lock:
        standin.prices[symbol] = Decimal(price)
        standin.accounts[key].positions[symbol] = (qty, Decimal(avg))


def set_price(standin: Any, symbol: str, price: str) -> None:
    with standin.lock:
        standin.prices[symbol] = Decimal(price)


async def wait_until(predicate: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def test_sell_rules_in_the_accounts_file_are_validated(tmp_path):
    base = {"name": "x", "broker": "alpaca", "owner": "u", "api_key_id": "PK1", "api_secret_key": "s"}
    ok = parse_accounts([{**base, "sell_rules": {"stop_loss_pct": 2.5, "take_profit_pct": 50}}])
    assert ok["x"].sell_rules is not None and ok["x"].sell_rules.stop_loss_pct == Decimal("2.5")
    assert ok["x"].sell_rules.check_interval_s == 5.0
    for rules, field in (({"stop_loss_pct": 100}, "sell_rules.stop_loss_pct"),
                         ({"take_profit_pct": -1}, "sell_rules.take_profit_pct"),
                         ({"check_interval_s": 0}, "sell_rules.check_interval_s"),
                         ({"stop_loss": 5}, "sell_rules.stop_loss")):
        with pytest.raises(AccountsFileError, match=rf"entry #1 \('x'\): field '{field}'"):
            parse_accounts([{**base, "sell_rules": rules}])


async def test_stop_loss_sells_once_across_passes_and_restarts(gateway, standin, session_factory, caplog):
    _, gw = gateway
    sells_module = gw.sells
    assert sells_module is not None and "rules-a" in sells_module.workers
    hold(standin, "PKRULES", "SLX", 10, "100", "100")
    await asyncio.to_thread(sells_module.run_once, "rules-a")
    assert sells(standin, "PKRULES", "SLX") == []  # inside the band

    set_price(standin, "SLX", "94.50")  # 5.5 % below the average entry price: stop-loss (5 %)
    with caplog.at_level(logging.INFO):
        await asyncio.to_thread(sells_module.run_once, "rules-a")
        await asyncio.to_thread(sells_module.run_once, "rules-a")
    placed = sells(standin, "PKRULES", "SLX")
    assert len(placed) == 1 and Decimal(placed[0]["qty"]) == 10 and placed[0]["client_order_id"].startswith("sell-")
    assert "SLX" not in standin.accounts["PKRULES"].positions

    # the sell went through the order path: balance check, timing, its log line
    order_lines = [json.loads(r.getMessage().split(" ", 2)[2]) for r in caplog.records
                   if r.name == "bsopt_broker.alpaca" and r.getMessage().startswith("alpaca order ")]
    assert any(line["client_order_id"] == placed[0]["client_order_id"] and line["filled_ms"] >= 0
               for line in order_lines)
    decided = [r for r in caplog.records if r.name == "bsopt_broker.sell" and "sell decision" in r.getMessage()]
    assert len(decided) == 1
    line = json.loads(decided[0].getMessage().split(" ", 2)[2])
    assert line["rule"] == "stop_loss" and line["outcome"] == "sold" and line["kind"] == "paper"
    assert Decimal(line["price"]) == Decimal("94.50") and line["quantity"] == 10 and line["threshold_pct"] == "5"
    assert line["timing_ms"]["balance_checked"] >= 0
    assert ("PKRULES", "GET", "/v2/account") in standin.requests

    [event] = decisions(session_factory, "rules-a", "SLX")
    assert (event.rule, event.outcome, event.quantity, event.threshold_pct) == ("stop_loss", "sold", 10, 5.0)
    assert codec.money_from_pb(event, "price") == Money.of("94.50", "USD")
    assert codec.money_from_pb(event, "average_price") == Money.of(100, "USD")
    assert event.account_kind == pb.ACCOUNT_KIND_PAPER and event.user_id == "trader-a"
    assert event.decision_id == placed[0]["client_order_id"] and event.order_id == placed[0]["id"]

    # The same position snapshot again (e.g. the sell's answer was lost): the worker restarts,
    # a fresh module (a process restart: nothing in memory) evaluates twice: no second order.
    hold(standin, "PKRULES", "SLX", 10, "100", "94.50")
    await asyncio.to_thread(sells_module.stop)
    await asyncio.to_thread(sells_module.start)
    assert gw.router is not None
    fresh = SellModule(gw.router, gw._alpaca[1], LatestTradePrices.from_accounts(gw._alpaca[1]), session_factory,
                       Outbox(models.SCHEMA))
    await asyncio.to_thread(fresh.run_once, "rules-a")
    await asyncio.to_thread(fresh.run_once, "rules-a")
    await asyncio.to_thread(sells_module.run_once, "rules-a")
    assert len(sells(standin, "PKRULES", "SLX")) == 1
    assert len(decisions(session_factory, "rules-a", "SLX")) == 1
    with standin.lock:
        standin.accounts["PKRULES"].positions.pop("SLX", None)


async def test_take_profit_sells_once(gateway, standin, session_factory):
    _, gw = gateway
    assert gw.sells is not None
    hold(standin, "PKRULES", "TPX", 4, "50", "55.50")  # +11 %: take-profit (10 %)
    await asyncio.to_thread(gw.sells.run_once, "rules-a")
    await asyncio.to_thread(gw.sells.run_once, "rules-a")
    assert len(sells(standin, "PKRULES", "TPX")) == 1
    [event] = decisions(session_factory, "rules-a", "TPX")
    assert (event.rule, event.outcome, event.quantity, event.threshold_pct) == ("take_profit", "sold", 4, 10.0)
    assert codec.money_from_pb(event, "average_price") == Money.of(50, "USD")


async def test_a_position_inside_the_band_is_left_alone(gateway, standin, session_factory):
    _, gw = gateway
    assert gw.sells is not None
    hold(standin, "PKRULES", "BND", 3, "100", "104.99")
    await asyncio.to_thread(gw.sells.run_once, "rules-a")
    set_price(standin, "BND", "95.01")
    await asyncio.to_thread(gw.sells.run_once, "rules-a")
    assert sells(standin, "PKRULES", "BND") == [] and decisions(session_factory, "rules-a", "BND") == []
    assert standin.accounts["PKRULES"].positions["BND"] == (3, Decimal(100))
    with standin.lock:
        standin.accounts["PKRULES"].positions.pop("BND")


async def test_close_all_returns_before_the_sells(gateway, standin, session_factory, test_issuer):
    target, _ = gateway
    hold(standin, "PKCLOSE", "CA1", 3, "50", "51")
    hold(standin, "PKCLOSE", "CA2", 7, "20", "10")
    standin.accounts["PKCLOSE"].delay_s = 0.3  # every answer of the account is slow
    try:
        started = time.monotonic()
        resp = await call(target, "CloseAllPositions", pb.CloseAllPositionsRequest(account_id="close-a"),
                          token(test_issuer, "trader-a"))
        elapsed = time.monotonic() - started
        assert resp.request_id and elapsed < 0.3, elapsed
        assert sells(standin, "PKCLOSE", "CA1") == sells(standin, "PKCLOSE", "CA2") == []
        await wait_until(lambda: not standin.accounts["PKCLOSE"].positions)
        await wait_until(lambda: len(decisions(session_factory, "close-a")) == 2)
    finally:
        standin.accounts["PKCLOSE"].delay_s = 0.0
    assert len(sells(standin, "PKCLOSE", "CA1")) == 1 and len(sells(standin, "PKCLOSE", "CA2")) == 1
    events = decisions(session_factory, "close-a")
    assert {(e.symbol, e.rule, e.outcome, e.quantity, e.request_id) for e in events} == {
        ("CA1", "close_all", "sold", 3, resp.request_id), ("CA2", "close_all", "sold", 7, resp.request_id)}


async def test_sell_rules_set_through_the_api_are_applied_by_the_worker(gateway, standin, session_factory,
                                                                        test_issuer):
    target, gw = gateway
    tok = token(test_issuer, "trader-a")
    hold(standin, "PKAPI", "APX", 2, "100", "100")
    rules = await call(target, "SetSellRules", pb.SetSellRulesRequest(account_id="api-a", stop_loss_pct=3), tok)
    assert rules.account_id == "api-a" and rules.stop_loss_pct == 3.0 and not rules.HasField("take_profit_pct")
    with session_factory() as s:
        row = s.execute(select(models.sell_rules).where(models.sell_rules.c.account_id == "api-a")).one()
    assert (row.user_id, row.stop_loss_pct, row.take_profit_pct) == ("trader-a", 3.0, None)
    assert gw.sells is not None and "api-a" in gw.sells.workers
    set_price(standin, "APX", "96.50")
    # the worker's next pass is check_interval_s (default 5 s) away: re-setting the rule wakes it
    await call(target, "SetSellRules", pb.SetSellRulesRequest(account_id="api-a", stop_loss_pct=3), tok)
    await wait_until(lambda: len(decisions(session_factory, "api-a", "APX")) == 1)
    assert len(sells(standin, "PKAPI", "APX")) == 1


async def test_sell_rpcs_refuse_bad_input(gateway, test_issuer):
    target, _ = gateway
    other = token(test_issuer, "trader-b")
    for method, request in (("SetSellRules", pb.SetSellRulesRequest(account_id="rules-a", stop_loss_pct=5)),
                            ("CloseAllPositions", pb.CloseAllPositionsRequest(account_id="rules-a")),
                            ("CloseAllPositions", pb.CloseAllPositionsRequest(account_id="no-such-account"))):
        err = await refused(target, method, request, other)
        assert err.code() == grpc.StatusCode.NOT_FOUND, (method, err.details())
    owner = token(test_issuer, "trader-a")
    for request in (pb.SetSellRulesRequest(account_id="api-a", stop_loss_pct=100),
                    pb.SetSellRulesRequest(account_id="api-a", take_profit_pct=0),
                    pb.SetSellRulesRequest(account_id="api-a", stop_loss_pct=float("nan"))):
        err = await refused(target, "SetSellRules", request, owner)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "pct" in err.details()
    err = await refused(target, "CloseAllPositions", pb.CloseAllPositionsRequest(account_id="ro-a"), owner)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "read-only" in err.details()


async def test_a_read_only_accounts_sell_is_refused_logged_and_not_retried(gateway, standin, session_factory,
                                                                           caplog):
    _, gw = gateway
    assert gw.sells is not None
    hold(standin, "PKRO", "ROX", 3, "100", "80")
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            await asyncio.to_thread(gw.sells.run_once, "ro-a")
    assert standin.accounts["PKRO"].orders == {}
    assert not any(k == "PKRO" and m == "POST" for k, m, _ in standin.requests)
    [event] = decisions(session_factory, "ro-a", "ROX")
    assert (event.rule, event.outcome) == ("stop_loss", "refused") and "read-only" in event.reason
    warned = [r for r in caplog.records if r.name == "bsopt_broker.sell" and r.levelno == logging.WARNING
              and "ro-a" in r.getMessage()]
    assert len(warned) == 1 and '"outcome": "refused"' in warned[0].getMessage()


async def test_a_reload_restarts_the_workers_for_the_new_pool(gateway, standin, accounts):
    _, gw = gateway
    assert gw.sells is not None
    original = accounts.read_text(encoding="utf-8")
    standin.add_account("PKNEW", "sell-secret", cash=100_000)
    document = yaml.safe_load(original)
    document["accounts"] = [e for e in document["accounts"] if e["name"] != "ro-a"] + [
        entry(standin, "new-a", "trader-a", "PKNEW", sell_rules={"take_profit_pct": 1, "check_interval_s": SLOW})]
    accounts.write_text(yaml.safe_dump(document), encoding="utf-8")
    try:
        assert await asyncio.to_thread(gw.reload_accounts)
        assert {"rules-a", "new-a"} <= gw.sells.workers and "ro-a" not in gw.sells.workers
        hold(standin, "PKNEW", "NWX", 2, "100", "102")
        await asyncio.to_thread(gw.sells.run_once, "new-a")
        assert len(sells(standin, "PKNEW", "NWX")) == 1
    finally:
        accounts.write_text(original, encoding="utf-8")
        assert await asyncio.to_thread(gw.reload_accounts)
    assert "new-a" not in gw.sells.workers and "ro-a" in gw.sells.workers
    # the old pool's threads ended (stop() joins them)
    assert "sell-new-a" not in {t.name for t in threading.enumerate()}
