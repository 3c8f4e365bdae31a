from decimal import Decimal

import pytest

from bsopt_broker.domain.accounting import book_fill
from bsopt_broker.domain.balance_guard import OrderRejected, check_order
from bsopt_broker.domain.records import Position
from bsopt_common.errors import InvalidArgument
from bsopt_common.money import Money
from bsopt_common.vocabulary import Side


def usd(amount: str) -> Money:
    return Money.of(amount, "USD")


def test_buy_needs_notional_plus_commission_exactly():
    cost = check_order(side=Side.BUY, quantity=10, price=usd("100"), cash=usd("1001"), position_quantity=0,
                       commission_bps=Decimal(10))
    assert cost.notional == usd("1000")
    assert cost.fee == usd("1.00")
    # one cent short is refused: no float epsilon decides this
    with pytest.raises(OrderRejected, match=r"order needs 1001 USD \(10 x 100 USD \+ 1 USD commission\), "
                                            r"account has 1000.99 USD"):
        check_order(side=Side.BUY, quantity=10, price=usd("100"), cash=usd("1000.99"), position_quantity=0,
                    commission_bps=Decimal(10))


def test_commission_is_rounded_half_even_to_cents():
    cost = check_order(side=Side.BUY, quantity=3, price=usd("0.05"), cash=usd("10"), position_quantity=0,
                       commission_bps=Decimal(25))
    assert cost.notional == usd("0.15")
    assert cost.fee == usd("0.00")  # 0.000375 -> 0.00


def test_sell_needs_the_shares():
    check_order(side=Side.SELL, quantity=5, price=usd("10"), cash=usd("0"), position_quantity=5,
                commission_bps=Decimal(0))
    with pytest.raises(OrderRejected, match="selling 6 shares, account holds 5"):
        check_order(side=Side.SELL, quantity=6, price=usd("10"), cash=usd("1000000"), position_quantity=5,
                    commission_bps=Decimal(0))


@pytest.mark.parametrize("qty, price", [(0, "10"), (-1, "10"), (1, "0"), (1, "-1")])
def test_malformed_orders_are_invalid_arguments(qty, price):
    with pytest.raises(InvalidArgument):
        check_order(side=Side.BUY, quantity=qty, price=usd(price), cash=usd("1000000"), position_quantity=0,
                    commission_bps=Decimal(0))


def test_price_in_another_currency_is_refused():
    with pytest.raises(InvalidArgument, match="EUR price for a USD account"):
        check_order(side=Side.BUY, quantity=1, price=Money.of("1", "EUR"), cash=usd("10"), position_quantity=0,
                    commission_bps=Decimal(0))


def test_book_fill_buys_at_a_weighted_average_and_sells_keep_it():
    cost = check_order(side=Side.BUY, quantity=10, price=usd("100"), cash=usd("5000"), position_quantity=0,
                       commission_bps=Decimal(10))
    first = book_fill(side=Side.BUY, symbol="X", quantity=10, cost=cost, cash=usd("5000"), held=None)
    assert first.cash == usd("3999.00") and first.position == Position("X", 10, usd("100"))
    cost2 = check_order(side=Side.BUY, quantity=10, price=usd("110"), cash=first.cash, position_quantity=10,
                        commission_bps=Decimal(0))
    second = book_fill(side=Side.BUY, symbol="X", quantity=10, cost=cost2, cash=first.cash, held=first.position)
    assert second.position == Position("X", 20, usd("105"))
    cost3 = check_order(side=Side.SELL, quantity=20, price=usd("120"), cash=second.cash, position_quantity=20,
                        commission_bps=Decimal(10))
    closed = book_fill(side=Side.SELL, symbol="X", quantity=20, cost=cost3, cash=second.cash, held=second.position)
    assert closed.cash == usd("2899.00") + usd("2400") - usd("2.40")
    assert closed.position.quantity == 0
