"""Position and cash accounting of a fill: pure arithmetic on records, no I/O.

A buy spends ``notional + fee`` and raises the position at a volume-weighted average
price; a sell receives ``notional - fee`` and lowers the position, keeping its average
price (realised P&L is the difference, not stored here).
"""

from __future__ import annotations

from dataclasses import dataclass

from bsopt_broker.domain.balance_guard import OrderCost
from bsopt_broker.domain.records import Position
from bsopt_common.money import Money
from bsopt_common.vocabulary import Side


@dataclass(frozen=True, slots=True)
class Booking:
    """The account after one fill: its cash and the symbol's position (quantity 0 when
    the position was closed)."""

    cash: Money
    position: Position


def book_fill(*, side: Side, symbol: str, quantity: int, cost: OrderCost, cash: Money,
              held: Position | None) -> Booking:
    """Apply a fill of ``quantity`` shares costing ``cost`` to ``cash`` and ``held``."""
    held_qty = held.quantity if held else 0
    zero = Money.zero(cash.currency)
    if side is Side.BUY:
        new_qty = held_qty + quantity
        invested = (held.average_price * held_qty if held else zero) + cost.notional
        return Booking(cash - cost.buy_cash_needed,
                       Position(symbol, new_qty, Money(invested.amount / new_qty, cash.currency)))
    new_qty = held_qty - quantity
    average = held.average_price if held and new_qty else zero
    return Booking(cash + cost.notional - cost.fee, Position(symbol, new_qty, average))
