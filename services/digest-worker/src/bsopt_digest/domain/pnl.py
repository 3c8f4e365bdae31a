"""Round trips matched FIFO from scored trades, and their realised P&L.

Pure logic. Per symbol, trades are replayed in execution order (ties by ``trade_id``);
each keeps a queue of open lots. A trade first closes open lots of the opposite
direction, oldest first (a SELL closes bought lots, a BUY closes sold-short lots); what
is left of it opens a lot of its own direction. Every (open lot, closing trade) pair is
one :class:`RoundTrip` of the quantity they share:

* LONG (bought, then sold): ``pnl = (close_price - open_price) x quantity``;
* SHORT (sold, then bought back): ``pnl = (open_price - close_price) x quantity``.

A round trip is *closed* when its closing trade executes, and its P&L is realised then:
the week's P&L is the sum of the round trips closed in the week, which needs every
earlier trade of the user (lots opened weeks before). Amounts are exact
:class:`~bsopt_common.money.Money`; an open and a close in different currencies raise
:class:`~bsopt_common.money.CurrencyMismatch`.

Hand-computed example (the unit tests hold it): BUY 10 @ 100, BUY 5 @ 110, SELL 12 @ 120
gives two LONG round trips: 10 x (120 - 100) = +200 and 2 x (120 - 110) = +20; a later
SELL 3 @ 90 closes the remaining 3 @ 110: 3 x (90 - 110) = -60.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from bsopt_common.money import Money
from bsopt_common.vocabulary import Side
from bsopt_digest.domain.digest import ScoredTradeRecord

LONG = "LONG"
SHORT = "SHORT"


@dataclass(frozen=True, slots=True)
class RoundTrip:
    """One open lot (or part of it) closed by one trade."""

    symbol: str
    open_trade_id: str
    close_trade_id: str
    quantity: int
    direction: str
    open_price: Money
    close_price: Money
    pnl: Money
    opened_at: datetime
    closed_at: datetime


def utc(at: datetime) -> datetime:
    """``at`` as an aware UTC datetime (a naive one is taken as UTC)."""
    if at.tzinfo is None or at.utcoffset() is None:
        return at.replace(tzinfo=UTC)
    return at.astimezone(UTC)


def trade_order(r: ScoredTradeRecord) -> tuple[datetime, str]:
    """Execution order: time (UTC), then trade id."""
    return utc(r.executed_at), r.trade_id


@dataclass(slots=True)
class _Lot:
    trade: ScoredTradeRecord
    remaining: int


def match_round_trips(records: Iterable[ScoredTradeRecord]) -> list[RoundTrip]:
    """Every FIFO round trip of ``records`` (any users' trades are kept apart by user and
    symbol), in the order they were closed.

    Records with the same ``trade_id`` count once (the last wins, as in
    :func:`~bsopt_digest.domain.digest.build_weekly_digests`).

    Raises:
        CurrencyMismatch: an open lot and its closing trade are priced in different
            currencies.
    """
    latest: dict[str, ScoredTradeRecord] = {}
    for r in records:
        latest[r.trade_id] = r
    lots: dict[tuple[str, str], deque[_Lot]] = {}
    trips: list[RoundTrip] = []
    for t in sorted(latest.values(), key=trade_order):
        book = lots.setdefault((t.user_id, t.symbol), deque())
        closing = SHORT if t.side is Side.BUY else LONG  # the direction this trade closes
        left = t.quantity
        while left and book and _direction(book[0].trade) == closing:
            lot = book[0]
            qty = min(left, lot.remaining)
            diff = (t.price - lot.trade.price) * qty
            pnl = diff if closing == LONG else -diff
            trips.append(RoundTrip(
                symbol=t.symbol, open_trade_id=lot.trade.trade_id, close_trade_id=t.trade_id, quantity=qty,
                direction=closing, open_price=lot.trade.price, close_price=t.price, pnl=pnl,
                opened_at=utc(lot.trade.executed_at), closed_at=utc(t.executed_at)))
            lot.remaining -= qty
            left -= qty
            if lot.remaining == 0:
                book.popleft()
        if left:
            book.append(_Lot(t, left))
    return trips


def _direction(t: ScoredTradeRecord) -> str:
    return LONG if t.side is Side.BUY else SHORT
