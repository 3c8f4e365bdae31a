"""AlpacaBroker through the real alpaca-py TradingClient against the local stand-in, over HTTP."""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest

from bsopt_broker.adapters.alpaca.accounts import parse_accounts
from bsopt_broker.adapters.alpaca.broker import AlpacaBroker
from bsopt_broker.adapters.alpaca.detection import AccountKind, AccountKindContradiction
from bsopt_broker.domain.balance_guard import OrderRejected
from bsopt_broker.domain.records import MarketOrder, OrderStatus
from bsopt_broker.domain.venue import AccountNotFound
from bsopt_common.money import Money
from bsopt_common.vocabulary import Side


def make_broker(standin, entries, **kw):
    accounts = parse_accounts([{"broker": "alpaca", "base_url": standin.base_url, **e} for e in entries])
    return AlpacaBroker(accounts, lambda symbol: Money(standin.prices[symbol], "USD"), **kw)


def paper_account(standin, name, cash, **extra):
    key = f"PK{name.upper()}"
    standin.add_account(key, f"secret-{name}", cash=cash, delay_s=extra.pop("delay_s", 0.0))
    return {"name": name, "owner": f"u-{name}", "api_key_id": key, "api_secret_key": f"secret-{name}", **extra}


def buy(name, qty, cid, side=Side.BUY, symbol="AAPL"):
    return MarketOrder(account_id=name, user_id=f"u-{name}", client_order_id=cid, symbol=symbol, side=side,
                       quantity=qty, as_of=datetime.now(UTC))


def test_account_read(alpaca_standin):
    broker = make_broker(alpaca_standin, [paper_account(alpaca_standin, "alice", 20_000)])
    account = broker.get_account("alice", "u-alice")
    assert account.kind is AccountKind.PAPER and account.broker == "alpaca"
    assert account.cash == Money.of("20000", "USD") == account.equity == account.buying_power
    assert account.account_number.startswith("PA") and account.positions == ()
    with pytest.raises(AccountNotFound):
        broker.get_account("alice", "u-mallory")


def test_order_is_placed_timed_and_logged(alpaca_standin, caplog):
    broker = make_broker(alpaca_standin, [paper_account(alpaca_standin, "alice", 20_000)])
    with caplog.at_level(logging.INFO, logger="bsopt_broker.alpaca"):
        result = broker.submit_market_order(buy("alice", 10, "c-1"))
    assert result.order.status is OrderStatus.FILLED and not result.replayed
    assert result.kind is AccountKind.PAPER
    assert [(f.quantity, f.price) for f in result.fills] == [(10, Money.of("100", "USD"))]
    assert result.account.cash == Money.of("19000", "USD")
    assert result.account.position("AAPL").quantity == 10
    t = result.timing
    assert t.received_ns <= t.balance_checked_ns <= t.sent_ns <= t.acknowledged_ns <= t.filled_ns
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("alpaca order ")]
    assert len(lines) == 1
    logged = json.loads(lines[0].removeprefix("alpaca order "))
    assert logged["client_order_id"] == "c-1" and logged["kind"] == "paper"
    assert set(logged) >= {"balance_checked_ms", "sent_ms", "acknowledged_ms", "filled_ms"}
    assert 0 <= logged["balance_checked_ms"] <= logged["filled_ms"]


def test_duplicate_submits_place_exactly_one_order(alpaca_standin):
    entry = paper_account(alpaca_standin, "alice", 50_000)
    first, second = make_broker(alpaca_standin, [entry]), make_broker(alpaca_standin, [entry])
    a = first.submit_market_order(buy("alice", 5, "dup"))
    again = first.submit_market_order(buy("alice", 5, "dup"))  # same process: remembered
    other = second.submit_market_order(buy("alice", 5, "dup"))  # another process: 422, looked up
    assert again.replayed and other.replayed and not a.replayed
    assert a.order.order_id == again.order.order_id == other.order.order_id
    assert len(alpaca_standin.accounts["PKALICE"].orders) == 1


def test_timeout_looks_the_order_up_instead_of_trading_twice(alpaca_standin):
    broker = make_broker(alpaca_standin, [paper_account(alpaca_standin, "slow", 50_000)], request_timeout_s=0.3)
    alpaca_standin.accounts["PKSLOW"].ack_delay_s = 1.0  # placed, but the answer comes too late
    result = broker.submit_market_order(buy("slow", 3, "t-1"))
    assert result.replayed and result.order.status is OrderStatus.FILLED
    assert len(alpaca_standin.accounts["PKSLOW"].orders) == 1


def test_randomised_orders_never_go_below_the_threshold(alpaca_standin):
    rng = random.Random(8)
    names = [f"r{i}" for i in range(5)]
    entries = [paper_account(alpaca_standin, n, rng.randrange(3_000, 12_000), min_balance_usd=5000) for n in names]
    broker = make_broker(alpaca_standin, entries)
    placed = refused = 0
    for i in range(120):
        name = rng.choice(names)
        side = Side.BUY if rng.random() < 0.7 else Side.SELL
        try:
            broker.submit_market_order(buy(name, rng.randrange(1, 30), f"o-{i}", side=side))
            placed += 1
        except OrderRejected:
            refused += 1
    assert placed > 10 and refused > 10
    for n in names:
        for h in alpaca_standin.accounts[f"PK{n.upper()}"].history:
            assert h["cash"] >= 5000 and h["equity"] >= 5000


def test_refusal_names_the_numbers(alpaca_standin):
    broker = make_broker(alpaca_standin, [paper_account(alpaca_standin, "low", 4_000),
                                          paper_account(alpaca_standin, "mid", 6_000)])
    with pytest.raises(OrderRejected, match=r"equity 4000.* below the minimum balance 5000"):
        broker.submit_market_order(buy("low", 1, "x"))
    with pytest.raises(OrderRejected, match=r"cost 2000.*from 6000.*to 4000"):
        broker.submit_market_order(buy("mid", 20, "y"))
    assert alpaca_standin.accounts["PKMID"].orders == {}


def test_live_account_refused_without_allow_live(alpaca_standin):
    alpaca_standin.add_account("AKLIVE", "s", cash=100_000)
    alpaca_standin.add_account("AKOK", "s", cash=100_000)
    broker = make_broker(alpaca_standin, [
        {"name": "live", "owner": "u-live", "api_key_id": "AKLIVE", "api_secret_key": "s"},
        {"name": "ok", "owner": "u-ok", "api_key_id": "AKOK", "api_secret_key": "s", "allow_live": True}])
    assert broker.get_account("live", "u-live").kind is AccountKind.LIVE
    with pytest.raises(OrderRejected, match=r"live account.*allow_live"):
        broker.submit_market_order(buy("live", 1, "l-1"))
    assert alpaca_standin.accounts["AKLIVE"].orders == {}
    assert broker.submit_market_order(buy("ok", 1, "l-2")).kind is AccountKind.LIVE


def test_read_only_and_contradicting_override_refused(alpaca_standin):
    broker = make_broker(alpaca_standin, [
        paper_account(alpaca_standin, "ro", 50_000, read_only=True),
        paper_account(alpaca_standin, "wrong", 50_000, paper=False)])
    with pytest.raises(OrderRejected, match="read-only"):
        broker.submit_market_order(buy("ro", 1, "r-1"))
    with pytest.raises(AccountKindContradiction, match="paper: false"):
        broker.get_account("wrong", "u-wrong")


def test_fifty_accounts_concurrently_and_a_slow_one_blocks_no_other(alpaca_standin):
    entries = [paper_account(alpaca_standin, f"a{i}", 100_000) for i in range(50)]
    broker = make_broker(alpaca_standin, entries)
    with ThreadPoolExecutor(max_workers=50) as pool:  # many callers, every account, orders and reads
        results = list(pool.map(lambda i: broker.submit_market_order(buy(f"a{i % 50}", 1, f"c-{i}")), range(200)))
    assert len({r.order.order_id for r in results}) == 200
    assert all(len(alpaca_standin.accounts[f"PKA{i}"].orders) == 4 for i in range(50))

    alpaca_standin.accounts["PKA0"].delay_s = 1.5
    slow = threading.Thread(target=broker.get_account, args=("a0", "u-a0"))
    slow.start()
    time.sleep(0.1)  # a0's lock is held, its request in flight
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=49) as pool:
        list(pool.map(lambda i: broker.get_account(f"a{i}", f"u-a{i}"), range(1, 50)))
    elapsed = time.monotonic() - started
    slow.join()
    assert elapsed < 1.0, f"other accounts waited {elapsed:.2f}s behind a slow one"
