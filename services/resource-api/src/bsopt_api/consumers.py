"""Event handlers of resource-api (consumer group ``resource-api``), one per topic.

* ``trades.scored.v1``: store a ``coach.reflect`` message in ``api.coach_messages``,
  then, only once that transaction has committed, push it to the user's connected
  sockets.
* ``digests.ready.v1``: upsert ``api.digests`` keeping the highest version.

Handlers run in a worker thread inside the consumer's idempotent transaction
(:class:`bsopt_common.events.EventConsumer`): a redelivered event id never reaches
them, so it is neither stored nor pushed twice. Payload types and allowed producers
come from the topic registry (:mod:`bsopt_common.topics`).
"""

from __future__ import annotations

import logging

from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from bsopt.digest_worker.v1 import events_pb2 as digest_events
from bsopt.ml_scorer.v1 import events_pb2 as scorer_events
from bsopt_api import projections
from bsopt_api.hub import CoachHub
from bsopt_common import topics
from bsopt_common.events import Event
from bsopt_common.service import ConsumerSpec

log = logging.getLogger(__name__)

CONSUMER_GROUP = "resource-api"


def consumer_specs(hub: CoachHub, group_id: str = CONSUMER_GROUP) -> list[ConsumerSpec]:
    """One consumer for both topics."""

    def on_trade_scored(event: Event, session: Session) -> None:
        payload: scorer_events.TradeScored = event.payload  # type: ignore[assignment]
        message = projections.record_coach_message(session, payload.trade)
        if message is None:
            log.info("trade %s already has a coach message; event %s stored nothing", payload.trade.trade_id,
                     event.id)
            return
        user_id = payload.trade.user_id
        # Push only what is durably stored: a rolled-back attempt pushes nothing.
        sa_event.listen(session, "after_commit", lambda _s: hub.publish_threadsafe(user_id, message), once=True)

    def on_digest_ready(event: Event, session: Session) -> None:
        payload: digest_events.DigestReady = event.payload  # type: ignore[assignment]
        projections.upsert_digest(session, payload)

    return [ConsumerSpec(group_id=group_id, handlers={topics.TRADES_SCORED: on_trade_scored,
                                                      topics.DIGESTS_READY: on_digest_ready})]
