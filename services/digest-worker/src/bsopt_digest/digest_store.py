"""Rebuild a user's weekly digest when one of that week's trades is scored, and publish
it as ``digests.ready.v1`` (outbox, same transaction), with a version that grows by one
on every change so consumers can keep the newest."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from bsopt.digest_worker.v1 import events_pb2
from bsopt.ml_scorer.v1 import ml_scorer_pb2 as spb
from bsopt_common import codec, topics
from bsopt_common.events import Outbox
from bsopt_common.money import Money
from bsopt_common.vocabulary import BiasLabel, Side
from bsopt_digest import models
from bsopt_digest.domain.digest import ScoredTradeRecord, WeeklyDigest, build_weekly_digests, iso_week


def digest_ready(digest: WeeklyDigest, *, version: int, updated_at: datetime) -> events_pb2.DigestReady:
    """The ``digests.ready.v1`` payload of a digest."""
    return codec.to_message(digest, events_pb2.DigestReady, digest_id=digest.digest_id, version=version,
                            updated_at=updated_at)


def apply_scored_trade(trade: spb.ScoredTrade, session: Session, outbox: Outbox) -> events_pb2.DigestReady:
    """Store the trade, rebuild its ISO week's digest, upsert and publish it. Raises
    InvalidArgument for a trade without a known label, side, time or price."""
    label = codec.BIAS_LABEL.from_pb(trade.label, "label")
    side = codec.SIDE.from_pb(trade.side, "side")
    executed_at = codec.required_timestamp(trade, "executed_at")
    price = codec.money_from_pb(trade, "price")
    week_start, _ = iso_week(executed_at)
    row = dict(trade_id=trade.trade_id, user_id=trade.user_id, symbol=trade.symbol, side=side.value,
               quantity=trade.quantity, price=price.amount, currency=price.currency, executed_at=executed_at,
               week_start=week_start, label=label.value)
    session.execute(pg_insert(models.trades).values(**row).on_conflict_do_update(
        index_elements=["trade_id"], set_={"label": row["label"]}))
    week = session.execute(select(models.trades).where(models.trades.c.user_id == trade.user_id,
                                                       models.trades.c.week_start == week_start)).mappings()
    records = [ScoredTradeRecord(trade_id=r["trade_id"], user_id=r["user_id"], symbol=r["symbol"],
                                 side=Side(r["side"]), quantity=int(r["quantity"]),
                                 price=Money(r["price"], r["currency"]), executed_at=r["executed_at"],
                                 label=BiasLabel(r["label"])) for r in week]
    (digest,) = build_weekly_digests(records)
    updated_at = datetime.now(UTC)
    values = dict(user_id=digest.user_id, period_start=digest.period_start, period_end=digest.period_end,
                  trades=digest.trades, label_counts=digest.label_counts, net_cash_flow=digest.net_cash_flow.amount,
                  currency=digest.net_cash_flow.currency, summary=digest.summary, updated_at=updated_at)
    version = session.execute(pg_insert(models.digests).values(digest_id=digest.digest_id, version=1, **values)
                              .on_conflict_do_update(index_elements=["digest_id"],
                                                     set_={**values, "version": models.digests.c.version + 1})
                              .returning(models.digests.c.version)).scalar_one()
    event = digest_ready(digest, version=version, updated_at=updated_at)
    outbox.add(session, topics.DIGESTS_READY, event)
    return event
