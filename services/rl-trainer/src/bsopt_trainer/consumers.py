"""Kafka entrypoint: ``training.requested.v1`` -> claim the job (exactly once, in the
idempotent consumer's transaction) and hand it to the training worker's fair queue after
commit (the job stays ``queued`` until the worker starts it)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from bsopt_common import topics
from bsopt_common.events import AFTER_COMMIT, Event
from bsopt_common.service import ConsumerSpec
from bsopt_trainer.job_store import JobStore, TrainingWorker


def training_requests(store: JobStore, worker: TrainingWorker) -> ConsumerSpec:
    def handle(event: Event, session: Session) -> None:
        job_id = event.payload.job_id  # type: ignore[attr-defined]
        user_id = event.payload.user_id  # type: ignore[attr-defined]
        if store.claim(session, job_id):
            # Queued after this transaction commits: the worker re-reads the job row.
            session.info.setdefault(AFTER_COMMIT, []).append(lambda: worker.enqueue(job_id, user_id))

    return ConsumerSpec(group_id="rl-trainer", handlers={topics.TRAINING_REQUESTED: handle})
