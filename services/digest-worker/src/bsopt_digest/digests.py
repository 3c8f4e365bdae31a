"""Rebuild a user's weekly digest when one of that week's trades is scored, and publish
it as ``digests.ready.v1`` (outbox, same transaction), with a version that grows by one
on every change so consumers can keep the newest."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from bsopt.broker_gateway.v1 import broker_gateway_pb2 as bpb
from bsopt.digest_worker.v1 import events_pb2
from bsopt.ml_scorer.v1 import ml_scorer_pb2 as spb
from bsopt_common.events import Outbox
from bsopt_digest import models
from bsopt_digest.domain.digest import ScoredTradeRecord, build_weekly_digests, digest_id, iso_week

TOPIC_DIGESTS_READY = "digests.ready.v1"
LABEL_NAMES = {spb.BIAS_LABEL_FOMO: "FOMO", spb.BIAS_LABEL_PANIC: "PANIC", spb.BIAS_LABEL_DISCIPLINE: "DISCIPLINE",
               spb.BIAS_LABEL_NONE: "NONE"}


def apply_scored_trade(trade: spb.ScoredTrade, session: Session, outbox: Outbox) -> dict:
    """Store the trade, rebuild its ISO week's digest, upsert and publish it. Raises
    ValueError for a trade without a known label or side."""
    if trade.label not in LABEL_NAMES:
        raise ValueError(f"scored trade {trade.trade_id} has no bias label")
    executed_at = trade.executed_at.ToDatetime(tzinfo=UTC)
    week_start, _ = iso_week(executed_at)
    row = dict(trade_id=trade.trade_id, user_id=trade.user_id, symbol=trade.symbol,
               side="BUY" if trade.side == bpb.SIDE_BUY else "SELL", quantity=trade.quantity,
               price_usd=trade.price_usd, executed_at=executed_at, week_start=week_start,
               label=LABEL_NAMES[trade.label])
    session.execute(pg_insert(models.trades).values(**row).on_conflict_do_update(
        index_elements=["trade_id"], set_={"label": row["label"]}))
    week = session.execute(select(models.trades).where(models.trades.c.user_id == trade.user_id,
                                                       models.trades.c.week_start == week_start)).mappings()
    records = [ScoredTradeRecord(trade_id=r["trade_id"], user_id=r["user_id"], symbol=r["symbol"], side=r["side"],
                                 quantity=int(r["quantity"]), price_usd=r["price_usd"], executed_at=r["executed_at"],
                                 label=r["label"]) for r in week]
    (digest,) = build_weekly_digests(records)
    did = digest_id(digest.user_id, digest.period_start)
    values = dict(user_id=digest.user_id, period_start=digest.period_start, period_end=digest.period_end,
                  trades=digest.trades, label_counts=digest.label_counts, net_cash_flow_usd=digest.net_cash_flow_usd,
                  summary=digest.summary, updated_at=datetime.now(UTC))
    version = session.execute(pg_insert(models.digests).values(digest_id=did, version=1, **values)
                              .on_conflict_do_update(index_elements=["digest_id"],
                                                     set_={**values, "version": models.digests.c.version + 1})
                              .returning(models.digests.c.version)).scalar_one()
    updated = Timestamp()
    updated.FromDatetime(values["updated_at"])
    outbox.add(session, TOPIC_DIGESTS_READY, events_pb2.DigestReady(
        digest_id=did, user_id=digest.user_id, period_start=digest.period_start.isoformat(),
        period_end=digest.period_end.isoformat(), trades=digest.trades, label_counts=digest.label_counts,
        net_cash_flow_usd=digest.net_cash_flow_usd, summary=digest.summary, updated_at=updated, version=version,
    ), key=digest.user_id, subject=f"digests/{did}")
    return {"digest_id": did, "version": version, **values}
