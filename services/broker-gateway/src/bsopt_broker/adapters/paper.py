"""The built-in paper broker: accounts, positions, orders and fills in schema ``broker``.

Market orders fill at the real historical close of the bar named by ``as_of`` (from the
market-data provider), after the balance guard; the account row is locked
(``SELECT .. FOR UPDATE``) for the whole check-and-fill, so two concurrent orders can
never both spend the same cash. Order timing is recorded with millisecond precision.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session, sessionmaker

from bsopt_broker import models
from bsopt_broker.domain.balance_guard import OrderRejected, Side, check_order
from bsopt_common.db import session_scope
from bsopt_common.marketdata import MarketDataProvider

BROKER = "paper"


class AccountNotFound(LookupError):
    """No such account for this user."""


def _now_ms() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=(now.microsecond // 1000) * 1000)


@dataclass(frozen=True)
class OrderRequest:
    account_id: str
    user_id: str
    client_order_id: str
    symbol: str
    side: Side
    quantity: int
    as_of: datetime


@dataclass(frozen=True)
class OrderResult:
    order: dict
    fills: list[dict]
    account: dict
    positions: list[dict]


class PaperBroker:
    def __init__(self, session_factory: sessionmaker[Session], market_data: MarketDataProvider,
                 commission_bps: float):
        self.session_factory = session_factory
        self.market_data = market_data
        self.commission_bps = commission_bps

    def create_account(self, user_id: str, initial_cash_usd: float) -> tuple[dict, list[dict]]:
        if not user_id:
            raise ValueError("user_id is required")
        if not initial_cash_usd > 0:
            raise ValueError(f"initial_cash_usd must be > 0, got {initial_cash_usd}")
        account_id = str(uuid.uuid4())
        with session_scope(self.session_factory) as s:
            s.execute(models.accounts.insert().values(
                account_id=account_id, user_id=user_id, broker=BROKER, currency="USD", cash_usd=initial_cash_usd))
        return self.get_account(account_id, user_id)

    def _account(self, s: Session, account_id: str, user_id: str, *, lock: bool = False) -> dict:
        q = select(models.accounts).where(models.accounts.c.account_id == account_id,
                                          models.accounts.c.user_id == user_id)
        if lock:
            q = q.with_for_update()
        row = s.execute(q).mappings().first()
        if row is None:
            raise AccountNotFound(f"account {account_id} not found for this user")
        return dict(row)

    def _positions(self, s: Session, account_id: str) -> list[dict]:
        rows = s.execute(select(models.positions).where(models.positions.c.account_id == account_id)
                         .order_by(models.positions.c.symbol)).mappings().all()
        return [dict(r) for r in rows if r["quantity"] != 0]

    def get_account(self, account_id: str, user_id: str) -> tuple[dict, list[dict]]:
        with session_scope(self.session_factory) as s:
            return self._account(s, account_id, user_id), self._positions(s, account_id)

    def _existing(self, s: Session, req: OrderRequest) -> OrderResult | None:
        row = s.execute(select(models.orders).where(
            models.orders.c.account_id == req.account_id,
            models.orders.c.client_order_id == req.client_order_id)).mappings().first()
        if row is None:
            return None
        fills = [dict(f) for f in s.execute(
            select(models.fills).where(models.fills.c.order_id == row["order_id"])).mappings()]
        return OrderResult(dict(row), fills, self._account(s, req.account_id, req.user_id),
                           self._positions(s, req.account_id))

    def place_market_order(self, req: OrderRequest) -> OrderResult:
        """Check and fill one market order. Raises ValueError (malformed order or no bar
        at ``as_of``), AccountNotFound, OrderRejected (the rejection is recorded)."""
        submitted_at = _now_ms()
        if not req.client_order_id:
            raise ValueError("client_order_id is required (idempotency key)")
        try:
            bar = self.market_data.fetch_snapshot(req.symbol, req.as_of)
        except KeyError as exc:
            raise ValueError(f"no {req.symbol} bar at {req.as_of.date().isoformat()}: {exc}") from None
        order_id = str(uuid.uuid4())
        try:
            with session_scope(self.session_factory) as s:
                account = self._account(s, req.account_id, req.user_id, lock=True)
                if (existing := self._existing(s, req)) is not None:
                    return existing
                pos = s.execute(select(models.positions).where(
                    models.positions.c.account_id == req.account_id,
                    models.positions.c.symbol == req.symbol.upper())).mappings().first()
                held = int(pos["quantity"]) if pos else 0
                cost = check_order(side=req.side, quantity=req.quantity, price_usd=bar.close,
                                   cash_usd=float(account["cash_usd"]), position_quantity=held,
                                   commission_bps=self.commission_bps)
                if req.side is Side.BUY:
                    cash = account["cash_usd"] - cost.notional_usd - cost.fee_usd
                    new_qty = held + req.quantity
                    avg = ((pos["average_price_usd"] * held if pos else 0.0) + cost.notional_usd) / new_qty
                else:
                    cash = account["cash_usd"] + cost.notional_usd - cost.fee_usd
                    new_qty = held - req.quantity
                    avg = pos["average_price_usd"] if new_qty else 0.0
                s.execute(models.accounts.update().where(models.accounts.c.account_id == req.account_id)
                          .values(cash_usd=cash))
                s.execute(pg_insert(models.positions).values(
                    account_id=req.account_id, symbol=req.symbol.upper(), quantity=new_qty, average_price_usd=avg,
                ).on_conflict_do_update(index_elements=["account_id", "symbol"],
                                        set_={"quantity": new_qty, "average_price_usd": avg}))
                filled_at = _now_ms()
                order = dict(order_id=order_id, client_order_id=req.client_order_id, account_id=req.account_id,
                             symbol=req.symbol.upper(), side=req.side.value, quantity=req.quantity, status="FILLED",
                             reject_reason="", submitted_at=submitted_at, filled_at=filled_at,
                             fill_latency_ms=(filled_at - submitted_at).total_seconds() * 1000.0)
                s.execute(models.orders.insert().values(**order))
                executed_at = bar.time.replace(tzinfo=UTC)
                fill = dict(trade_id=str(uuid.uuid4()), order_id=order_id, account_id=req.account_id,
                            symbol=req.symbol.upper(), side=req.side.value, quantity=req.quantity,
                            price_usd=bar.close, fee_usd=cost.fee_usd, executed_at=executed_at)
                s.execute(models.fills.insert().values(**fill))
                account["cash_usd"] = cash
                return OrderResult(order, [fill], account, self._positions(s, req.account_id))
        except OrderRejected as exc:
            self._record_rejection(req, order_id, submitted_at, str(exc))
            raise

    def _record_rejection(self, req: OrderRequest, order_id: str, submitted_at: datetime, reason: str) -> None:
        with session_scope(self.session_factory) as s:
            s.execute(pg_insert(models.orders).values(
                order_id=order_id, client_order_id=req.client_order_id, account_id=req.account_id,
                symbol=req.symbol.upper(), side=req.side.value, quantity=req.quantity, status="REJECTED",
                reject_reason=reason[:300], submitted_at=submitted_at,
            ).on_conflict_do_nothing())

    def list_fills(self, account_id: str, user_id: str, start: datetime, end: datetime) -> list[dict]:
        """Fills of the account with ``start <= executed_at < end``, oldest first."""
        with session_scope(self.session_factory) as s:
            self._account(s, account_id, user_id)
            rows = s.execute(select(models.fills).where(
                models.fills.c.account_id == account_id, models.fills.c.executed_at >= start,
                models.fills.c.executed_at < end).order_by(models.fills.c.executed_at, models.fills.c.trade_id))
            return [dict(r) for r in rows.mappings()]
