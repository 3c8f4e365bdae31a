"""Reading a user's scored trades: filtered, keyset-paged (``ListScoredTrades``), or one
by id (``GetScoredTrade``).

Pages are newest first on (``executed_at``, ``trade_id``), the next page starting after
the last row of this one (never OFFSET): a trade scored meanwhile lands on the first page
if it is the newest, and never shifts rows between later pages. The page token is
base64url JSON of that last key plus a digest of the filters, so a token used with other
filters, or altered, is INVALID_ARGUMENT rather than a silently wrong page.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from bsopt_common.errors import InvalidArgument, NotFound
from bsopt_scorer import models
from bsopt_scorer.domain.records import ScoredTrade
from bsopt_scorer.scoring import _scored

MAX_PAGE = 500
_MAX_TOKEN = 512


@dataclass(frozen=True, slots=True)
class TradeFilter:
    """``executed_at`` in [since, until) (aware datetimes or None), one symbol, one label
    (the stored label name, e.g. ``"FOMO"``) — empty strings: any."""

    since: datetime | None = None
    until: datetime | None = None
    symbol: str = ""
    label: str = ""

    def digest(self) -> str:
        text = "|".join((self.since.isoformat() if self.since else "", self.until.isoformat() if self.until else "",
                         self.symbol, self.label))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class TradePage:
    trades: list[ScoredTrade]
    next_page_token: str


def _token(last: ScoredTrade, f: TradeFilter) -> str:
    raw = json.dumps({"t": last.executed_at.isoformat(), "id": last.trade_id, "f": f.digest()},
                     separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _after(token: str, f: TradeFilter) -> tuple[datetime, str] | None:
    if not token:
        return None
    try:
        if len(token) > _MAX_TOKEN:
            raise ValueError("too long")
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        at, trade_id, digest = datetime.fromisoformat(data["t"]), str(data["id"]), str(data["f"])
        if at.tzinfo is None:
            raise ValueError("naive time")
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        raise InvalidArgument("page_token is not a token of this listing") from None
    if digest != f.digest():
        raise InvalidArgument("page_token belongs to a listing with other filters")
    return at, trade_id


def list_trades(session: Session, user_id: str, f: TradeFilter, limit: int, page_token: str = "") -> TradePage:
    """Up to ``limit`` (1..:data:`MAX_PAGE`) of the user's scored trades matching ``f``,
    newest first, and the token of the next page ("" on the last). Raises
    InvalidArgument for a bad limit, window or token."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidArgument(f"page_size must be between 1 and {MAX_PAGE}")
    if f.since is not None and f.until is not None and not f.since < f.until:
        raise InvalidArgument("since must be before until")
    after = _after(page_token, f)
    t = models.scored_trades
    q = select(t).where(t.c.user_id == user_id)
    if f.since is not None:
        q = q.where(t.c.executed_at >= f.since)
    if f.until is not None:
        q = q.where(t.c.executed_at < f.until)
    if f.symbol:
        q = q.where(t.c.symbol == f.symbol)
    if f.label:
        q = q.where(t.c.label == f.label)
    if after is not None:
        q = q.where(or_(t.c.executed_at < after[0], and_(t.c.executed_at == after[0], t.c.trade_id < after[1])))
    rows = list(session.execute(q.order_by(t.c.executed_at.desc(), t.c.trade_id.desc()).limit(limit + 1))
                .mappings())
    trades = [_scored(r) for r in rows[:limit]]
    return TradePage(trades, _token(trades[-1], f) if len(rows) > limit else "")


def get_trade(session: Session, user_id: str, trade_id: str) -> ScoredTrade:
    """One of the user's scored trades. Raises NotFound (unknown, or another user's)."""
    if not trade_id or len(trade_id) > 128:
        raise NotFound("no such scored trade")
    t = models.scored_trades
    row = session.execute(select(t).where(t.c.trade_id == trade_id, t.c.user_id == user_id)).mappings().first()
    if row is None:
        raise NotFound(f"no scored trade {trade_id!r} for this user")
    return _scored(row)


__all__ = ["MAX_PAGE", "TradeFilter", "TradePage", "get_trade", "list_trades"]
