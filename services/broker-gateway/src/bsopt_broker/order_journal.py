"""The journal of orders placed on Alpaca accounts (``broker.alpaca_orders``).

Alpaca keeps the orders; broker-gateway keeps what only it saw: who asked, the account's
kind as detected, and the order's timing (issue 8 §3: received, balance checked, sent to
the broker, acknowledged, filled; "stored with the order and written to one structured
log line per order"). The router records every Alpaca order it placed, from ``PlaceOrder``
and from the sell module alike, after the venue answered; ``ListOrders`` reads them back.

Timing: the adapter takes ``time.perf_counter_ns()`` readings (monotonic; see
:class:`bsopt_broker.adapters.alpaca.broker.OrderTiming`). Stored as ``received_at`` (the
wall clock at the first reading, derived from one wall/monotonic pair taken when the
record is written) and each later step in milliseconds after it (``balance_checked_ms``,
``sent_ms``, ``acknowledged_ms``, ``filled_ms``), never as wall-clock differences. A
replay (the same ``client_order_id`` again, answered from the first call) adds no row;
with timing off the ``*_ms`` columns are null.

A failure to write the journal is logged and does not fail the order: the order exists
at Alpaca by then, and the caller must get its answer (the log line has the timing).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session, sessionmaker

from bsopt_broker import models
from bsopt_broker.adapters.alpaca.broker import AlpacaOrderResult
from bsopt_broker.domain.records import AccountKind, MarketOrder, Order, OrderStatus, Side
from bsopt_common.db import session_scope
from bsopt_common.money import Money

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StoredTiming:
    """An order's timing as stored: the wall-clock instant it was received and the
    milliseconds (monotonic) from then to each later step; None where not measured."""

    received_at: datetime
    balance_checked_ms: float | None
    sent_ms: float | None
    acknowledged_ms: float | None
    filled_ms: float | None


@dataclass(frozen=True, slots=True)
class JournaledOrder:
    order: Order
    filled_quantity: int
    average_price: Money | None
    fee: Money | None
    timing: StoredTiming
    user_id: str


class OrderJournal:
    def __init__(self, session_factory: sessionmaker[Session]):
        self.session_factory = session_factory

    def record(self, order: MarketOrder, result: AlpacaOrderResult) -> None:
        """Store the order placed for ``order`` (nothing for a replay). Never raises."""
        if result.replayed and result.timing is None:
            return
        try:
            self._insert(order, result)
        except Exception:
            log.exception("alpaca order %s on %s could not be journaled", order.client_order_id, order.account_id)

    def _insert(self, order: MarketOrder, result: AlpacaOrderResult) -> None:
        placed = result.order
        timing = result.timing
        now_wall, now_ns = datetime.now(UTC), time.perf_counter_ns()
        if timing is not None:
            received_at = now_wall - timedelta(microseconds=(now_ns - timing.received_ns) / 1000)
            ms: dict[str, float | None] = dict(timing.ms())
        else:
            received_at = now_wall
            ms = dict.fromkeys(("balance_checked", "sent", "acknowledged", "filled"))
        filled_qty = sum(f.quantity for f in result.fills)
        notional = sum((f.price.amount * f.quantity for f in result.fills), Decimal(0))
        currency = result.fills[0].price.currency if result.fills else result.account.cash.currency
        with session_scope(self.session_factory) as s:
            s.execute(pg_insert(models.alpaca_orders).values(
                account_id=order.account_id, client_order_id=order.client_order_id, user_id=order.user_id,
                broker_order_id=placed.order_id, account_kind=result.kind.value, symbol=placed.symbol,
                side=placed.side.value, quantity=placed.quantity, status=placed.status.value,
                filled_quantity=filled_qty, average_price=(notional / filled_qty) if filled_qty else None,
                fee=sum((f.fee.amount for f in result.fills), Decimal(0)) if result.fills else None,
                currency=currency, reject_reason=placed.reject_reason[:500], submitted_at=placed.submitted_at,
                filled_at=placed.filled_at, received_at=received_at,
                balance_checked_ms=ms["balance_checked"], sent_ms=ms["sent"],
                acknowledged_ms=ms["acknowledged"], filled_ms=ms["filled"],
                balance_unchecked=result.balance_unchecked,
            ).on_conflict_do_nothing())

    def orders_of(self, account_id: str, since: datetime | None = None,
                  until: datetime | None = None) -> Sequence[JournaledOrder]:
        """The journaled orders of an account received in [since, until) (the caller has
        checked the account is the user's)."""
        t = models.alpaca_orders
        q = select(t).where(t.c.account_id == account_id)
        if since is not None:
            q = q.where(t.c.received_at >= since)
        if until is not None:
            q = q.where(t.c.received_at < until)
        with session_scope(self.session_factory) as s:
            rows = list(s.execute(q).mappings())
        found = []
        for r in rows:
            currency = r["currency"]
            order = Order(order_id=r["broker_order_id"], client_order_id=r["client_order_id"],
                          account_id=r["account_id"], symbol=r["symbol"], side=Side(r["side"]),
                          quantity=int(r["quantity"]), status=OrderStatus(r["status"]),
                          submitted_at=r["submitted_at"] or r["received_at"], filled_at=r["filled_at"],
                          fill_latency_ms=((r["filled_at"] - r["submitted_at"]).total_seconds() * 1000
                                           if r["filled_at"] and r["submitted_at"] else None),
                          reject_reason=r["reject_reason"], account_kind=AccountKind(r["account_kind"]))
            found.append(JournaledOrder(
                order, int(r["filled_quantity"]),
                Money(r["average_price"], currency) if r["average_price"] is not None else None,
                Money(r["fee"], currency) if r["fee"] is not None else None,
                StoredTiming(r["received_at"], r["balance_checked_ms"], r["sent_ms"], r["acknowledged_ms"],
                             r["filled_ms"]),
                r["user_id"]))
        return found


__all__ = ["JournaledOrder", "OrderJournal", "StoredTiming"]
