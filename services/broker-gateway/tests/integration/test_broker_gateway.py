"""broker-gateway over real gRPC, with real Postgres and a Kafka-protocol broker."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import grpc
import pytest
from aiokafka import AIOKafkaConsumer
from google.protobuf.timestamp_pb2 import Timestamp

from bsopt.broker_gateway.v1 import broker_gateway_pb2 as pb
from bsopt.broker_gateway.v1 import broker_gateway_pb2_grpc as pb_grpc
from bsopt.broker_gateway.v1 import events_pb2
from bsopt.type.v1 import money_pb2
from bsopt_broker.bootstrap import serve
from bsopt_broker.config import BrokerSettings
from bsopt_common import codec
from bsopt_common.marketdata import bundled_provider
from bsopt_common.money import Money, price_decimal
from bsopt_common.settings import BROKER_GATEWAY_AUDIENCE
from bsopt_common.testing.grpc_calls import grpc_calls
from bsopt_common.testing.identity import service_identity
from bsopt_common.testing.services import ServiceThread, free_port

ALL_SCOPES = "broker:accounts broker:orders broker:import"


def usd(amount: str | int) -> money_pb2.Money:
    return codec.money_pb(Money.of(amount, "USD"))


def cash(account: pb.Account) -> Decimal:
    return codec.money_from_pb(account, "cash").amount


@pytest.fixture(scope="module")
def gateway(service_database_urls, kafka_bootstrap, test_issuer):
    port = free_port()
    settings = BrokerSettings(
        database_url=service_database_urls["broker-gateway"], kafka_bootstrap_servers=kafka_bootstrap, port=port,
        paper_commission_bps=10.0, **service_identity(test_issuer, "broker-gateway"),
    )
    with ServiceThread(lambda stop: serve(settings, stop), port=port):
        yield f"127.0.0.1:{port}"


def ts(day: str) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(datetime.fromisoformat(day).replace(tzinfo=UTC))
    return t


call, _ = grpc_calls(pb_grpc.BrokerGatewayServiceStub)


def good_token(issuer, scope=ALL_SCOPES, user="trader-1"):
    """What resource-api presents acting for ``user``: the user's token exchanged for one
    to broker-gateway (RFC 8693: sub = the user, act = resource-api)."""
    return issuer.token(aud=BROKER_GATEWAY_AUDIENCE, scope=scope, client_id="resource-api", sub=user,
                        act={"sub": "resource-api"})


@pytest.mark.parametrize("kind", ["none", "wrong-aud", "expired", "unknown-key"])
async def test_refuses_bad_tokens(gateway, test_issuer, kind):
    token = {
        "none": None,
        "wrong-aud": test_issuer.token(aud="urn:bsopt:ml-scorer", scope=ALL_SCOPES),
        "expired": test_issuer.expired_token(aud=BROKER_GATEWAY_AUDIENCE, scope=ALL_SCOPES),
        "unknown-key": test_issuer.token(aud=BROKER_GATEWAY_AUDIENCE, scope=ALL_SCOPES, rogue=True),
    }[kind]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(gateway, "CreateAccount", pb.CreateAccountRequest(initial_cash=usd(100)), token)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_missing_scope_is_permission_denied(gateway, test_issuer):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(gateway, "PlaceOrder", pb.PlaceOrderRequest(), good_token(test_issuer, "broker:accounts"))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_orders_fill_at_real_close_behind_the_balance_guard(gateway, test_issuer):
    tok = good_token(test_issuer)
    acct = await call(gateway, "CreateAccount", pb.CreateAccountRequest(initial_cash=usd(10_000)),
                      tok)
    close = bundled_provider().fetch_snapshot("GOOGL", datetime(2017, 1, 3)).close
    buy = pb.PlaceOrderRequest(account_id=acct.account_id, client_order_id="o-1",
                               symbol="GOOGL", side=pb.SIDE_BUY, quantity=10, as_of=ts("2017-01-03"))
    resp = await call(gateway, "PlaceOrder", buy, tok)
    assert resp.order.status == pb.ORDER_STATUS_FILLED
    price = codec.money_from_pb(resp.fills[0], "price")
    assert price == Money(price_decimal(close), "USD")  # the real close, exactly
    fee = codec.money_from_pb(resp.fills[0], "fee")
    assert fee == (price * 10 * Decimal("0.001")).rounded()  # 10 bps, rounded to cents
    assert resp.order.fill_latency_ms >= 0
    assert resp.order.filled_at.ToMilliseconds() >= resp.order.submitted_at.ToMilliseconds()
    assert cash(resp.account) == Decimal(10_000) - price.amount * 10 - fee.amount  # exact, no epsilon
    assert codec.money_from_pb(resp.account.positions[0], "average_price") == price
    assert resp.account.positions[0].quantity == 10

    # retrying the same client_order_id does not trade twice
    again = await call(gateway, "PlaceOrder", buy, tok)
    assert again.order.order_id == resp.order.order_id
    assert cash(again.account) == cash(resp.account)

    too_big = pb.PlaceOrderRequest(account_id=acct.account_id, client_order_id="o-2",
                                   symbol="GOOGL", side=pb.SIDE_BUY, quantity=100, as_of=ts("2017-01-04"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(gateway, "PlaceOrder", too_big, tok)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "insufficient buying power" in err.value.details()

    oversell = pb.PlaceOrderRequest(account_id=acct.account_id, client_order_id="o-3",
                                    symbol="GOOGL", side=pb.SIDE_SELL, quantity=11, as_of=ts("2017-01-04"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(gateway, "PlaceOrder", oversell, tok)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    weekend = pb.PlaceOrderRequest(account_id=acct.account_id, client_order_id="o-4",
                                   symbol="GOOGL", side=pb.SIDE_SELL, quantity=1, as_of=ts("2017-01-07"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(gateway, "PlaceOrder", weekend, tok)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    # another user's account is invisible
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(gateway, "GetAccount", pb.GetAccountRequest(account_id=acct.account_id),
                   good_token(test_issuer, user="someone-else"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_import_dedupes_by_trade_id_and_publishes_events(gateway, test_issuer, kafka_bootstrap):
    tok = good_token(test_issuer, user="trader-2")
    acct = await call(gateway, "CreateAccount", pb.CreateAccountRequest(initial_cash=usd(50_000)),
                      tok)
    days = ["2017-02-01", "2017-02-02", "2017-02-03"]
    for i, day in enumerate(days):
        side = pb.SIDE_BUY if i != 2 else pb.SIDE_SELL
        await call(gateway, "PlaceOrder", pb.PlaceOrderRequest(
            account_id=acct.account_id, client_order_id=f"imp-{i}", symbol="GOOGL",
            side=side, quantity=3, as_of=ts(day)), tok)
    window = pb.ImportTradesRequest(account_id=acct.account_id, start=ts("2017-02-01"), end=ts("2017-02-04"))
    first = await call(gateway, "ImportTrades", window, tok)
    assert (first.trades_imported, first.duplicates_skipped) == (3, 0)
    second = await call(gateway, "ImportTrades", window, tok)
    assert (second.trades_imported, second.duplicates_skipped) == (0, 3)

    consumer = AIOKafkaConsumer("trades.imported.v1", bootstrap_servers=kafka_bootstrap,
                                auto_offset_reset="earliest")  # no group: reads every partition at once
    await consumer.start()
    try:
        seen = {}
        deadline = asyncio.get_running_loop().time() + 20
        while len(seen) < 3 and asyncio.get_running_loop().time() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=500)).values():
                for m in msgs:
                    ev = events_pb2.TradeImported.FromString(m.value)
                    if ev.account_id == acct.account_id:
                        seen[ev.trade_id] = (ev, dict(m.headers), m.key)
    finally:
        await consumer.stop()
    assert len(seen) == 3  # exactly one event per trade, none for the duplicate import
    ev, headers, key = next(iter(seen.values()))
    assert key == b"trader-2"
    assert headers["ce_type"] == b"bsopt.broker_gateway.v1.TradeImported"
    assert headers["ce_source"] == b"/bsopt/broker-gateway"
    assert headers["traceparent"].startswith(b"00-")
    assert headers["ce_signature"].count(b".") == 2  # a compact JWS by broker-gateway's own key
    assert "authorization" not in headers  # no bearer token travels with events any more
    assert codec.money_from_pb(ev, "price").is_positive() and ev.executed_at.ToDatetime().year == 2017
    assert codec.money_from_pb(ev, "fee").currency == "USD"


@pytest.mark.parametrize("initial_cash, reason", [
    (None, "initial_cash is required"),
    (usd(0), "initial_cash must be > 0"),
    (usd(-5), "initial_cash must be > 0"),
    (money_pb2.Money(currency_code="", units=100), "currency must be an ISO 4217 code"),
    (money_pb2.Money(currency_code="EUR", units=100), "paper accounts hold USD"),
    (money_pb2.Money(currency_code="USD", units=1, nanos=-5), "same sign"),
])
async def test_create_account_refuses_bad_money(gateway, test_issuer, initial_cash, reason):
    request = pb.CreateAccountRequest()
    if initial_cash is not None:
        request.initial_cash.CopyFrom(initial_cash)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(gateway, "CreateAccount", request, good_token(test_issuer))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason in err.value.details()


async def test_unspecified_side_is_invalid_argument(gateway, test_issuer):
    tok = good_token(test_issuer, user="u-side")
    acct = await call(gateway, "CreateAccount", pb.CreateAccountRequest(initial_cash=usd(100)), tok)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(gateway, "PlaceOrder", pb.PlaceOrderRequest(
            account_id=acct.account_id, client_order_id="s-1", symbol="GOOGL", quantity=1,
            as_of=ts("2017-01-03")), tok)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "side must be SIDE_BUY or SIDE_SELL"


def _with_unknown_user_id_field(request: pb.GetAccountRequest, user_id: str) -> bytes:
    """``request`` as bytes plus field 2 = ``user_id``: the request of the old contract,
    which named the user in a field (now reserved)."""
    raw = user_id.encode()
    return request.SerializeToString() + b"\x12" + bytes([len(raw)]) + raw


async def test_service_token_cannot_read_a_users_account(gateway, test_issuer):
    """Attack replay (audit, issue 6 §2): with rl-trainer's client-credentials token (aud
    broker-gateway, scope broker:accounts), GetAccount naming the user's account and user
    id returned their cash and positions. Now a service's own token reads no user's data,
    whatever request fields it sends."""
    acct = await call(gateway, "CreateAccount", pb.CreateAccountRequest(initial_cash=usd(1_000)),
                      good_token(test_issuer, user="victim"))
    service_token = test_issuer.token(aud=BROKER_GATEWAY_AUDIENCE, scope=ALL_SCOPES, client_id="rl-trainer",
                                      sub="rl-trainer")
    async with grpc.aio.insecure_channel(gateway) as channel:
        get_account = channel.unary_unary("/bsopt.broker_gateway.v1.BrokerGatewayService/GetAccount")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await get_account(_with_unknown_user_id_field(pb.GetAccountRequest(account_id=acct.account_id), "victim"),
                              metadata=(("authorization", f"Bearer {service_token}"),), timeout=30)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "token exchange" in err.value.details()
    for method, request in (
        ("CreateAccount", pb.CreateAccountRequest(initial_cash=usd(100))),
        ("PlaceOrder", pb.PlaceOrderRequest(account_id=acct.account_id, client_order_id="x", symbol="GOOGL",
                                            side=pb.SIDE_BUY, quantity=1, as_of=ts("2017-01-03"))),
        ("ImportTrades", pb.ImportTradesRequest(account_id=acct.account_id, start=ts("2017-01-01"),
                                                end=ts("2017-02-01"))),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(gateway, method, request, service_token)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, method

    # a delegated token for another user sees nothing; the owner's delegated token does
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(gateway, "GetAccount", pb.GetAccountRequest(account_id=acct.account_id),
                   good_token(test_issuer, user="attacker"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    mine = await call(gateway, "GetAccount", pb.GetAccountRequest(account_id=acct.account_id),
                      good_token(test_issuer, user="victim", scope="broker:accounts"))
    assert mine.user_id == "victim" and cash(mine) == Decimal(1_000)
