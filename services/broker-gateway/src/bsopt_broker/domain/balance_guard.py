"""The balance guard: the check every order passes before it reaches a broker.

Pure logic, no I/O. Long-only accounts in this version: a buy needs free cash for the
notional plus commission; a sell needs the shares.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class OrderRejected(Exception):
    """The balance guard refused the order; the message says why, with the numbers."""


@dataclass(frozen=True)
class OrderCost:
    """Cash effect of a market order, USD."""

    notional_usd: float
    fee_usd: float

    @property
    def buy_cash_needed_usd(self) -> float:
        return self.notional_usd + self.fee_usd


def order_cost(quantity: int, price_usd: float, commission_bps: float) -> OrderCost:
    """Notional ``quantity * price_usd`` and commission ``notional * bps / 10_000``."""
    notional = quantity * price_usd
    return OrderCost(notional, notional * commission_bps / 10_000.0)


def check_order(*, side: Side, quantity: int, price_usd: float, cash_usd: float, position_quantity: int,
                commission_bps: float) -> OrderCost:
    """Return the order's cost if the account covers it. Raises OrderRejected, or
    ValueError for a malformed order (quantity <= 0, price <= 0)."""
    if quantity <= 0:
        raise ValueError(f"quantity must be a positive whole number of shares, got {quantity}")
    if price_usd <= 0:
        raise ValueError(f"price must be positive, got {price_usd}")
    cost = order_cost(quantity, price_usd, commission_bps)
    if side is Side.BUY and cost.buy_cash_needed_usd > cash_usd + 1e-9:
        raise OrderRejected(
            f"insufficient buying power: order needs {cost.buy_cash_needed_usd:.2f} USD "
            f"({quantity} x {price_usd:.2f} + {cost.fee_usd:.2f} commission), account has {cash_usd:.2f} USD"
        )
    if side is Side.SELL and quantity > position_quantity:
        raise OrderRejected(f"insufficient position: selling {quantity} shares, account holds {position_quantity}")
    return cost
