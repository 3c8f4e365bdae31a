"""Retries, circuit breaker, read-only refusal and the timing switch of AlpacaBroker: the real
alpaca-py TradingClient against the local stand-in over HTTP, errors injected there."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import grpc
import pytest

from bsopt_broker.adapters.alpaca.accounts import parse_accounts
from bsopt_broker.adapters.alpaca.broker import AlpacaBroker
from bsopt_broker.adapters.alpaca.resilience import BreakerState, CircuitBreaker, CircuitOpen, RetryPolicy
from bsopt_broker.domain.balance_guard import OrderRejected
from bsopt_broker.domain.records import MarketOrder, OrderStatus
from bsopt_common.errors import FailedPrecondition, Unavailable
from bsopt_common.grpc_server import status_for
from bsopt_common.money import Money
from bsopt_common.testing.services import free_port
from bsopt_common.vocabulary import Side

FAST = {"retry_initial_wait_s": 0.01, "retry_max_wait_s": 0.05}


def make_broker(standin, entries, **kw):
    accounts = parse_accounts([{"broker": "alpaca", "base_url": standin.base_url, **e} for e in entries])
    return AlpacaBroker(accounts, lambda symbol: Money(standin.prices[symbol], "USD"), **kw)


def paper_account(standin, name, cash=50_000, **extra):
    key = f"PK{name.upper()}"
    standin.add_account(key, f"secret-{name}", cash=cash)
    return {"name": name, "owner": f"u-{name}", "api_key_id": key, "api_secret_key": f"secret-{name}", **extra}


def buy(name, qty, cid):
    return MarketOrder(account_id=name, user_id=f"u-{name}", client_order_id=cid, symbol="AAPL", side=Side.BUY,
                       quantity=qty, as_of=datetime.now(UTC))


def requests_of(standin, key, method=None, path=None):
    return [r for r in standin.requests if r[0] == key and method in (None, r[1]) and path in (None, r[2])]


def test_429s_with_retry_after_are_waited_out_and_the_order_placed_once(alpaca_standin, caplog):
    broker = make_broker(alpaca_standin, [paper_account(alpaca_standin, "alice")], retry_attempts=4, **FAST)
    alpaca_standin.fail_next("PKALICE", 429, times=2, retry_after=1, method="POST", path="/v2/orders")
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="bsopt_broker.alpaca"):
        result = broker.submit_market_order(buy("alice", 3, "rl-1"))
    elapsed = time.monotonic() - started
    retries = [r.getMessage() for r in caplog.records if "again in" in r.getMessage()]
    assert [m.split(" again")[0] for m in retries] == ["alpaca alice: HTTP 429, try 2 of 4",
                                                       "alpaca alice: HTTP 429, try 3 of 4"]
    assert result.order.status is OrderStatus.FILLED and not result.replayed
    assert len(alpaca_standin.accounts["PKALICE"].orders) == 1
    assert len(requests_of(alpaca_standin, "PKALICE", "POST", "/v2/orders")) == 3
    # Backoff alone would wait < 0.1 s in all (max 0.05 s a wait); Retry-After: 1 s, twice.
    assert 2.0 <= elapsed < 3.5, elapsed


def test_503_after_the_order_was_placed_leaves_exactly_one_order(alpaca_standin):
    broker = make_broker(alpaca_standin, [paper_account(alpaca_standin, "once"), paper_account(alpaca_standin, "lost")],
                         retry_attempts=3, **FAST)
    # The order is placed, its answer is a 503: the retried POST meets the duplicate (422), looked up.
    alpaca_standin.fail_next("PKONCE", 503, after_placing=True)
    result = broker.submit_market_order(buy("once", 2, "p-1"))
    assert result.replayed and result.order.status is OrderStatus.FILLED
    assert len(alpaca_standin.accounts["PKONCE"].orders) == 1
    assert len(requests_of(alpaca_standin, "PKONCE", "POST", "/v2/orders")) == 2
    # Placed, then every retry answered 503 until the policy gives up: looked up, still one order.
    alpaca_standin.fail_next("PKLOST", 503, after_placing=True)
    alpaca_standin.fail_next("PKLOST", 503, times=10, method="POST", path="/v2/orders")
    result = broker.submit_market_order(buy("lost", 2, "p-2"))
    assert result.replayed and result.order.status is OrderStatus.FILLED
    assert len(alpaca_standin.accounts["PKLOST"].orders) == 1
    assert len(requests_of(alpaca_standin, "PKLOST", "POST", "/v2/orders")) == 3
    assert result.account.cash == Money.of("49800", "USD")
    # Asked again with the same client_order_id: the same order, no new request to place it.
    again = broker.submit_market_order(buy("lost", 2, "p-2"))
    assert again.order.order_id == result.order.order_id and again.replayed
    assert len(requests_of(alpaca_standin, "PKLOST", "POST", "/v2/orders")) == 3


def test_persistent_500s_open_the_breaker_of_that_account_only(alpaca_standin):
    broker = make_broker(alpaca_standin, [paper_account(alpaca_standin, "down"), paper_account(alpaca_standin, "up")],
                         request_timeout_s=5.0, retry_attempts=2, breaker_failures=3, breaker_cooldown_s=1.0, **FAST)
    broker.get_account("down", "u-down")
    alpaca_standin.fail_next("PKDOWN", 500, times=1000)
    for _ in range(3):
        before = len(requests_of(alpaca_standin, "PKDOWN"))
        with pytest.raises(Unavailable, match="HTTP 500"):
            broker.get_account("down", "u-down")
        assert len(requests_of(alpaca_standin, "PKDOWN")) - before == 2  # retry_attempts tries
    assert broker.breaker_state("down") is BreakerState.OPEN
    sent = len(requests_of(alpaca_standin, "PKDOWN"))

    for call in (lambda: broker.get_account("down", "u-down"),
                 lambda: broker.submit_market_order(buy("down", 1, "b-1"))):
        started = time.monotonic()
        with pytest.raises(CircuitOpen) as refused:
            call()
        assert time.monotonic() - started < 0.05  # the request timeout is 5 s
        assert status_for(refused.value)[0] is grpc.StatusCode.UNAVAILABLE
    assert len(requests_of(alpaca_standin, "PKDOWN")) == sent  # refused without a request
    assert alpaca_standin.accounts["PKDOWN"].orders == {}

    # Another account is not affected.
    assert broker.submit_market_order(buy("up", 1, "u-1")).order.status is OrderStatus.FILLED
    assert broker.breaker_state("up") is BreakerState.CLOSED

    # Still failing after the cooldown: the one trial call fails, the breaker opens again.
    time.sleep(1.05)
    with pytest.raises(Unavailable, match="HTTP 500"):
        broker.get_account("down", "u-down")
    assert broker.breaker_state("down") is BreakerState.OPEN
    with pytest.raises(CircuitOpen):
        broker.get_account("down", "u-down")

    # Recovered: after the cooldown a success closes it.
    alpaca_standin.clear_failures("PKDOWN")
    time.sleep(1.05)
    assert broker.submit_market_order(buy("down", 1, "b-2")).order.status is OrderStatus.FILLED
    assert broker.breaker_state("down") is BreakerState.CLOSED
    assert len(alpaca_standin.accounts["PKDOWN"].orders) == 1


def test_read_only_account_refused_without_any_request(alpaca_standin):
    broker = make_broker(alpaca_standin, [paper_account(alpaca_standin, "ro", read_only=True)])
    with pytest.raises(OrderRejected, match="read-only") as refused:
        broker.submit_market_order(buy("ro", 1, "r-1"))
    assert isinstance(refused.value, FailedPrecondition)
    assert status_for(refused.value)[0] is grpc.StatusCode.FAILED_PRECONDITION
    assert requests_of(alpaca_standin, "PKRO") == []
    assert broker.get_account("ro", "u-ro").cash == Money.of("50000", "USD")  # reading is allowed


def test_alpaca_py_retry_loop_is_off_and_time_cap_bounds_retry_after(alpaca_standin):
    broker = make_broker(alpaca_standin, [paper_account(alpaca_standin, "one"), paper_account(alpaca_standin, "cap")],
                         retry_attempts=1, **FAST)
    broker.get_account("one", "u-one")
    before = len(requests_of(alpaca_standin, "PKONE"))
    alpaca_standin.fail_next("PKONE", 429)  # alpaca-py alone would sleep 3 s and try again
    started = time.monotonic()
    with pytest.raises(Unavailable, match="HTTP 429"):
        broker.get_account("one", "u-one")
    assert time.monotonic() - started < 1.0
    assert len(requests_of(alpaca_standin, "PKONE")) - before == 1

    capped = make_broker(alpaca_standin, [paper_account(alpaca_standin, "cap")], retry_attempts=5, retry_total_s=0.5,
                         **FAST)
    alpaca_standin.fail_next("PKCAP", 503, times=5, retry_after=5)
    started = time.monotonic()
    with pytest.raises(Unavailable, match="retry after 5s"):
        capped.get_account("cap", "u-cap")  # waiting 5 s would pass the 0.5 s cap: give up now
    assert time.monotonic() - started < 0.5
    assert len(requests_of(alpaca_standin, "PKCAP")) == 1


def test_order_timing_switch(alpaca_standin, caplog):
    entries = [paper_account(alpaca_standin, "t")]
    timed, untimed = make_broker(alpaca_standin, entries), make_broker(alpaca_standin, entries, order_timing=False)
    with caplog.at_level(logging.INFO, logger="bsopt_broker.alpaca"):
        assert timed.submit_market_order(buy("t", 1, "on")).timing is not None
        off = untimed.submit_market_order(buy("t", 1, "off"))
    assert off.timing is None and off.order.status is OrderStatus.FILLED
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("alpaca order ")]
    assert len(lines) == 1 and '"client_order_id": "on"' in lines[0]
    assert "secret" not in caplog.text


def test_breaker_half_open_admits_one_trial():
    now = [0.0]
    breaker = CircuitBreaker("a", failures=2, cooldown_s=10, clock=lambda: now[0])
    breaker.failure()
    breaker.before()  # one failure: still closed
    breaker.failure()
    with pytest.raises(CircuitOpen, match=r"trying again in 10\.0s"):
        breaker.before()
    now[0] = 10.0
    breaker.before()  # the trial
    assert breaker.state is BreakerState.HALF_OPEN
    with pytest.raises(CircuitOpen, match="trial call is in flight"):
        breaker.before()
    breaker.success()
    assert breaker.state is BreakerState.CLOSED
    breaker.before()


def test_retry_policy_settings_are_checked():
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0, total_s=1, initial_wait_s=0.1, max_wait_s=1)
    with pytest.raises(ValueError, match="max_wait_s"):
        RetryPolicy(attempts=2, total_s=1, initial_wait_s=1, max_wait_s=0.1)


def test_timeouts_and_connection_errors_count_toward_the_breaker(alpaca_standin):
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there: connection refused
    broker = make_broker(alpaca_standin, [paper_account(alpaca_standin, "slow"),
                                          {**paper_account(alpaca_standin, "gone"), "base_url": closed}],
                         request_timeout_s=0.2, retry_attempts=2, breaker_failures=2, breaker_cooldown_s=30, **FAST)
    alpaca_standin.accounts["PKSLOW"].delay_s = 0.5
    for _ in range(2):
        with pytest.raises(Unavailable, match="ReadTimeout"):
            broker.get_account("slow", "u-slow")
        with pytest.raises(Unavailable, match=r"ConnectionError \(up to 2 tries"):
            broker.get_account("gone", "u-gone")
    assert len(requests_of(alpaca_standin, "PKSLOW")) == 2  # a timeout is not retried
    assert broker.breaker_state("slow") is broker.breaker_state("gone") is BreakerState.OPEN
    with pytest.raises(CircuitOpen):
        broker.submit_market_order(buy("slow", 1, "s-1"))
    assert len(requests_of(alpaca_standin, "PKSLOW")) == 2


def test_the_gateways_settings_reach_the_pool(alpaca_standin, monkeypatch):
    """BSOPT_BROKER_ALPACA_RETRY_ATTEMPTS / _BREAKER_FAILURES set the pool's retries and breaker."""
    from bsopt_broker.bootstrap import alpaca_venue
    from bsopt_broker.config import BrokerSettings

    monkeypatch.setenv("BSOPT_BROKER_ALPACA_RETRY_ATTEMPTS", "1")
    monkeypatch.setenv("BSOPT_BROKER_ALPACA_BREAKER_FAILURES", "1")
    settings = BrokerSettings(environment="test")
    accounts = parse_accounts([{"broker": "alpaca", "base_url": alpaca_standin.base_url,
                                **paper_account(alpaca_standin, "tuned")}])
    venue = alpaca_venue(accounts, **settings.alpaca_options())
    assert venue is not None
    venue.get_account("tuned", "u-tuned")  # client created
    before = len(requests_of(alpaca_standin, "PKTUNED"))
    alpaca_standin.fail_next("PKTUNED", 503, times=5, method="GET", path="/v2/account")
    with pytest.raises(Unavailable, match="HTTP 503"):
        venue.get_account("tuned", "u-tuned")
    assert len(requests_of(alpaca_standin, "PKTUNED")) - before == 1  # one try: no retry
    with pytest.raises(CircuitOpen):  # one failure opened it
        venue.get_account("tuned", "u-tuned")
