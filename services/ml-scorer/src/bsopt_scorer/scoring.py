"""Score one imported trade: features from the real bars up to and including the
trade's bar (no look-ahead), the bias tag with its explanation, a reflection (in the
user's tone, from the configured :class:`~bsopt_scorer.domain.reflections.Reflector`:
templates by default); stored with the features it used and the reflection's provider,
and published as ``trades.scored.v1`` via the outbox.

Per-user calibration (:mod:`bsopt_scorer.domain.calibration`): the tag uses the user's
thresholds stored in ``scorer.user_calibration`` (read in the scoring transaction; the
population thresholds while there are none, i.e. below 30 trades), and the thresholds used
are stored with the trade (``scored_trades.thresholds``). Each newly stored trade then adds
its ``ln(ATR/close)`` to the user's sufficient statistics with one upsert (an O(1) atomic
increment under the row's lock, not a re-aggregation of the user's history) and, from 30
trades on, rewrites the user's thresholds from them, for the user's next trade. A
redelivered trade (already stored) changes nothing. :func:`recalibrate` rebuilds a user's
row from the stored features with one aggregate query (a repair; equal to the increments)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, date, datetime, time

from sqlalchemy import func, select, update
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
from bsopt_scorer.domain.calibration import POPULATION_CALIBRATION, Calibration, calibrate, log_atr_pct
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


def user_calibration(session: Session, user_id: str) -> Calibration:
    """The thresholds to tag ``user_id``'s next trade with: the stored calibrated ones; for
    a row without them (statistics backfilled by revision 0004), those its statistics give;
    the population's without a row."""
    t = models.user_calibration
    row = session.execute(select(t.c.thresholds, t.c.trades, t.c.sum_log_atr_pct)
                          .where(t.c.user_id == user_id)).one_or_none()
    if row is None:
        return POPULATION_CALIBRATION
    if row.thresholds is not None:
        return Calibration.from_record(row.thresholds)
    return calibrate(int(row.trades), float(row.sum_log_atr_pct))


def _store_calibration(session: Session, user_id: str, trades: int, sum_log: float) -> None:
    cal = calibrate(trades, sum_log)
    if cal.calibrated:
        session.execute(update(models.user_calibration).where(models.user_calibration.c.user_id == user_id)
                        .values(thresholds=cal.record(), updated_at=func.now()))


def add_to_calibration(session: Session, user_id: str, features: TradeFeatures) -> None:
    """Add one newly stored trade to the user's statistics (one upsert) and, from 30 trades
    on, store the thresholds they give. A trade without a positive ATR does not count."""
    y = log_atr_pct(features)
    if y is None:
        return
    t = models.user_calibration
    stmt = pg_insert(t).values(user_id=user_id, trades=1, sum_log_atr_pct=y)
    trades, sum_log = session.execute(stmt.on_conflict_do_update(
        index_elements=[t.c.user_id],
        set_={"trades": t.c.trades + 1, "sum_log_atr_pct": t.c.sum_log_atr_pct + stmt.excluded.sum_log_atr_pct,
              "updated_at": func.now()},
    ).returning(t.c.trades, t.c.sum_log_atr_pct)).one()
    _store_calibration(session, user_id, int(trades), float(sum_log))


def recalibrate(session: Session, user_id: str) -> Calibration:
    """Rebuild ``user_id``'s statistics and thresholds from their stored features with one
    aggregate query (what the increments of :func:`add_to_calibration` sum to)."""
    st = models.scored_trades
    atr, close = st.c.features["atr_14"].as_float(), st.c.features["close_usd"].as_float()
    trades, sum_log = session.execute(
        select(func.count(), func.coalesce(func.sum(func.ln(atr / close)), 0.0))
        .where(st.c.user_id == user_id, atr > 0, close > 0)).one()
    t = models.user_calibration
    stmt = pg_insert(t).values(user_id=user_id, trades=int(trades), sum_log_atr_pct=float(sum_log), thresholds=None)
    session.execute(stmt.on_conflict_do_update(
        index_elements=[t.c.user_id],
        set_={"trades": stmt.excluded.trades, "sum_log_atr_pct": stmt.excluded.sum_log_atr_pct,
              "thresholds": None, "updated_at": func.now()}))
    _store_calibration(session, user_id, int(trades), float(sum_log))
    return calibrate(int(trades), float(sum_log))


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
        calibration = user_calibration(session, trade.user_id)
        tag = tag_trade(side.value, features, calibration.thresholds,
                        calibrated_trades=calibration.trades if calibration.calibrated else None)
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
            thresholds=calibration.record(), scored_at=scored.scored_at,
        ).on_conflict_do_nothing().returning(models.scored_trades.c.trade_id)).first()
        if inserted is not None:
            add_to_calibration(session, trade.user_id, features)
            self.outbox.add(session, topics.TRADES_SCORED, events_pb2.TradeScored(trade=scored_trade_pb(scored)))
        return scored
