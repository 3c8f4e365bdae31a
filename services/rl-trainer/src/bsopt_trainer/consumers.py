"""Kafka entrypoint: ``training.requested.v1`` -> claim the job (exactly once, in the
idempotent consumer's transaction) and hand it to the training worker after commit."""

from __future__ import annotations

from sqlalchemy.orm import Session

from bsopt.rl_trainer.v1 import events_pb2
from bsopt_common.events import AFTER_COMMIT, Event
from bsopt_common.service import ConsumerSpec
from bsopt_trainer.jobs import TOPIC_REQUESTED, JobStore, TrainingWorker


def training_requests(store: JobStore, worker: TrainingWorker) -> ConsumerSpec:
    def handle(event: Event, session: Session) -> None:
        request: events_pb2.TrainingRequested = event.payload
        if store.claim(session, request.job_id):
            # Queued after this transaction commits: the worker re-reads the job row.
            session.info.setdefault(AFTER_COMMIT, []).append(lambda: worker.enqueue(request.job_id))

    return ConsumerSpec(
        group_id="rl-trainer",
        topics={TOPIC_REQUESTED: events_pb2.TrainingRequested},
        allowed_producers={TOPIC_REQUESTED: ["rl-trainer"]},
        handler=handle,
    )
