"""The Alpaca venue wired into broker-gateway: real gRPC server, real Postgres, the Kafka-
protocol broker, the local Alpaca stand-in over real HTTP, alpaca-py as the client."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml  # type: ignore[import-untyped]
from aiokafka import AIOKafkaConsumer

from bsopt.broker_gateway.v1 import broker_gateway_pb2 as pb
from bsopt.broker_gateway.v1 import broker_gateway_pb2_grpc as pb_grpc
from bsopt.broker_gateway.v1 import events_pb2
from bsopt_broker.adapters.alpaca.accounts import AccountsFileError
from bsopt_broker.bootstrap import BrokerGateway
from bsopt_broker.config import BrokerSettings
from bsopt_broker.domain.records import AccountKind, Fill
from bsopt_broker.trade_import import trade_imported
from bsopt_common import codec
from bsopt_common.money import Money
from bsopt_common.settings import BROKER_GATEWAY_AUDIENCE
from bsopt_common.testing.grpc_calls import grpc_calls
from bsopt_common.testing.identity import service_identity, service_identity_env
from bsopt_common.testing.services import ServiceThread, free_port, wait_for_port
from bsopt_common.testing.standins import alpaca_standin_module
from bsopt_common.vocabulary import Side

SCOPES = "broker:accounts broker:orders broker:import"


def entry(standin: Any, name: str, owner: str, key: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "broker": "alpaca", "owner": owner, "api_key_id": key,
            "api_secret_key_env": "ALPACA_WIRING_TEST_SECRET", "base_url": standin.base_url, **extra}


def write_accounts(path: Path, entries: list[dict[str, Any]]) -> None:
    path.write_text(yaml.safe_dump({"accounts": entries}), encoding="utf-8")


@pytest.fixture(scope="module")
def standin() -> Iterator[Any]:
    s = alpaca_standin_module().AlpacaStandin()
    for key, cash in (("PKALICE", 20_000), ("AKBOB", 100_000), ("PKCAROL", 30_000)):
        s.add_account(key, "wiring-secret", cash=cash)
    with s.serving():
        yield s


@pytest.fixture(scope="module")
def accounts_file(tmp_path_factory: pytest.TempPathFactory, standin: Any) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("accounts") / "accounts.yaml"
    write_accounts(path, [entry(standin, "alice-paper", "trader-a", "PKALICE"),
                          entry(standin, "bob-live", "trader-b", "AKBOB")])
    os.environ["ALPACA_WIRING_TEST_SECRET"] = "wiring-secret"
    yield path
    os.environ.pop("ALPACA_WIRING_TEST_SECRET", None)


def settings_for(service_database_urls: dict[str, str], kafka_bootstrap: str, test_issuer: Any,
                 accounts_file: Path | None, port: int) -> BrokerSettings:
    return BrokerSettings(database_url=service_database_urls["broker-gateway"],
                          kafka_bootstrap_servers=kafka_bootstrap, port=port, accounts_file=accounts_file,
                          **service_identity(test_issuer, "broker-gateway"))


@pytest.fixture(scope="module")
def gateway(service_database_urls, kafka_bootstrap, test_issuer, accounts_file) -> Iterator[tuple[str, BrokerGateway]]:
    port = free_port()
    gw = BrokerGateway(settings_for(service_database_urls, kafka_bootstrap, test_issuer, accounts_file, port))
    with ServiceThread(gw.run, port=port):
        yield f"127.0.0.1:{port}", gw


def token(issuer: Any, user: str) -> str:
    """A user's token exchanged for broker-gateway by resource-api (RFC 8693)."""
    return issuer.token(aud=BROKER_GATEWAY_AUDIENCE, scope=SCOPES, client_id="resource-api", sub=user,
                        act={"sub": "resource-api"})


call, refused = grpc_calls(pb_grpc.BrokerGatewayServiceStub)


def usd(amount: int) -> Any:
    return codec.money_pb(Money.of(amount, "USD"))


async def test_alpaca_account_and_order_through_grpc(gateway, test_issuer, standin):
    target, _ = gateway
    tok = token(test_issuer, "trader-a")
    account = await call(target, "GetAccount", pb.GetAccountRequest(account_id="alice-paper"), tok)
    assert account.broker == "alpaca" and account.account_kind == pb.ACCOUNT_KIND_PAPER
    assert account.user_id == "trader-a"
    assert codec.money_from_pb(account, "cash") == Money.of(20_000, "USD")

    order = pb.PlaceOrderRequest(account_id="alice-paper", client_order_id="wiring-1", symbol="AAPL",
                                 side=pb.SIDE_BUY, quantity=10)  # no as_of: Alpaca trades now
    resp = await call(target, "PlaceOrder", order, tok)
    assert resp.order.status == pb.ORDER_STATUS_FILLED and resp.order.account_kind == pb.ACCOUNT_KIND_PAPER
    assert [(f.quantity, codec.money_from_pb(f, "price")) for f in resp.fills] == [(10, Money.of(100, "USD"))]
    assert all(f.account_kind == pb.ACCOUNT_KIND_PAPER for f in resp.fills)
    assert resp.account.account_kind == pb.ACCOUNT_KIND_PAPER and resp.account.broker == "alpaca"
    assert codec.money_from_pb(resp.account, "cash") == Money.of(19_000, "USD")
    assert [(p.symbol, p.quantity) for p in resp.account.positions] == [("AAPL", 10)]
    # the balance check priced the order from the market-data endpoint, through alpaca-py
    assert ("PKALICE", "GET", "/v2/stocks/trades/latest") in standin.requests
    assert len(standin.accounts["PKALICE"].orders) == 1


@pytest.mark.parametrize("symbol, quantity, reason", [
    ("ZZZZ", 1, "no latest trade of symbol 'ZZZZ'"),
    ("", 1, "symbol is required"),
    ("AAPL", 0, "quantity must be a positive whole number"),
])
async def test_bad_alpaca_orders_are_invalid_argument(gateway, test_issuer, standin, symbol, quantity, reason):
    target, _ = gateway
    before = len(standin.accounts["PKALICE"].orders)
    err = await refused(target, "PlaceOrder", pb.PlaceOrderRequest(
        account_id="alice-paper", client_order_id=f"bad-{symbol}-{quantity}", symbol=symbol, side=pb.SIDE_BUY,
        quantity=quantity), token(test_issuer, "trader-a"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and reason in err.details()
    assert len(standin.accounts["PKALICE"].orders) == before


async def test_market_data_failures(gateway, test_issuer, standin):
    """The price source retries a passing 503 and answers UNAVAILABLE when it lasts."""
    target, _ = gateway
    tok = token(test_issuer, "trader-a")
    path = "/v2/stocks/trades/latest"
    standin.fail_next("PKALICE", 503, times=1, method="GET", path=path)
    resp = await call(target, "PlaceOrder", pb.PlaceOrderRequest(
        account_id="alice-paper", client_order_id="md-1", symbol="AAPL", side=pb.SIDE_BUY, quantity=1), tok)
    assert resp.order.status == pb.ORDER_STATUS_FILLED
    before = len(standin.accounts["PKALICE"].orders)
    standin.fail_next("PKALICE", 503, times=10, method="GET", path=path)
    try:
        err = await refused(target, "PlaceOrder", pb.PlaceOrderRequest(
            account_id="alice-paper", client_order_id="md-2", symbol="AAPL", side=pb.SIDE_BUY, quantity=1), tok)
    finally:
        standin.clear_failures("PKALICE")
    assert err.code() == grpc.StatusCode.UNAVAILABLE and "market data" in err.details()
    assert len(standin.accounts["PKALICE"].orders) == before


async def test_paper_accounts_say_paper(gateway, test_issuer):
    target, _ = gateway
    tok = token(test_issuer, "trader-a")
    acct = await call(target, "CreateAccount", pb.CreateAccountRequest(initial_cash=usd(10_000)), tok)
    assert acct.broker == "paper" and acct.account_kind == pb.ACCOUNT_KIND_PAPER
    again = await call(target, "GetAccount", pb.GetAccountRequest(account_id=acct.account_id), tok)
    assert again.account_kind == pb.ACCOUNT_KIND_PAPER
    ts = codec.timestamp(datetime(2017, 1, 3, tzinfo=UTC))
    resp = await call(target, "PlaceOrder", pb.PlaceOrderRequest(
        account_id=acct.account_id, client_order_id="p-1", symbol="GOOGL", side=pb.SIDE_BUY, quantity=1,
        as_of=ts), tok)
    assert resp.order.account_kind == resp.fills[0].account_kind == pb.ACCOUNT_KIND_PAPER
    # paper orders still need the historical bar
    err = await refused(target, "PlaceOrder", pb.PlaceOrderRequest(
        account_id=acct.account_id, client_order_id="p-2", symbol="GOOGL", side=pb.SIDE_BUY, quantity=1), tok)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "as_of" in err.details()


async def test_alpaca_accounts_cannot_be_created(gateway, test_issuer):
    target, _ = gateway
    err = await refused(target, "CreateAccount", pb.CreateAccountRequest(broker="alpaca", initial_cash=usd(1)),
                        token(test_issuer, "trader-a"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "BSOPT_BROKER_ACCOUNTS_FILE" in err.details()


async def test_another_users_alpaca_account_is_not_found(gateway, test_issuer, standin):
    target, _ = gateway
    tok = token(test_issuer, "trader-b")
    err = await refused(target, "GetAccount", pb.GetAccountRequest(account_id="alice-paper"), tok)
    assert err.code() == grpc.StatusCode.NOT_FOUND
    before = len(standin.accounts["PKALICE"].orders)
    err = await refused(target, "PlaceOrder", pb.PlaceOrderRequest(
        account_id="alice-paper", client_order_id="steal-1", symbol="AAPL", side=pb.SIDE_BUY, quantity=1), tok)
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert len(standin.accounts["PKALICE"].orders) == before


async def test_live_account_without_allow_live(gateway, test_issuer, standin):
    target, _ = gateway
    tok = token(test_issuer, "trader-b")
    account = await call(target, "GetAccount", pb.GetAccountRequest(account_id="bob-live"), tok)
    assert account.account_kind == pb.ACCOUNT_KIND_LIVE and account.broker == "alpaca"
    err = await refused(target, "PlaceOrder", pb.PlaceOrderRequest(
        account_id="bob-live", client_order_id="live-1", symbol="AAPL", side=pb.SIDE_BUY, quantity=1), tok)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "allow_live" in err.details()
    assert standin.accounts["AKBOB"].orders == {}


async def test_import_of_a_live_account_is_recorded_as_alpaca_and_live(gateway, test_issuer, standin,
                                                                        kafka_bootstrap):
    target, _ = gateway
    start, end = datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC)
    standin.seed_fills("AKBOB", 3, start, end)
    window = pb.ImportTradesRequest(account_id="bob-live", start=codec.timestamp(start), end=codec.timestamp(end))
    result = await call(target, "ImportTrades", window, token(test_issuer, "trader-b"))
    assert (result.trades_imported, result.duplicates_skipped) == (3, 0)
    err = await refused(target, "ImportTrades", window, token(test_issuer, "trader-a"))
    assert err.code() == grpc.StatusCode.NOT_FOUND

    consumer = AIOKafkaConsumer("trades.imported.v1", bootstrap_servers=kafka_bootstrap,
                                auto_offset_reset="earliest")  # no group: every partition
    await consumer.start()
    try:
        seen: dict[str, events_pb2.TradeImported] = {}
        deadline = asyncio.get_running_loop().time() + 20
        while len(seen) < 3 and asyncio.get_running_loop().time() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=500)).values():
                for m in msgs:
                    ev = events_pb2.TradeImported.FromString(m.value)
                    if ev.account_id == "bob-live":
                        seen[ev.trade_id] = ev
    finally:
        await consumer.stop()
    assert len(seen) == 3
    assert {(ev.broker, ev.account_kind, ev.user_id) for ev in seen.values()} == {
        ("alpaca", pb.ACCOUNT_KIND_LIVE, "trader-b")}


def test_trade_imported_event_carries_the_kind():
    fill = Fill(trade_id="t-1", order_id="o-1", account_id="bob-live", symbol="AAPL", side=Side.BUY, quantity=1,
                price=Money.of(100, "USD"), fee=Money.of(0, "USD"), executed_at=datetime.now(UTC),
                account_kind=AccountKind.LIVE)
    event = trade_imported(fill, "trader-b", "alpaca", "imp-1")
    assert isinstance(event, events_pb2.TradeImported) and event.account_kind == pb.ACCOUNT_KIND_LIVE
    paper = Fill(trade_id="t-2", order_id="o-2", account_id="a", symbol="AAPL", side=Side.SELL, quantity=1,
                 price=Money.of(1, "USD"), fee=Money.of(0, "USD"), executed_at=datetime.now(UTC))
    assert trade_imported(paper, "u", "paper", "imp-2").account_kind == pb.ACCOUNT_KIND_PAPER


async def test_reload_adds_accounts_and_an_invalid_file_keeps_them(gateway, test_issuer, standin, accounts_file,
                                                                   caplog):
    target, gw = gateway
    carol = token(test_issuer, "trader-c")
    err = await refused(target, "GetAccount", pb.GetAccountRequest(account_id="carol"), carol)
    assert err.code() == grpc.StatusCode.NOT_FOUND
    original = accounts_file.read_text(encoding="utf-8")
    try:
        entries = yaml.safe_load(original)["accounts"]
        write_accounts(accounts_file, [*entries, entry(standin, "carol", "trader-c", "PKCAROL")])
        assert gw.reload_accounts()
        account = await call(target, "GetAccount", pb.GetAccountRequest(account_id="carol"), carol)
        assert account.broker == "alpaca" and codec.money_from_pb(account, "cash") == Money.of(30_000, "USD")

        bad = [*entries, {k: v for k, v in entry(standin, "dave", "trader-d", "PKDAVE").items() if k != "owner"}]
        write_accounts(accounts_file, bad)
        with caplog.at_level(logging.ERROR, logger="bsopt_broker.bootstrap"):
            assert not gw.reload_accounts()
        messages = [r.getMessage() for r in caplog.records if r.name == "bsopt_broker.bootstrap"]
        assert any("entry #3 ('dave')" in m and "'owner'" in m for m in messages), messages
        assert not any("wiring-secret" in m for m in messages)
        # the accounts in use stay: carol and alice still answer
        await call(target, "GetAccount", pb.GetAccountRequest(account_id="carol"), carol)
        await call(target, "GetAccount", pb.GetAccountRequest(account_id="alice-paper"),
                   token(test_issuer, "trader-a"))
    finally:
        accounts_file.write_text(original, encoding="utf-8")
        gw.reload_accounts()


def test_malformed_accounts_file_stops_start_up(tmp_path, standin, service_database_urls, kafka_bootstrap,
                                                 test_issuer, monkeypatch):
    monkeypatch.setenv("ALPACA_WIRING_TEST_SECRET", "wiring-secret")
    path = tmp_path / "accounts.yaml"
    write_accounts(path, [entry(standin, "alice-paper", "trader-a", "PKALICE"),
                          {"name": "nokey", "broker": "alpaca", "owner": "x", "api_secret_key": "s"}])
    settings = settings_for(service_database_urls, kafka_bootstrap, test_issuer, path, free_port())
    with pytest.raises(AccountsFileError, match=r"entry #2 \('nokey'\): field 'api_key_id' is missing"):
        BrokerGateway(settings)
    write_accounts(path, [entry(standin, "alice-paper", "trader-a", "PKALICE",
                                api_secret_key_env="ALPACA_WIRING_UNSET_SECRET")])
    os.environ.pop("ALPACA_WIRING_UNSET_SECRET", None)
    with pytest.raises(AccountsFileError, match=r"entry #1 \('alice-paper'\): field 'api_secret_key_env': "
                                                r"environment variable 'ALPACA_WIRING_UNSET_SECRET' is not set"):
        BrokerGateway(settings)
    write_accounts(path, [entry(standin, "alice-paper", "trader-a", "PKALICE"),
                          {"name": "nokey", "broker": "alpaca", "owner": "x", "api_secret_key": "s"}])

    env = {**os.environ, "BSOPT_BROKER_ACCOUNTS_FILE": str(path), "ALPACA_WIRING_TEST_SECRET": "wiring-secret",
           "DATABASE_URL": service_database_urls["broker-gateway"], "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
           "BSOPT_BROKER_PORT": str(free_port()), **service_identity_env(test_issuer, "broker-gateway",
                                                                         "BSOPT_BROKER_")}
    proc = subprocess.run([sys.executable, "-m", "bsopt_broker"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "entry #2 ('nokey'): field 'api_key_id' is missing" in proc.stderr
    assert "Traceback" not in proc.stderr and "wiring-secret" not in proc.stderr


async def test_sighup_reloads_the_accounts_file(tmp_path, standin, service_database_urls, kafka_bootstrap,
                                                test_issuer, monkeypatch):
    monkeypatch.setenv("ALPACA_WIRING_TEST_SECRET", "wiring-secret")
    path = tmp_path / "accounts.yaml"
    write_accounts(path, [entry(standin, "alice-paper", "trader-a", "PKALICE")])
    port = free_port()
    env = {**os.environ, "BSOPT_BROKER_ACCOUNTS_FILE": str(path), "ALPACA_WIRING_TEST_SECRET": "wiring-secret",
           "DATABASE_URL": service_database_urls["broker-gateway"], "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
           "BSOPT_BROKER_PORT": str(port), **service_identity_env(test_issuer, "broker-gateway", "BSOPT_BROKER_")}
    proc = subprocess.Popen([sys.executable, "-m", "bsopt_broker"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for_port(port, timeout_seconds=60)
        target, carol = f"127.0.0.1:{port}", token(test_issuer, "trader-c")
        err = await refused(target, "GetAccount", pb.GetAccountRequest(account_id="carol"), carol)
        assert err.code() == grpc.StatusCode.NOT_FOUND
        write_accounts(path, [entry(standin, "alice-paper", "trader-a", "PKALICE"),
                              entry(standin, "carol", "trader-c", "PKCAROL")])
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while True:
            try:
                account = await call(target, "GetAccount", pb.GetAccountRequest(account_id="carol"), carol)
                break
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert account.broker == "alpaca" and account.account_kind == pb.ACCOUNT_KIND_PAPER
        assert proc.poll() is None  # SIGHUP did not end it
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_swap_lets_an_order_in_flight_finish_and_serialises_the_next(standin, accounts_file):
    """The router's pool swap: an order in flight finishes on the old pool, the next order
    of the same account (on the new pool) waits for it, nothing is placed twice."""
    from concurrent.futures import ThreadPoolExecutor

    from bsopt_broker.adapters.alpaca.accounts import load_accounts
    from bsopt_broker.adapters.router import VenueRouter
    from bsopt_broker.bootstrap import alpaca_venue
    from bsopt_broker.domain.records import MarketOrder

    class NoPaper:
        name = "paper"

    standin.add_account("PKSWAP", "wiring-secret", cash=50_000)
    path = accounts_file.with_name("swap.yaml")
    write_accounts(path, [entry(standin, "swap", "trader-s", "PKSWAP")])
    accounts = load_accounts(path)
    router = VenueRouter(NoPaper(), alpaca_venue(accounts), accounts)  # type: ignore[arg-type]
    router.get_account("swap", "trader-s")  # detected and connected before the race

    def order(cid: str) -> Any:
        return router.submit_market_order(MarketOrder(account_id="swap", user_id="trader-s", client_order_id=cid,
                                                      symbol="AAPL", side=Side.BUY, quantity=1,
                                                      as_of=datetime.now(UTC)))

    standin.accounts["PKSWAP"].delay_s = 0.4
    with ThreadPoolExecutor(max_workers=2) as pool:
        first = pool.submit(order, "swap-1")
        time.sleep(0.2)  # swap-1 in flight on the old pool
        new = load_accounts(path)
        router.replace_alpaca(alpaca_venue(new), new)
        second = pool.submit(order, "swap-2")
        a, b = first.result(timeout=30), second.result(timeout=30)
    assert a.order.status == b.order.status == "FILLED" and a.order.order_id != b.order.order_id
    history = standin.accounts["PKSWAP"].history
    assert [h["order_id"] for h in history] == [a.order.order_id, b.order.order_id]
    assert b.timing.received_ns >= a.timing.filled_ns  # the second started only once the first was done
    assert a.account.account_kind is b.order.account_kind is AccountKind.PAPER
