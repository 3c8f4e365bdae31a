"""Event handlers of resource-api (consumer group ``resource-api``), one per topic.

* ``trades.scored.v1``: store the trade's ``coach.reflect`` message (``api.coach_messages``,
  one per trade id) and append it to the user's coach stream (``api.coach_stream``).
* ``digests.ready.v1``: upsert ``api.digests`` keeping the highest version; a version
  that became the stored one is announced as ``digest.ready`` on the stream.
* ``imports.progress.v1``: ``import.progress`` on the stream.

Nothing is pushed from here: the stream's insert NOTIFYs every replica at commit (a
rolled-back attempt notifies nobody), and each replica pushes to its own sockets
(:mod:`bsopt_api.stream`, :mod:`bsopt_api.hub`).

Handlers run in a worker thread inside the consumer's idempotent transaction
(:class:`bsopt_common.events.EventConsumer`): a redelivered event id never reaches
them, so it is neither stored nor pushed twice. Payload types and allowed producers
come from the topic registry (:mod:`bsopt_common.topics`).
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from bsopt.broker_gateway.v1 import events_pb2 as broker_events
from bsopt.digest_worker.v1 import events_pb2 as digest_events
from bsopt.ml_scorer.v1 import events_pb2 as scorer_events
from bsopt_api import encoding, projections, stream
from bsopt_api.hub import CoachHub
from bsopt_common import topics
from bsopt_common.events import Event
from bsopt_common.service import ConsumerSpec

log = logging.getLogger(__name__)

CONSUMER_GROUP = "resource-api"


def consumer_specs(hub: CoachHub, group_id: str = CONSUMER_GROUP) -> list[ConsumerSpec]:
    """One consumer for the three topics. (``hub`` is kept for the signature: delivery
    goes through the stream's NOTIFY, to every replica's hub.)"""
    del hub

    def on_trade_scored(event: Event, session: Session) -> None:
        payload: scorer_events.TradeScored = event.payload  # type: ignore[assignment]
        trade = payload.trade
        if projections.record_coach_message(session, trade) is None:
            log.info("trade %s already has a coach message; event %s stored nothing", trade.trade_id, event.id)
            return
        stream.append(session, trade.user_id, stream.COACH_REFLECT, encoding.coach_message(trade),
                      dedupe_key=f"{stream.COACH_REFLECT}:{trade.trade_id}")

    def on_digest_ready(event: Event, session: Session) -> None:
        payload: digest_events.DigestReady = event.payload  # type: ignore[assignment]
        projections.upsert_digest(session, payload)
        stream.record_digest_ready(session, payload)

    def on_import_progress(event: Event, session: Session) -> None:
        payload: broker_events.ImportProgress = event.payload  # type: ignore[assignment]
        stream.record_import_progress(session, event.id, payload)

    return [ConsumerSpec(group_id=group_id, handlers={topics.TRADES_SCORED: on_trade_scored,
                                                      topics.DIGESTS_READY: on_digest_ready,
                                                      topics.IMPORTS_PROGRESS: on_import_progress})]
