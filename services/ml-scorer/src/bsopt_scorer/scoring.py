"""Score one imported trade: features from the real bars up to and including the
trade's bar (no look-ahead), the bias tag with its explanation, a reflection; stored
with the features it used, and published as ``trades.scored.v1`` via the outbox."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from bsopt.broker_gateway.v1 import broker_gateway_pb2 as bpb
from bsopt.broker_gateway.v1 import events_pb2 as broker_events
from bsopt.ml_scorer.v1 import events_pb2
from bsopt.ml_scorer.v1 import ml_scorer_pb2 as pb
from bsopt_common.events import Outbox
from bsopt_common.marketdata import MarketDataProvider
from bsopt_scorer import models
from bsopt_scorer.domain.features import TradeFeatures, features_at
from bsopt_scorer.domain.tags import reflection, tag_trade

TOPIC_TRADES_SCORED = "trades.scored.v1"
LABELS_PB = {"FOMO": pb.BIAS_LABEL_FOMO, "PANIC": pb.BIAS_LABEL_PANIC, "DISCIPLINE": pb.BIAS_LABEL_DISCIPLINE,
             "NONE": pb.BIAS_LABEL_NONE}


def _ts(dt: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(dt)
    return t


def scored_trade_pb(row: dict) -> pb.ScoredTrade:
    return pb.ScoredTrade(
        trade_id=row["trade_id"], user_id=row["user_id"], account_id=row["account_id"], symbol=row["symbol"],
        side=bpb.SIDE_BUY if row["side"] == "BUY" else bpb.SIDE_SELL, quantity=row["quantity"],
        price_usd=row["price_usd"], executed_at=_ts(row["executed_at"]), label=LABELS_PB[row["label"]],
        explanation=row["explanation"], features=pb.TradeFeatures(**row["features"]), reflection=row["reflection"],
        scored_at=_ts(row["scored_at"]),
    )


class TradeScorer:
    def __init__(self, market_data: MarketDataProvider, outbox: Outbox):
        self.market_data = market_data
        self.outbox = outbox

    def score(self, trade: broker_events.TradeImported, session: Session) -> dict:
        """Raises InsufficientHistoryError / BarNotFoundError (from features_at) and
        UnknownSymbolError: permanent errors, dead-lettered by the consumer."""
        side = "BUY" if trade.side == bpb.SIDE_BUY else "SELL"
        executed_at = trade.executed_at.ToDatetime(tzinfo=UTC)
        bars = self.market_data.fetch_history(trade.symbol, end=executed_at.date())
        features: TradeFeatures = features_at(bars, executed_at.replace(tzinfo=None))
        tag = tag_trade(side, features)
        row = dict(
            trade_id=trade.trade_id, user_id=trade.user_id, account_id=trade.account_id, symbol=trade.symbol,
            side=side, quantity=trade.quantity, price_usd=trade.price_usd, executed_at=executed_at,
            label=tag.label, rule=tag.rule, explanation=tag.explanation,
            reflection=reflection(side, tag, features), features=asdict(features), scored_at=datetime.now(UTC),
        )
        inserted = session.execute(pg_insert(models.scored_trades).values(**row).on_conflict_do_nothing()
                                   .returning(models.scored_trades.c.trade_id)).first()
        if inserted is not None:
            self.outbox.add(session, TOPIC_TRADES_SCORED, events_pb2.TradeScored(trade=scored_trade_pb(row)),
                            key=trade.user_id, subject=f"trades/{trade.trade_id}")
        return row


def list_scored(session: Session, user_id: str, limit: int) -> list[dict]:
    rows = session.execute(select(models.scored_trades).where(models.scored_trades.c.user_id == user_id)
                           .order_by(models.scored_trades.c.executed_at.desc()).limit(limit)).mappings()
    return [dict(r) for r in rows]
