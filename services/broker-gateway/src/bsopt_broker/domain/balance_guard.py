"""The balance guard: the check every order passes before it reaches a venue.

Pure logic, no I/O. Long-only accounts in this version: a buy needs free cash for the
notional plus commission; a sell needs the shares. Amounts are exact decimals
(:class:`~bsopt_common.money.Money`), so no epsilon is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from bsopt_common.errors import FailedPrecondition, InvalidArgument
from bsopt_common.money import Money
from bsopt_common.vocabulary import Side

BPS = Decimal(10_000)


class OrderRejected(FailedPrecondition):
    """The balance guard refused the order; the message says why, with the numbers."""


@dataclass(frozen=True, slots=True)
class OrderCost:
    """Cash effect of a market order."""

    notional: Money
    """``quantity * price``."""
    fee: Money
    """Commission, ``notional * bps / 10_000`` rounded half-even to cents."""

    @property
    def buy_cash_needed(self) -> Money:
        return self.notional + self.fee


def order_cost(quantity: int, price: Money, commission_bps: Decimal) -> OrderCost:
    """Notional and commission of ``quantity`` shares at ``price``."""
    notional = price * quantity
    return OrderCost(notional, (notional * commission_bps * Decimal("0.0001")).rounded())


def check_order(*, side: Side, quantity: int, price: Money, cash: Money, position_quantity: int,
                commission_bps: Decimal) -> OrderCost:
    """Return the order's cost if the account covers it. Raises OrderRejected
    (FAILED_PRECONDITION), or InvalidArgument for a malformed order (quantity <= 0,
    price <= 0, a price in another currency than the cash)."""
    if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity <= 0:
        raise InvalidArgument(f"quantity must be a positive whole number of shares, got {quantity}")
    if not price.is_positive():
        raise InvalidArgument(f"price must be positive, got {price}")
    if price.currency != cash.currency:
        raise InvalidArgument(f"{price.currency} price for a {cash.currency} account")
    cost = order_cost(quantity, price, commission_bps)
    if side is Side.BUY and cost.buy_cash_needed > cash:
        raise OrderRejected(
            f"insufficient buying power: order needs {cost.buy_cash_needed} "
            f"({quantity} x {price} + {cost.fee} commission), account has {cash}"
        )
    if side is Side.SELL and quantity > position_quantity:
        raise OrderRejected(f"insufficient position: selling {quantity} shares, account holds {position_quantity}")
    return cost
