"""The Alpaca balance check: pure logic, run before every order is sent.

Refuses (:class:`~bsopt_broker.domain.balance_guard.OrderRejected`, FAILED_PRECONDITION)
with the numbers when the account's equity is below its minimum balance, when a buy's cost
would take cash below it, when buying power does not cover the buy, or when a sell exceeds
the position (long-only).
"""

from __future__ import annotations

from decimal import Decimal

from bsopt_broker.domain.balance_guard import OrderRejected
from bsopt_common.errors import InvalidArgument
from bsopt_common.money import Money
from bsopt_common.vocabulary import Side


def check_balance(*, account: str, side: Side, quantity: int, price: Money, equity: Money, cash: Money,
                  buying_power: Money, position_quantity: int, min_balance: Money) -> Money:
    """Return the order's estimated cost (``quantity * price``) if the account may place it."""
    if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity <= 0:
        raise InvalidArgument(f"quantity must be a positive whole number of shares, got {quantity}")
    if not price.is_positive():
        raise InvalidArgument(f"price must be positive, got {price}")
    cost = price * quantity
    if equity < min_balance:
        raise OrderRejected(f"account {account!r}: equity {equity} is below the minimum balance {min_balance}")
    if side is Side.BUY:
        if cash - cost < min_balance:
            raise OrderRejected(
                f"account {account!r}: order cost {cost} ({quantity} x {price}) would take cash from {cash} "
                f"to {cash - cost}, below the minimum balance {min_balance}")
        if cost > buying_power:
            raise OrderRejected(
                f"account {account!r}: buying power {buying_power} does not cover order cost {cost} "
                f"({quantity} x {price})")
    elif quantity > position_quantity:
        raise OrderRejected(
            f"account {account!r}: selling {quantity} shares of a position of {position_quantity}")
    return cost


def usd(amount: Decimal | int | str | None) -> Money:
    return Money.of(amount if amount not in (None, "") else 0, "USD")
