"""Kafka entrypoint: ``trades.scored.v1`` -> the trade is recorded in ``digest.trades``
(in the idempotent consumer's transaction). No digest is built per trade: the weekly
tick (:mod:`bsopt_digest.scheduler`) builds them."""

from __future__ import annotations

from sqlalchemy.orm import Session

from bsopt_common import topics
from bsopt_common.events import Event
from bsopt_common.service import ConsumerSpec
from bsopt_digest.digest_store import record_scored_trade


def scored_trades() -> ConsumerSpec:
    def handle(event: Event, session: Session) -> None:
        record_scored_trade(event.payload.trade, session)  # type: ignore[attr-defined]

    return ConsumerSpec(group_id="digest-worker", handlers={topics.TRADES_SCORED: handle})
