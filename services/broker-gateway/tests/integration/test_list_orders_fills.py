"""ListOrders / ListFills over real gRPC with real Postgres: paper accounts read from the
database, Alpaca accounts (paper and live) from the local stand-in over real HTTP."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import psycopg
import pytest
import yaml  # type: ignore[import-untyped]
from google.protobuf.timestamp_pb2 import Timestamp

from bsopt.broker_gateway.v1 import broker_gateway_pb2 as pb
from bsopt.broker_gateway.v1 import broker_gateway_pb2_grpc as pb_grpc
from bsopt_broker.bootstrap import BrokerGateway
from bsopt_broker.config import BrokerSettings
from bsopt_common import codec
from bsopt_common.money import Money
from bsopt_common.settings import BROKER_GATEWAY_AUDIENCE
from bsopt_common.testing.grpc_calls import grpc_calls
from bsopt_common.testing.identity import service_identity
from bsopt_common.testing.services import ServiceThread, free_port
from bsopt_common.testing.standins import alpaca_standin_module

SCOPES = "broker:accounts broker:orders broker:import"
SECRET_ENV = "ALPACA_LISTING_TEST_SECRET"
# Trading days of the bundled GOOGL bars.
DAYS = ["2017-03-01", "2017-03-02", "2017-03-03", "2017-03-06", "2017-03-07", "2017-03-08", "2017-03-09"]


@pytest.fixture(scope="module")
def standin() -> Iterator[Any]:
    s = alpaca_standin_module().AlpacaStandin()
    s.add_account("PKLISTPAPER", "listing-secret", cash=50_000)
    s.add_account("AKLISTLIVE", "listing-secret", cash=50_000)
    s.add_account("PKLISTTIMED", "listing-secret", cash=50_000)
    start = datetime(2024, 3, 4, 14, 30, tzinfo=UTC)
    s.seed_fills("PKLISTPAPER", 5, start, start + timedelta(days=3))
    s.seed_fills("AKLISTLIVE", 7, start, start + timedelta(days=3), fills_per_order=2)
    with s.serving():
        yield s


@pytest.fixture(scope="module")
def gateway(service_database_urls, kafka_bootstrap, test_issuer, standin, tmp_path_factory) -> Iterator[str]:
    path = tmp_path_factory.mktemp("listing") / "accounts.yaml"
    entries = [{"name": name, "broker": "alpaca", "owner": "lister-alpaca", "api_key_id": key,
                "api_secret_key_env": SECRET_ENV, "base_url": standin.base_url}
               for name, key in (("list-paper", "PKLISTPAPER"), ("list-live", "AKLISTLIVE"),
                                 ("list-timed", "PKLISTTIMED"))]
    path.write_text(yaml.safe_dump({"accounts": entries}), encoding="utf-8")
    os.environ[SECRET_ENV] = "listing-secret"
    port = free_port()
    settings = BrokerSettings(database_url=service_database_urls["broker-gateway"],
                              kafka_bootstrap_servers=kafka_bootstrap, port=port, accounts_file=path,
                              **service_identity(test_issuer, "broker-gateway"))
    gw = BrokerGateway(settings)
    try:
        with ServiceThread(gw.run, port=port):
            yield f"127.0.0.1:{port}"
    finally:
        os.environ.pop(SECRET_ENV, None)


call, _ = grpc_calls(pb_grpc.BrokerGatewayServiceStub)


def token(issuer: Any, user: str) -> str:
    return issuer.token(aud=BROKER_GATEWAY_AUDIENCE, scope=SCOPES, client_id="resource-api", sub=user,
                        act={"sub": "resource-api"})


def ts(day: str) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(datetime.fromisoformat(day).replace(tzinfo=UTC))
    return t


async def paper_account_with_orders(target: str, tok: str, n: int = len(DAYS)) -> str:
    acct = await call(target, "CreateAccount",
                      pb.CreateAccountRequest(initial_cash=codec.money_pb(Money.of(100_000, "USD"))), tok)
    for i, day in enumerate(DAYS[:n]):
        await call(target, "PlaceOrder", pb.PlaceOrderRequest(
            account_id=acct.account_id, client_order_id=f"list-{i}", symbol="GOOGL", side=pb.SIDE_BUY,
            quantity=1 + i, as_of=ts(day)), tok)
    return str(acct.account_id)


async def all_pages(target: str, method: str, request: Any, tok: str, field: str) -> tuple[list[Any], int]:
    items: list[Any] = []
    pages = 0
    while True:
        resp = await call(target, method, request, tok)
        pages += 1
        items.extend(getattr(resp, field))
        if not resp.next_page_token:
            return items, pages
        request.page_token = resp.next_page_token
        assert pages < 100


async def refused(target: str, method: str, request: Any, tok: str) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(target, method, request, tok)
    return err.value.code()


async def test_paper_orders_and_fills_page_newest_first_and_say_paper(gateway, test_issuer):
    tok = token(test_issuer, "lister-1")
    account_id = await paper_account_with_orders(gateway, tok)

    orders, pages = await all_pages(gateway, "ListOrders", pb.ListOrdersRequest(account_id=account_id, page_size=3),
                                    tok, "orders")
    assert pages == 3
    assert [o.client_order_id for o in orders] == [f"list-{i}" for i in reversed(range(len(DAYS)))]
    assert len({o.order_id for o in orders}) == len(DAYS)
    times = [(o.submitted_at.ToDatetime(), o.order_id) for o in orders]
    assert times == sorted(times, reverse=True)
    for o in orders:
        assert o.account_kind == pb.ACCOUNT_KIND_PAPER
        assert o.status == pb.ORDER_STATUS_FILLED and o.symbol == "GOOGL" and o.side == pb.SIDE_BUY
        assert o.filled_quantity == o.quantity
        assert codec.money_from_pb(o, "average_price").currency == "USD"
        assert codec.money_from_pb(o, "fee").amount > 0
        assert o.HasField("filled_at") and o.fill_latency_ms >= 0

    fills, _ = await all_pages(gateway, "ListFills", pb.ListFillsRequest(account_id=account_id, page_size=2),
                               tok, "fills")
    assert len(fills) == len(DAYS) == len({f.trade_id for f in fills})
    assert [f.executed_at.ToDatetime().date().isoformat() for f in fills] == list(reversed(DAYS))
    for f in fills:
        assert f.account_kind == pb.ACCOUNT_KIND_PAPER
        assert f.client_order_id.startswith("list-")
        assert codec.money_from_pb(f, "price").amount > 0
    by_order = {o.order_id: o for o in orders}
    for f in fills:
        assert codec.money_from_pb(f, "price") == codec.money_from_pb(by_order[f.order_id], "average_price")

    # default page size holds them all; a window [since, until) over executed_at
    one = await call(gateway, "ListFills", pb.ListFillsRequest(account_id=account_id), tok)
    assert len(one.fills) == len(DAYS) and one.next_page_token == ""
    window = await call(gateway, "ListFills", pb.ListFillsRequest(
        account_id=account_id, since=ts("2017-03-02"), until=ts("2017-03-07")), tok)
    assert [f.executed_at.ToDatetime().date().isoformat() for f in window.fills] == [
        "2017-03-06", "2017-03-03", "2017-03-02"]


async def test_rejected_orders_are_listed_without_fills(gateway, test_issuer):
    tok = token(test_issuer, "lister-2")
    account_id = await paper_account_with_orders(gateway, tok, n=1)
    with pytest.raises(grpc.aio.AioRpcError):
        await call(gateway, "PlaceOrder", pb.PlaceOrderRequest(
            account_id=account_id, client_order_id="too-big", symbol="GOOGL", side=pb.SIDE_BUY,
            quantity=10_000, as_of=ts("2017-03-02")), tok)
    resp = await call(gateway, "ListOrders", pb.ListOrdersRequest(account_id=account_id), tok)
    assert [o.client_order_id for o in resp.orders] == ["too-big", "list-0"]
    rejected = resp.orders[0]
    assert rejected.status == pb.ORDER_STATUS_REJECTED and rejected.reject_reason
    assert rejected.filled_quantity == 0 and not rejected.HasField("average_price")
    assert rejected.account_kind == pb.ACCOUNT_KIND_PAPER


async def test_alpaca_live_and_paper_accounts_say_their_kind(gateway, test_issuer):
    tok = token(test_issuer, "lister-alpaca")
    for account_id, kind, count in (("list-live", pb.ACCOUNT_KIND_LIVE, 7), ("list-paper", pb.ACCOUNT_KIND_PAPER, 5)):
        fills, pages = await all_pages(gateway, "ListFills", pb.ListFillsRequest(account_id=account_id, page_size=2),
                                       tok, "fills")
        assert len(fills) == count == len({f.trade_id for f in fills}) and pages == (count + 1) // 2
        keys = [(f.executed_at.ToDatetime(), f.trade_id) for f in fills]
        assert keys == sorted(keys, reverse=True)
        assert {f.account_kind for f in fills} == {kind}
        orders, _ = await all_pages(gateway, "ListOrders", pb.ListOrdersRequest(account_id=account_id, page_size=3),
                                    tok, "orders")
        assert len(orders) == len({o.order_id for o in orders}) == len({f.order_id for f in fills})
        assert {o.account_kind for o in orders} == {kind}
        assert all(o.status == pb.ORDER_STATUS_FILLED and o.filled_quantity > 0 for o in orders)
        # rebuilt from the venue's fills: filled, newest first by fill time, no submission time known
        assert all(o.HasField("filled_at") and not o.HasField("submitted_at") for o in orders)
        keys = [(o.filled_at.ToDatetime(), o.order_id) for o in orders]
        assert keys == sorted(keys, reverse=True)
        assert sum(o.filled_quantity for o in orders) == sum(f.quantity for f in fills)


async def test_orders_placed_through_the_gateway_are_listed_with_their_stored_timing(
        gateway, test_issuer, standin, service_database_urls):
    tok = token(test_issuer, "lister-alpaca")
    placed = []
    for i, (side, qty) in enumerate(((pb.SIDE_BUY, 3), (pb.SIDE_BUY, 2), (pb.SIDE_SELL, 4))):
        resp = await call(gateway, "PlaceOrder", pb.PlaceOrderRequest(
            account_id="list-timed", client_order_id=f"timed-{i}", symbol="AAPL", side=side, quantity=qty), tok)
        placed.append(resp.order)
    # the same client_order_id again: the same order, no second row
    again = await call(gateway, "PlaceOrder", pb.PlaceOrderRequest(
        account_id="list-timed", client_order_id="timed-0", symbol="AAPL", side=pb.SIDE_BUY, quantity=3), tok)
    assert again.order.order_id == placed[0].order_id
    orders, _ = await all_pages(gateway, "ListOrders", pb.ListOrdersRequest(account_id="list-timed", page_size=2),
                                tok, "orders")
    assert [o.client_order_id for o in orders] == ["timed-2", "timed-1", "timed-0"]  # newest first, once each
    assert [o.order_id for o in orders] == [p.order_id for p in reversed(placed)]
    for o in orders:
        assert o.account_kind == pb.ACCOUNT_KIND_PAPER and o.status == pb.ORDER_STATUS_FILLED
        assert o.HasField("submitted_at") and o.HasField("timing")
        t = o.timing
        steps = [t.balance_checked_ms, t.sent_ms, t.acknowledged_ms, t.filled_ms]
        assert all(t.HasField(n) for n in ("balance_checked_ms", "sent_ms", "acknowledged_ms", "filled_ms"))
        assert 0 <= steps[0] <= steps[1] <= steps[2] <= steps[3] < 10_000, steps
        assert t.received_at.ToDatetime() <= o.filled_at.ToDatetime() + timedelta(seconds=1)
    assert [o.filled_quantity for o in orders] == [4, 2, 3]
    assert orders[0].side == pb.SIDE_SELL and orders[0].average_price.units == 100
    # the venue's fills of these orders are not listed a second time as rebuilt orders
    fills, _ = await all_pages(gateway, "ListFills", pb.ListFillsRequest(account_id="list-timed"), tok, "fills")
    assert {f.order_id for f in fills} == {o.order_id for o in orders}
    url = service_database_urls["broker-gateway"].replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT client_order_id, user_id, account_kind FROM broker.alpaca_orders "
                            "WHERE account_id = 'list-timed' ORDER BY client_order_id").fetchall()
    assert rows == [(f"timed-{i}", "lister-alpaca", "paper") for i in range(3)]


async def test_another_users_account_is_not_found(gateway, test_issuer):
    account_id = await paper_account_with_orders(gateway, token(test_issuer, "lister-3"), n=1)
    other = token(test_issuer, "someone-else")
    for method, request in (("ListOrders", pb.ListOrdersRequest(account_id=account_id)),
                            ("ListFills", pb.ListFillsRequest(account_id=account_id)),
                            ("ListFills", pb.ListFillsRequest(account_id="list-live")),
                            ("ListOrders", pb.ListOrdersRequest(account_id="no-such-account"))):
        assert await refused(gateway, method, request, other) == grpc.StatusCode.NOT_FOUND


async def test_bad_page_tokens_and_sizes_are_invalid_argument(gateway, test_issuer):
    tok = token(test_issuer, "lister-4")
    account_id = await paper_account_with_orders(gateway, tok, n=3)
    first = await call(gateway, "ListOrders", pb.ListOrdersRequest(account_id=account_id, page_size=1), tok)
    fills_token = (await call(gateway, "ListFills", pb.ListFillsRequest(account_id=account_id, page_size=1),
                              tok)).next_page_token
    other_account = await paper_account_with_orders(gateway, tok, n=1)
    garbage = ["garbage!", "x" * 5000, base64.urlsafe_b64encode(b'{"v":1}').decode(), "e30", "%%%"]
    for bad in garbage:
        for method, request in (("ListOrders", pb.ListOrdersRequest(account_id=account_id, page_token=bad)),
                                ("ListFills", pb.ListFillsRequest(account_id=account_id, page_token=bad))):
            assert await refused(gateway, method, request, tok) == grpc.StatusCode.INVALID_ARGUMENT
    # a token of another listing or another account
    assert await refused(gateway, "ListFills", pb.ListFillsRequest(
        account_id=account_id, page_token=first.next_page_token), tok) == grpc.StatusCode.INVALID_ARGUMENT
    assert await refused(gateway, "ListOrders", pb.ListOrdersRequest(
        account_id=account_id, page_token=fills_token), tok) == grpc.StatusCode.INVALID_ARGUMENT
    assert await refused(gateway, "ListOrders", pb.ListOrdersRequest(
        account_id=other_account, page_token=first.next_page_token), tok) == grpc.StatusCode.INVALID_ARGUMENT
    for size in (-1, 501):
        assert await refused(gateway, "ListOrders", pb.ListOrdersRequest(
            account_id=account_id, page_size=size), tok) == grpc.StatusCode.INVALID_ARGUMENT
    ok = await call(gateway, "ListOrders", pb.ListOrdersRequest(account_id=account_id, page_size=500), tok)
    assert len(ok.orders) == 3
    assert await refused(gateway, "ListFills", pb.ListFillsRequest(
        account_id=account_id, since=ts("2017-03-05"), until=ts("2017-03-01")), tok) == grpc.StatusCode.INVALID_ARGUMENT


async def test_listing_needs_the_accounts_scope(gateway, test_issuer):
    tok = test_issuer.token(aud=BROKER_GATEWAY_AUDIENCE, scope="broker:import", client_id="resource-api",
                            sub="lister-5", act={"sub": "resource-api"})
    assert await refused(gateway, "ListOrders", pb.ListOrdersRequest(account_id="x"),
                         tok) == grpc.StatusCode.PERMISSION_DENIED
