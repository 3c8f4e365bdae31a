"""What the broker-gateway's venues and stores hand to each other: frozen records, never
dicts. Amounts are :class:`~bsopt_common.money.Money` in the account's currency; times
are aware UTC datetimes with millisecond precision for order timing.

Modelled on NautilusTrader's reports (``FillReport(trade_id, order_side, last_qty,
last_px, commission: Money, ts_event)``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from bsopt_common.money import Money
from bsopt_common.vocabulary import Side


class AccountKind(StrEnum):
    """Paper (simulated money) or live (real money) (``bsopt.broker_gateway.v1.AccountKind``).

    The built-in paper venue is always ``PAPER``; an Alpaca account is what detection
    decided (:mod:`bsopt_broker.adapters.alpaca.detection`, same values)."""

    PAPER = "paper"
    LIVE = "live"


class OrderStatus(StrEnum):
    """Final state of a market order (``bsopt.broker_gateway.v1.OrderStatus``)."""

    FILLED = "FILLED"
    REJECTED = "REJECTED"


@dataclass(frozen=True, slots=True)
class Position:
    """Shares of one symbol held in an account (long only in this version)."""

    symbol: str
    quantity: int
    """Shares held, > 0 for an open position."""
    average_price: Money
    """Volume-weighted average entry price per share."""


@dataclass(frozen=True, slots=True)
class Account:
    """A broker account of one user."""

    account_id: str
    user_id: str
    broker: str
    """The venue's name, e.g. ``"paper"``."""
    cash: Money
    """Free cash; its currency is the account's currency."""
    positions: tuple[Position, ...] = ()
    """Open positions, by symbol."""
    created_at: datetime | None = None
    account_kind: AccountKind = AccountKind.PAPER
    """Paper or live; the paper venue's accounts are always paper."""

    @property
    def currency(self) -> str:
        return self.cash.currency

    def position(self, symbol: str) -> Position | None:
        return next((p for p in self.positions if p.symbol == symbol), None)


@dataclass(frozen=True, slots=True)
class Order:
    """A market order as the venue recorded it (filled or rejected)."""

    order_id: str
    client_order_id: str
    """Caller-chosen idempotency key, unique per account."""
    account_id: str
    symbol: str
    side: Side
    quantity: int
    status: OrderStatus
    submitted_at: datetime
    filled_at: datetime | None = None
    fill_latency_ms: float | None = None
    """``filled_at - submitted_at``, milliseconds."""
    reject_reason: str = ""
    account_kind: AccountKind = AccountKind.PAPER
    """The kind of the account the order was placed on."""


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution. ``trade_id`` is the venue's trade id: the dedupe key of imports."""

    trade_id: str
    order_id: str
    account_id: str
    symbol: str
    side: Side
    quantity: int
    price: Money
    """Execution price per share."""
    fee: Money
    """Commission charged for this execution."""
    executed_at: datetime
    """Market time of the execution."""
    account_kind: AccountKind = AccountKind.PAPER
    """The kind of the account the fill belongs to."""


@dataclass(frozen=True, slots=True)
class MarketOrder:
    """A request to trade ``quantity`` shares at the market."""

    account_id: str
    user_id: str
    client_order_id: str
    symbol: str
    side: Side
    quantity: int
    as_of: datetime
    """Paper venue only: the historical bar whose close fills the order."""


@dataclass(frozen=True, slots=True)
class OrderResult:
    """The order, its fills and the account after them."""

    order: Order
    fills: tuple[Fill, ...]
    account: Account
    replayed: bool = field(default=False)
    """True when the client_order_id was seen before and the original result returned."""
