"""Kafka entrypoint: ``trades.imported.v1`` -> score and store, in the idempotent
consumer's transaction (the outgoing ``trades.scored.v1`` rides the same transaction)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from bsopt.broker_gateway.v1 import events_pb2 as broker_events
from bsopt_common.events import Event
from bsopt_common.service import ConsumerSpec
from bsopt_scorer.scoring import TradeScorer

TOPIC_TRADES_IMPORTED = "trades.imported.v1"


def imported_trades(scorer: TradeScorer) -> ConsumerSpec:
    def handle(event: Event, session: Session) -> None:
        scorer.score(event.payload, session)

    return ConsumerSpec(
        group_id="ml-scorer",
        topics={TOPIC_TRADES_IMPORTED: broker_events.TradeImported},
        allowed_producers={TOPIC_TRADES_IMPORTED: ["broker-gateway"]},
        handler=handle,
    )
