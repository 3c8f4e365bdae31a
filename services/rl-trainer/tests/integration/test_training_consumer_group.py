"""Two rl-trainer consumers in one consumer group share ``training.requested.v1`` on a
real Kafka-protocol broker (Tansu embedded, or TEST_KAFKA_BOOTSTRAP_SERVERS): the
partitions are split between them, and every request is claimed exactly once."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest

from bsopt_common import topics
from bsopt_common.db import create_db_engine, make_session_factory
from bsopt_common.events import EventConsumer, EventPublisher, Outbox, OutboxRelay
from bsopt_common.marketdata import bundled_provider
from bsopt_common.migrations import upgrade
from bsopt_common.security.event_signing import EventSignatureVerifier, EventSigner
from bsopt_trainer import models
from bsopt_trainer.consumers import training_requests
from bsopt_trainer.domain.job import TEST_TOTAL_TIMESTEPS, default_spec
from bsopt_trainer.job_store import JobStore

JOBS = 12


class RecordingWorker:
    """Stands in for the CPU-bound training worker: records which job ids it was handed
    (the claim itself, the consumer group and the broker are all real)."""

    def __init__(self) -> None:
        self.enqueued: list[str] = []

    def enqueue(self, job_id: str, user_id: str) -> None:
        self.enqueued.append(job_id)


@pytest.fixture(scope="module")
def store(postgres_url):
    engine = create_db_engine(postgres_url)
    upgrade("bsopt_trainer", engine, models.SCHEMA)
    yield JobStore(make_session_factory(engine), Outbox(models.SCHEMA), bundled_provider())
    engine.dispose()


async def test_two_consumers_in_one_group_split_the_requests_and_claim_each_once(
        store, kafka_bootstrap, kafka_topics, kafka_group_settings, test_issuer):
    partitions = kafka_topics([topics.TRAINING_REQUESTED.name], partitions=4)[topics.TRAINING_REQUESTED.name]
    assert partitions >= 2, "training.requested.v1 needs 2+ partitions for two consumers to share it"
    group = f"rl-trainer-{uuid.uuid4().hex[:8]}"
    publisher = EventPublisher(kafka_bootstrap, source="/bsopt/rl-trainer",
                               signer=EventSigner("rl-trainer", test_issuer.service_key("rl-trainer")))
    await publisher.start()
    workers = [RecordingWorker(), RecordingWorker()]
    verifier = EventSignatureVerifier(test_issuer.client_jwks_url_template)
    consumers = [
        EventConsumer(bootstrap_servers=kafka_bootstrap, group_id=group,
                      handlers=training_requests(store, worker).handlers,  # type: ignore[arg-type]
                      session_factory=store.session_factory, schema=models.SCHEMA, verifier=verifier,
                      dlq_publisher=publisher, **kafka_group_settings)
        for worker in workers
    ]
    tasks: list[asyncio.Task] = []
    try:
        for consumer in consumers:
            await consumer.start()
            tasks.append(asyncio.create_task(consumer.run()))

        async def balanced() -> None:
            while not all(c._consumer.assignment() for c in consumers):
                await asyncio.sleep(0.2)

        await asyncio.wait_for(balanced(), 90)
        split = [{tp.partition for tp in c._consumer.assignment()} for c in consumers]
        assert not split[0] & split[1] and len(split[0] | split[1]) == partitions

        # submit through the real store: job row + outbox row in one transaction, relayed
        jobs = [await asyncio.to_thread(store.submit, f"user-{i}", default_spec(
            total_timesteps=TEST_TOTAL_TIMESTEPS, seed=i)) for i in range(JOBS)]
        relay = OutboxRelay(store.outbox, store.session_factory, publisher)
        while await relay.relay_once():
            pass
        async def all_claimed() -> None:
            while sum(len(w.enqueued) for w in workers) < JOBS:
                await asyncio.sleep(0.2)

        await asyncio.wait_for(all_claimed(), 60)
        for job in jobs:  # the same requests again under new event ids: still claimed once
            await publisher.publish(topics.TRAINING_REQUESTED, _requested(job))
        await asyncio.sleep(3)
    finally:
        for consumer in consumers:
            await consumer.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await publisher.stop()
        await verifier.aclose()

    ours = {j.job_id for j in jobs}
    claims = Counter(job_id for w in workers for job_id in w.enqueued if job_id in ours)
    assert set(claims) == ours and set(claims.values()) == {1}, claims
    assert all(w.enqueued for w in workers), "one consumer did all the work: the group did not share it"
    statuses = {store.get(job_id).status.value for job_id in ours}
    assert statuses == {"queued"}  # claimed, waiting for a worker to start them
    assert {job_id for job_id, _ in store.claimed_queued()} >= ours


def _requested(job):
    from bsopt.rl_trainer.v1 import events_pb2
    from bsopt_trainer.job_store import spec_pb

    return events_pb2.TrainingRequested(job_id=job.job_id, user_id=job.user_id, spec=spec_pb(job.spec))
