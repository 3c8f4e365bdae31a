"""Listing one account's orders and fills (ListOrders, ListFills): newest first, keyset
pages, each record marked with the account's kind (paper or live).

Paper accounts are read from Postgres (``broker.orders`` and ``broker.fills``, which hold
the paper venue's records): ``WHERE (time, id) < (cursor) ORDER BY time DESC, id DESC
LIMIT n + 1``, never OFFSET. Alpaca accounts (the accounts file, broker connections) keep
no orders or fills here: their fills are read from the venue (Alpaca's FILL activities in
the window, through the router, which checks the owner and marks the detected kind), and
their orders are the venue's filled orders rebuilt from those fills; the same cursor
applies to them.

The page token is opaque to callers: base64url of a small JSON naming the listing, the
account and the last (time, id) of the page. A token that does not decode, or that
belongs to another listing or account, is INVALID_ARGUMENT.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Generic, Literal, TypeVar

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from bsopt_broker import models
from bsopt_broker.adapters.router import VenueRouter
from bsopt_broker.domain.records import AccountKind, Fill, Order, OrderStatus
from bsopt_broker.domain.venue import AccountNotFound, Broker
from bsopt_broker.order_journal import OrderJournal, StoredTiming
from bsopt_common.db import session_scope
from bsopt_common.errors import InvalidArgument
from bsopt_common.money import Money
from bsopt_common.vocabulary import Side

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
#: Where a venue read without ``since`` starts (before any account existed).
_VENUE_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

Kind = Literal["orders", "fills"]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PageRequest:
    account_id: str
    user_id: str
    page_size: int = 0
    page_token: str = ""
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class Cursor:
    at: datetime
    id: str


@dataclass(frozen=True, slots=True)
class ListedOrder:
    """An order with what its fills add up to (``filled_quantity`` 0: nothing filled).
    ``rebuilt``: read back from the venue's fills (Alpaca), so its submission time and
    client order id are unknown (``order.submitted_at`` is only its place in the order)."""

    order: Order
    filled_quantity: int
    average_price: Money | None
    fee: Money | None
    rebuilt: bool = False
    #: Alpaca orders placed through broker-gateway: their stored timing.
    timing: StoredTiming | None = None


@dataclass(frozen=True, slots=True)
class ListedFill:
    fill: Fill
    client_order_id: str


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_page_token: str


def page_size_of(requested: int) -> int:
    """0 is the default (50); 1..500 as asked; anything else is INVALID_ARGUMENT."""
    if requested == 0:
        return DEFAULT_PAGE_SIZE
    if not 1 <= requested <= MAX_PAGE_SIZE:
        raise InvalidArgument(f"page_size must be between 1 and {MAX_PAGE_SIZE} (0: {DEFAULT_PAGE_SIZE}), "
                              f"got {requested}")
    return requested


def encode_token(kind: Kind, account_id: str, cursor: Cursor) -> str:
    raw = json.dumps({"v": 1, "k": kind, "a": account_id, "t": cursor.at.astimezone(UTC).isoformat(),
                      "i": cursor.id}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(kind: Kind, account_id: str, token: str) -> Cursor | None:
    """The cursor of ``token`` (None for an empty token); INVALID_ARGUMENT when it is not
    one of ours or was made for another listing or account."""
    if not token:
        return None
    bad = InvalidArgument("page_token is not valid for this listing: use the next_page_token of "
                          "the previous page")
    if len(token) > 1000:
        raise bad
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if not (isinstance(data, dict) and data.get("v") == 1 and data.get("k") == kind
                and data.get("a") == account_id and isinstance(data.get("i"), str)
                and isinstance(data.get("t"), str)):
            raise bad
        at = datetime.fromisoformat(data["t"])
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise bad from None
    if at.tzinfo is None:
        raise bad
    return Cursor(at.astimezone(UTC), data["i"])


def _window(since: datetime | None, until: datetime | None) -> None:
    if since is not None and until is not None and not until > since:
        raise InvalidArgument(f"until ({until.isoformat()}) must be after since ({since.isoformat()})")


def _page(kind: Kind, account_id: str, rows: Sequence[T], size: int, key: Cursor | None) -> Page[T]:
    """``rows`` holds up to ``size + 1`` items; ``key`` is the cursor of item ``size - 1``."""
    if len(rows) > size and key is not None:
        return Page(list(rows[:size]), encode_token(kind, account_id, key))
    return Page(list(rows[:size]), "")


class Listing:
    """Reads one account's orders and fills for its owner."""

    def __init__(self, session_factory: sessionmaker[Session], broker: Broker):
        self.session_factory = session_factory
        self.broker = broker

    def _is_venue(self, account_id: str) -> bool:
        return isinstance(self.broker, VenueRouter) and self.broker.is_alpaca(account_id)

    # -- orders ------------------------------------------------------------------------

    def orders(self, req: PageRequest) -> Page[ListedOrder]:
        """Raises InvalidArgument (page size, token, window), AccountNotFound (not the
        caller's account), Unavailable (Alpaca)."""
        if not req.account_id:
            raise InvalidArgument("account_id is required")
        size = page_size_of(req.page_size)
        cursor = decode_token("orders", req.account_id, req.page_token)
        _window(req.since, req.until)
        if self._is_venue(req.account_id):
            return self._venue_orders(req, size, cursor)
        o, f = models.orders, models.fills
        with session_scope(self.session_factory) as s:
            currency = self._paper_currency(s, req)
            q = select(o).where(o.c.account_id == req.account_id)
            if req.since is not None:
                q = q.where(o.c.submitted_at >= req.since)
            if req.until is not None:
                q = q.where(o.c.submitted_at < req.until)
            if cursor is not None:
                q = q.where(or_(o.c.submitted_at < cursor.at,
                                and_(o.c.submitted_at == cursor.at, o.c.order_id < cursor.id)))
            rows = list(s.execute(q.order_by(o.c.submitted_at.desc(), o.c.order_id.desc())
                                  .limit(size + 1)).mappings())
            ids = [r["order_id"] for r in rows]
            sums = {r["order_id"]: r for r in s.execute(
                select(f.c.order_id, func.sum(f.c.quantity).label("quantity"),
                       func.sum(f.c.price * f.c.quantity).label("notional"), func.sum(f.c.fee).label("fee"))
                .where(f.c.order_id.in_(ids)).group_by(f.c.order_id)).mappings()} if ids else {}
        items = []
        for r in rows:
            order = Order(order_id=r["order_id"], client_order_id=r["client_order_id"], account_id=r["account_id"],
                          symbol=r["symbol"], side=Side(r["side"]), quantity=int(r["quantity"]),
                          status=OrderStatus(r["status"]), submitted_at=r["submitted_at"],
                          filled_at=r["filled_at"], fill_latency_ms=r["fill_latency_ms"],
                          reject_reason=r["reject_reason"], account_kind=AccountKind.PAPER)
            agg = sums.get(r["order_id"])
            qty = int(agg["quantity"]) if agg is not None else 0
            items.append(ListedOrder(
                order, qty,
                Money(Decimal(agg["notional"]) / qty, currency) if agg is not None and qty else None,
                Money(Decimal(agg["fee"]), currency) if agg is not None else None))
        key = (Cursor(items[size - 1].order.submitted_at, items[size - 1].order.order_id)
               if len(items) > size else None)
        return _page("orders", req.account_id, items, size, key)

    def _venue_orders(self, req: PageRequest, size: int, cursor: Cursor | None) -> Page[ListedOrder]:
        """The orders placed through broker-gateway (the journal: client order id, times,
        timing), then the filled orders of the venue's fills that it did not place
        (rebuilt from the fills)."""
        fills = self._venue_fills_all(req)  # also checks that the account is the caller's
        items: list[tuple[Cursor, ListedOrder]] = []
        journaled = set()
        for j in OrderJournal(self.session_factory).orders_of(req.account_id, req.since, req.until):
            journaled.add(j.order.order_id)
            items.append((Cursor(j.order.submitted_at, j.order.order_id),
                          ListedOrder(j.order, j.filled_quantity, j.average_price, j.fee, timing=j.timing)))
        by_order: dict[str, list[Fill]] = {}
        for fill in fills:
            if fill.order_id not in journaled:
                by_order.setdefault(fill.order_id, []).append(fill)
        for order_id, parts in by_order.items():
            first, last = min(parts, key=lambda p: p.executed_at), max(parts, key=lambda p: p.executed_at)
            qty = sum(p.quantity for p in parts)
            currency = first.price.currency
            notional = sum((p.price.amount * p.quantity for p in parts), Decimal(0))
            fee = sum((p.fee.amount for p in parts), Decimal(0))
            order = Order(order_id=order_id, client_order_id="", account_id=req.account_id, symbol=first.symbol,
                          side=first.side, quantity=qty, status=OrderStatus.FILLED, submitted_at=last.executed_at,
                          filled_at=last.executed_at, account_kind=first.account_kind)
            items.append((Cursor(last.executed_at, order_id),
                          ListedOrder(order, qty, Money(notional / qty, currency) if qty else None,
                                      Money(fee, currency), rebuilt=True)))
        return self._memory_page("orders", req, size, cursor, items)

    # -- fills -------------------------------------------------------------------------

    def fills(self, req: PageRequest) -> Page[ListedFill]:
        """Raises as :meth:`orders`."""
        if not req.account_id:
            raise InvalidArgument("account_id is required")
        size = page_size_of(req.page_size)
        cursor = decode_token("fills", req.account_id, req.page_token)
        _window(req.since, req.until)
        if self._is_venue(req.account_id):
            items = [(Cursor(f.executed_at, f.trade_id), ListedFill(f, "")) for f in self._venue_fills_all(req)]
            return self._memory_page("fills", req, size, cursor, items)
        f, o = models.fills, models.orders
        with session_scope(self.session_factory) as s:
            self._paper_currency(s, req)
            q = (select(f, o.c.client_order_id).join(o, o.c.order_id == f.c.order_id)
                 .where(f.c.account_id == req.account_id))
            if req.since is not None:
                q = q.where(f.c.executed_at >= req.since)
            if req.until is not None:
                q = q.where(f.c.executed_at < req.until)
            if cursor is not None:
                q = q.where(or_(f.c.executed_at < cursor.at,
                                and_(f.c.executed_at == cursor.at, f.c.trade_id < cursor.id)))
            rows = list(s.execute(q.order_by(f.c.executed_at.desc(), f.c.trade_id.desc())
                                  .limit(size + 1)).mappings())
        items = [ListedFill(Fill(trade_id=r["trade_id"], order_id=r["order_id"], account_id=r["account_id"],
                                 symbol=r["symbol"], side=Side(r["side"]), quantity=int(r["quantity"]),
                                 price=Money(r["price"], r["currency"]), fee=Money(r["fee"], r["currency"]),
                                 executed_at=r["executed_at"], account_kind=AccountKind.PAPER),
                            r["client_order_id"]) for r in rows]
        key = Cursor(items[size - 1].fill.executed_at, items[size - 1].fill.trade_id) if len(items) > size else None
        return _page("fills", req.account_id, items, size, key)

    # -- shared ------------------------------------------------------------------------

    def _paper_currency(self, s: Session, req: PageRequest) -> str:
        a = models.accounts
        currency = s.execute(select(a.c.currency).where(a.c.account_id == req.account_id,
                                                        a.c.user_id == req.user_id)).scalar_one_or_none()
        if currency is None:
            raise AccountNotFound(f"account {req.account_id} not found for this user")
        return str(currency)

    def _venue_fills_all(self, req: PageRequest) -> list[Fill]:
        """Every venue fill of the window (the router checks the owner and marks the kind)."""
        start = req.since or _VENUE_EPOCH
        end = req.until or datetime.now(UTC) + timedelta(days=1)
        return self.broker.fills_between(req.account_id, req.user_id, start, end)

    @staticmethod
    def _memory_page(kind: Kind, req: PageRequest, size: int, cursor: Cursor | None,
                     items: list[tuple[Cursor, T]]) -> Page[T]:
        """The same keyset page over records read from the venue."""
        ordered = sorted(items, key=lambda kv: (kv[0].at, kv[0].id), reverse=True)
        if cursor is not None:
            ordered = [kv for kv in ordered if (kv[0].at, kv[0].id) < (cursor.at, cursor.id)]
        key = ordered[size - 1][0] if len(ordered) > size else None
        return _page(kind, req.account_id, [v for _, v in ordered[:size + 1]], size, key)
