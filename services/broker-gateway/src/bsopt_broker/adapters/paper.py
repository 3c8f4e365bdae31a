"""The built-in paper venue: accounts, positions, orders and fills in schema ``broker``.

Market orders fill at the real historical close of the bar named by ``as_of`` (from the
market-data provider), after the balance guard; the account row is locked
(``SELECT .. FOR UPDATE``) for the whole check-and-fill, so two concurrent orders can
never both spend the same cash. Order timing is recorded with millisecond precision.
Implements :class:`bsopt_broker.domain.venue.Broker`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import RowMapping
from sqlalchemy.orm import Session, sessionmaker

from bsopt_broker import models
from bsopt_broker.domain.accounting import book_fill
from bsopt_broker.domain.balance_guard import OrderRejected, check_order
from bsopt_broker.domain.records import (
    Account,
    AccountKind,
    Fill,
    MarketOrder,
    Order,
    OrderResult,
    OrderStatus,
    Position,
)
from bsopt_broker.domain.venue import AccountNotFound, FetchProgress, OnPage
from bsopt_common.db import session_scope
from bsopt_common.errors import InvalidArgument
from bsopt_common.marketdata import MarketDataProvider
from bsopt_common.money import Money, price_decimal
from bsopt_common.vocabulary import Side

#: Paper accounts hold US dollars (the bundled bars are US listings priced in USD).
PAPER_CURRENCY = "USD"


def _now_ms() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=(now.microsecond // 1000) * 1000)


def _order(row: RowMapping) -> Order:
    return Order(order_id=row["order_id"], client_order_id=row["client_order_id"], account_id=row["account_id"],
                 symbol=row["symbol"], side=Side(row["side"]), quantity=int(row["quantity"]),
                 status=OrderStatus(row["status"]), submitted_at=row["submitted_at"], filled_at=row["filled_at"],
                 fill_latency_ms=row["fill_latency_ms"], reject_reason=row["reject_reason"])


def _fill(row: RowMapping) -> Fill:
    currency = row["currency"]
    return Fill(trade_id=row["trade_id"], order_id=row["order_id"], account_id=row["account_id"],
                symbol=row["symbol"], side=Side(row["side"]), quantity=int(row["quantity"]),
                price=Money(row["price"], currency), fee=Money(row["fee"], currency),
                executed_at=row["executed_at"])


class PaperBroker:
    """The paper venue over schema ``broker``. Blocking (call from a worker thread)."""

    name = "paper"

    def __init__(self, session_factory: sessionmaker[Session], market_data: MarketDataProvider,
                 commission_bps: Decimal):
        self.session_factory = session_factory
        self.market_data = market_data
        self.commission_bps = Decimal(commission_bps)

    def create_account(self, user_id: str, initial_cash: Money) -> Account:
        """Raises InvalidArgument for a missing user, non-positive cash or a currency
        other than USD."""
        if not user_id:
            raise InvalidArgument("user_id is required")
        if initial_cash.currency != PAPER_CURRENCY:
            raise InvalidArgument(f"paper accounts hold {PAPER_CURRENCY}, not {initial_cash.currency}")
        if not initial_cash.is_positive():
            raise InvalidArgument(f"initial_cash must be > 0, got {initial_cash}")
        account_id = str(uuid.uuid4())
        with session_scope(self.session_factory) as s:
            s.execute(models.accounts.insert().values(
                account_id=account_id, user_id=user_id, broker=self.name, currency=initial_cash.currency,
                cash=initial_cash.amount))
            return self._account(s, account_id, user_id)

    def get_account(self, account_id: str, user_id: str) -> Account:
        with session_scope(self.session_factory) as s:
            return self._account(s, account_id, user_id)

    def _account(self, s: Session, account_id: str, user_id: str, *, lock: bool = False) -> Account:
        q = select(models.accounts).where(models.accounts.c.account_id == account_id,
                                          models.accounts.c.user_id == user_id)
        if lock:
            q = q.with_for_update()
        row = s.execute(q).mappings().first()
        if row is None:
            raise AccountNotFound(f"account {account_id} not found for this user")
        currency = row["currency"]
        positions = s.execute(select(models.positions).where(
            models.positions.c.account_id == account_id, models.positions.c.quantity != 0,
        ).order_by(models.positions.c.symbol)).mappings()
        return Account(
            account_id=row["account_id"], user_id=row["user_id"], broker=row["broker"],
            cash=Money(row["cash"], currency), created_at=row["created_at"],
            positions=tuple(Position(p["symbol"], int(p["quantity"]), Money(p["average_price"], currency))
                            for p in positions),
        )

    def _existing(self, s: Session, req: MarketOrder) -> OrderResult | None:
        row = s.execute(select(models.orders).where(
            models.orders.c.account_id == req.account_id,
            models.orders.c.client_order_id == req.client_order_id)).mappings().first()
        if row is None:
            return None
        fills = tuple(_fill(f) for f in s.execute(
            select(models.fills).where(models.fills.c.order_id == row["order_id"])).mappings())
        return OrderResult(_order(row), fills, self._account(s, req.account_id, req.user_id), replayed=True)

    def submit_market_order(self, req: MarketOrder) -> OrderResult:
        """Check and fill one market order. Raises InvalidArgument (malformed order or no
        bar at ``as_of``), AccountNotFound, OrderRejected (the rejection is recorded)."""
        submitted_at = _now_ms()
        if not req.client_order_id:
            raise InvalidArgument("client_order_id is required (idempotency key)")
        symbol = req.symbol.upper()
        try:
            bar = self.market_data.fetch_snapshot(symbol, req.as_of)
        except KeyError as exc:
            raise InvalidArgument(f"no {symbol} bar at {req.as_of.date().isoformat()}: {exc}") from None
        order_id = str(uuid.uuid4())
        try:
            with session_scope(self.session_factory) as s:
                account = self._account(s, req.account_id, req.user_id, lock=True)
                if (existing := self._existing(s, req)) is not None:
                    return existing
                price = Money(price_decimal(bar.close), account.currency)
                held = account.position(symbol)
                cost = check_order(side=req.side, quantity=req.quantity, price=price, cash=account.cash,
                                   position_quantity=held.quantity if held else 0,
                                   commission_bps=self.commission_bps)
                booking = book_fill(side=req.side, symbol=symbol, quantity=req.quantity, cost=cost,
                                    cash=account.cash, held=held)
                s.execute(models.accounts.update().where(models.accounts.c.account_id == req.account_id)
                          .values(cash=booking.cash.amount))
                pos = booking.position
                s.execute(pg_insert(models.positions).values(
                    account_id=req.account_id, symbol=symbol, quantity=pos.quantity,
                    average_price=pos.average_price.amount,
                ).on_conflict_do_update(index_elements=["account_id", "symbol"],
                                        set_={"quantity": pos.quantity, "average_price": pos.average_price.amount}))
                filled_at = _now_ms()
                order = Order(order_id=order_id, client_order_id=req.client_order_id, account_id=req.account_id,
                              symbol=symbol, side=req.side, quantity=req.quantity, status=OrderStatus.FILLED,
                              submitted_at=submitted_at, filled_at=filled_at,
                              fill_latency_ms=(filled_at - submitted_at).total_seconds() * 1000.0)
                s.execute(models.orders.insert().values(
                    order_id=order.order_id, client_order_id=order.client_order_id, account_id=order.account_id,
                    symbol=symbol, side=order.side.value, quantity=order.quantity, status=order.status.value,
                    reject_reason="", submitted_at=submitted_at, filled_at=filled_at,
                    fill_latency_ms=order.fill_latency_ms))
                fill = Fill(trade_id=str(uuid.uuid4()), order_id=order_id, account_id=req.account_id, symbol=symbol,
                            side=req.side, quantity=req.quantity, price=price, fee=cost.fee,
                            executed_at=bar.time.replace(tzinfo=UTC))
                s.execute(models.fills.insert().values(
                    trade_id=fill.trade_id, order_id=order_id, account_id=fill.account_id, symbol=symbol,
                    side=fill.side.value, quantity=fill.quantity, price=fill.price.amount, fee=fill.fee.amount,
                    currency=account.currency, executed_at=fill.executed_at))
                return OrderResult(order, (fill,), self._account(s, req.account_id, req.user_id))
        except OrderRejected as exc:
            self._record_rejection(req, order_id, submitted_at, str(exc))
            raise

    def _record_rejection(self, req: MarketOrder, order_id: str, submitted_at: datetime, reason: str) -> None:
        with session_scope(self.session_factory) as s:
            s.execute(pg_insert(models.orders).values(
                order_id=order_id, client_order_id=req.client_order_id, account_id=req.account_id,
                symbol=req.symbol.upper(), side=req.side.value, quantity=req.quantity,
                status=OrderStatus.REJECTED.value, reject_reason=reason[:300], submitted_at=submitted_at,
            ).on_conflict_do_nothing())

    def fills_between(self, account_id: str, user_id: str, start: datetime, end: datetime, *,
                      on_page: OnPage | None = None) -> list[Fill]:
        """Fills of the account with ``start <= executed_at < end``, oldest first (one
        query: one page for ``on_page``)."""
        with session_scope(self.session_factory) as s:
            self._account(s, account_id, user_id)
            rows = s.execute(select(models.fills).where(
                models.fills.c.account_id == account_id, models.fills.c.executed_at >= start,
                models.fills.c.executed_at < end).order_by(models.fills.c.executed_at, models.fills.c.trade_id))
            fills = [_fill(r) for r in rows.mappings()]
        if on_page is not None:
            on_page(FetchProgress(1, len(fills), AccountKind.PAPER))
        return fills
