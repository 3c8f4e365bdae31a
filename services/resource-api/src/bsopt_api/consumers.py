"""Event handlers of resource-api (consumer group ``resource-api``).

* ``trades.scored.v1`` (:class:`~bsopt.ml_scorer.v1.events_pb2.TradeScored`, producer
  ``ml-scorer``): store a ``coach.reflect`` message in ``api.coach_messages``, then,
  only once that transaction has committed, push it to the user's connected sockets.
* ``digests.ready.v1`` (:class:`~bsopt.digest_worker.v1.events_pb2.DigestReady`,
  producer ``digest-worker``): upsert ``api.digests`` keeping the highest version.

Handlers run in a worker thread inside the consumer's idempotent transaction
(:class:`bsopt_common.events.EventConsumer`): a redelivered event id never reaches
them, so it is neither stored nor pushed twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from bsopt.digest_worker.v1 import events_pb2 as digest_events
from bsopt.ml_scorer.v1 import events_pb2 as scorer_events
from bsopt_api import projections
from bsopt_api.hub import CoachHub
from bsopt_common.events import Event
from bsopt_common.service import ConsumerSpec

log = logging.getLogger(__name__)

TRADES_SCORED_TOPIC = "trades.scored.v1"
DIGESTS_READY_TOPIC = "digests.ready.v1"
CONSUMER_GROUP = "resource-api"


class EventHandlers:
    """``handler(event, session)`` for :class:`ConsumerSpec`: dispatches on the topic."""

    def __init__(self, hub: CoachHub):
        self.hub = hub
        self._by_topic: dict[str, Callable[[Event, Session], None]] = {
            TRADES_SCORED_TOPIC: self.on_trade_scored,
            DIGESTS_READY_TOPIC: self.on_digest_ready,
        }

    def __call__(self, event: Event, session: Session) -> None:
        try:
            handle = self._by_topic[event.topic]
        except KeyError:
            raise LookupError(f"resource-api has no handler for topic {event.topic!r}") from None
        handle(event, session)

    def on_trade_scored(self, event: Event, session: Session) -> None:
        payload: scorer_events.TradeScored = event.payload  # type: ignore[assignment]
        message = projections.record_coach_message(session, payload.trade)
        if message is None:
            log.info("trade %s already has a coach message; event %s stored nothing", payload.trade.trade_id,
                     event.id)
            return
        user_id = payload.trade.user_id
        # Push only what is durably stored: a rolled-back attempt pushes nothing.
        sa_event.listen(session, "after_commit", lambda _s: self.hub.publish_threadsafe(user_id, message),
                        once=True)

    def on_digest_ready(self, event: Event, session: Session) -> None:
        payload: digest_events.DigestReady = event.payload  # type: ignore[assignment]
        projections.upsert_digest(session, payload)


def consumer_specs(hub: CoachHub, group_id: str = CONSUMER_GROUP) -> list[ConsumerSpec]:
    """One consumer for both topics. (One group member per process: the embedded test
    broker cannot rebalance a group with two live members.)"""
    return [
        ConsumerSpec(
            group_id=group_id,
            topics={
                TRADES_SCORED_TOPIC: scorer_events.TradeScored,
                DIGESTS_READY_TOPIC: digest_events.DigestReady,
            },
            allowed_producers={TRADES_SCORED_TOPIC: ["ml-scorer"], DIGESTS_READY_TOPIC: ["digest-worker"]},
            handler=EventHandlers(hub),
        )
    ]
