"""When the balance cannot be read before an order, the account's
``on_balance_unavailable`` decides: ``refuse`` (the default; UNAVAILABLE, nothing sent) or
``allow`` (the order goes unchecked, with a warning). alpaca-py against the stand-in over HTTP."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from bsopt_broker.adapters.alpaca.accounts import parse_accounts
from bsopt_broker.adapters.alpaca.broker import AlpacaBroker
from bsopt_broker.domain.records import MarketOrder, OrderStatus
from bsopt_common.errors import Unavailable
from bsopt_common.money import Money
from bsopt_common.vocabulary import Side


def _broker(standin, name: str, **entry) -> AlpacaBroker:
    key = f"PK{name.upper()}"
    standin.add_account(key, f"secret-{name}", cash=100_000)
    accounts = parse_accounts([{"broker": "alpaca", "base_url": standin.base_url, "name": name, "owner": f"u-{name}",
                                "api_key_id": key, "api_secret_key": f"secret-{name}", **entry}])
    broker = AlpacaBroker(accounts, lambda symbol: Money(standin.prices[symbol], "USD"),
                          retry_attempts=2, retry_initial_wait_s=0.01, retry_max_wait_s=0.02)
    broker.get_account(name, f"u-{name}")  # client created and detected; the next reads are the order's
    standin.fail_next(key, 503, times=2, method="GET", path="/v2/account")  # both tries of the balance read
    return broker


def _order(name: str) -> MarketOrder:
    return MarketOrder(account_id=name, user_id=f"u-{name}", client_order_id=f"{name}-1", symbol="AAPL",
                       side=Side.BUY, quantity=1, as_of=datetime.now(UTC))


def _orders_at_standin(standin, name: str) -> int:
    return len(standin.accounts[f"PK{name.upper()}"].orders)


def test_by_default_an_unreadable_balance_refuses_the_order(alpaca_standin) -> None:
    broker = _broker(alpaca_standin, "refuser")
    with pytest.raises(Unavailable, match="on_balance_unavailable: refuse"):
        broker.submit_market_order(_order("refuser"))
    assert _orders_at_standin(alpaca_standin, "refuser") == 0


def test_allow_sends_the_order_unchecked_with_a_warning(alpaca_standin, caplog) -> None:
    broker = _broker(alpaca_standin, "allower", on_balance_unavailable="allow")
    with caplog.at_level(logging.WARNING, logger="bsopt_broker.alpaca"):
        result = broker.submit_market_order(_order("allower"))
    assert result.order.status is OrderStatus.FILLED
    assert result.balance_unchecked is True
    assert _orders_at_standin(alpaca_standin, "allower") == 1
    warnings = [r for r in caplog.records if getattr(r, "event", None) == "alpaca.balance_check_skipped"]
    assert len(warnings) == 1 and warnings[0].client_order_id == "allower-1"


def test_a_readable_balance_is_checked_as_usual_under_allow(alpaca_standin) -> None:
    broker = _broker(alpaca_standin, "normal", on_balance_unavailable="allow")
    alpaca_standin.clear_failures(f"PK{'normal'.upper()}")
    result = broker.submit_market_order(_order("normal"))
    assert result.balance_unchecked is False


def test_an_unknown_policy_is_an_accounts_file_error() -> None:
    from bsopt_broker.adapters.alpaca.accounts import AccountsFileError

    with pytest.raises(AccountsFileError, match="on_balance_unavailable"):
        parse_accounts([{"broker": "alpaca", "name": "x", "owner": "u", "api_key_id": "PKX", "api_secret_key": "s",
                         "on_balance_unavailable": "maybe"}])
