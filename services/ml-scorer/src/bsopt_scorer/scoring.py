"""Score one imported trade: features from the real bars up to and including the
trade's bar (no look-ahead), the bias tag with its explanation, a reflection (in the
user's tone, from the configured :class:`~bsopt_scorer.domain.reflections.Reflector`:
templates by default); stored with the features it used and the reflection's provider,
and published as ``trades.scored.v1`` via the outbox."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, date, datetime, time

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import RowMapping
from sqlalchemy.orm import Session

from bsopt.broker_gateway.v1 import events_pb2 as broker_events
from bsopt.ml_scorer.v1 import events_pb2
from bsopt.ml_scorer.v1 import ml_scorer_pb2 as pb
from bsopt_common import codec, topics
from bsopt_common.events import Outbox
from bsopt_common.marketdata import EXCHANGE_TZ, MarketDataProvider
from bsopt_common.money import Money
from bsopt_common.vocabulary import BiasLabel, Side
from bsopt_scorer import models
from bsopt_scorer.domain.features import TradeFeatures, features_at, is_daily
from bsopt_scorer.domain.records import ScoredTrade
from bsopt_scorer.domain.reflections import Reflector
from bsopt_scorer.domain.tags import tag_trade
from bsopt_scorer.reflections import reflection_tone


def scored_trade_pb(trade: ScoredTrade) -> pb.ScoredTrade:
    return codec.to_message(trade, pb.ScoredTrade)


def bar_key(executed_at: datetime, *, daily: bool) -> datetime | date:
    """What a fill's bar is looked up by (:func:`bsopt_scorer.domain.features.locate_bar`).

    Intraday bars: the UTC instant. Daily bars: the exchange's trading day of the fill,
    in New York time, since a fill at 01:30 UTC on the 5th happened at 20:30 (EDT) on the
    4th, in the 4th's extended session, and belongs to the 4th's bar (by UTC date it got
    the 5th's bar, whose close came 20 hours later). An instant at exactly midnight UTC on
    daily bars is a bar's own stamp (the paper broker fills at bar times) and keeps its
    date. ``executed_at`` must be timezone-aware (naive is taken as UTC)."""
    utc = executed_at.replace(tzinfo=UTC) if executed_at.tzinfo is None else executed_at.astimezone(UTC)
    if not daily or utc.time() == time(0):
        return utc.replace(tzinfo=None)
    return utc.astimezone(EXCHANGE_TZ).date()


def _scored(row: RowMapping) -> ScoredTrade:
    return ScoredTrade(
        trade_id=row["trade_id"], user_id=row["user_id"], account_id=row["account_id"], symbol=row["symbol"],
        side=Side(row["side"]), quantity=int(row["quantity"]), price=Money(row["price"], row["currency"]),
        executed_at=row["executed_at"], label=BiasLabel(row["label"]), rule=row["rule"],
        explanation=row["explanation"], features=TradeFeatures(**row["features"]), reflection=row["reflection"],
        scored_at=row["scored_at"],
    )


class TradeScorer:
    def __init__(self, market_data: MarketDataProvider, outbox: Outbox, reflector: Reflector | None = None):
        self.market_data = market_data
        self.outbox = outbox
        self.reflector = reflector if reflector is not None else Reflector()

    def score(self, trade: broker_events.TradeImported, session: Session) -> ScoredTrade:
        """Raises InvalidArgument for a malformed event, InsufficientHistoryError /
        BarNotFoundError (from features_at) and UnknownSymbolError: permanent errors,
        dead-lettered by the consumer."""
        side = codec.SIDE.from_pb(trade.side, "side")
        executed_at = codec.required_timestamp(trade, "executed_at")
        price = codec.money_from_pb(trade, "price")
        # the UTC date is never before the New York one: the fill's bar is in the slice
        bars = self.market_data.fetch_history(trade.symbol, end=executed_at.astimezone(UTC).date())
        features = features_at(bars, bar_key(executed_at, daily=is_daily(bars.index)))
        tag = tag_trade(side.value, features)
        # only the side, the tag and the features reach a provider (never ids); a provider's
        # failure is the template, never an error here
        reflected = self.reflector.reflect(side.value, tag.label, tag.rule, features,
                                           reflection_tone(session, trade.user_id))
        scored = ScoredTrade(
            trade_id=trade.trade_id, user_id=trade.user_id, account_id=trade.account_id, symbol=trade.symbol,
            side=side, quantity=trade.quantity, price=price, executed_at=executed_at, label=BiasLabel(tag.label),
            rule=tag.rule, explanation=tag.explanation, features=features,
            reflection=reflected.text, scored_at=datetime.now(UTC),
        )
        inserted = session.execute(pg_insert(models.scored_trades).values(
            trade_id=scored.trade_id, user_id=scored.user_id, account_id=scored.account_id, symbol=scored.symbol,
            side=scored.side.value, quantity=scored.quantity, price=price.amount, currency=price.currency,
            executed_at=executed_at, label=scored.label.value, rule=scored.rule, explanation=scored.explanation,
            reflection=scored.reflection, reflection_provider=reflected.provider, features=asdict(features),
            scored_at=scored.scored_at,
        ).on_conflict_do_nothing().returning(models.scored_trades.c.trade_id)).first()
        if inserted is not None:
            self.outbox.add(session, topics.TRADES_SCORED, events_pb2.TradeScored(trade=scored_trade_pb(scored)))
        return scored


def list_scored(session: Session, user_id: str, limit: int) -> list[ScoredTrade]:
    rows = session.execute(select(models.scored_trades).where(models.scored_trades.c.user_id == user_id)
                           .order_by(models.scored_trades.c.executed_at.desc()).limit(limit)).mappings()
    return [_scored(r) for r in rows]
