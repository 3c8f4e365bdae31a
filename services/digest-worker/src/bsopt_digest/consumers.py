"""Kafka entrypoint: ``trades.scored.v1`` -> the week's digest, rebuilt and published in
the idempotent consumer's transaction."""

from __future__ import annotations

from sqlalchemy.orm import Session

from bsopt_common import topics
from bsopt_common.events import Event, Outbox
from bsopt_common.service import ConsumerSpec
from bsopt_digest.digest_store import apply_scored_trade


def scored_trades(outbox: Outbox) -> ConsumerSpec:
    def handle(event: Event, session: Session) -> None:
        apply_scored_trade(event.payload.trade, session, outbox)  # type: ignore[attr-defined]

    return ConsumerSpec(group_id="digest-worker", handlers={topics.TRADES_SCORED: handle})
