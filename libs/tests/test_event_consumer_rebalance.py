"""A consumer group that rebalances while a member is mid-batch, on a real
Kafka-protocol broker (Tansu embedded, or TEST_KAFKA_BOOTSTRAP_SERVERS) and real Postgres.

The failure this replays: a member is processing a batch holding records of two
partitions when a second member joins and takes one of them. Committing an offset of the
partition it lost raised ``IllegalStateError`` (or ``CommitFailedError`` when the group
was still rebalancing), which ended ``EventConsumer.run``: the member kept heartbeating
and holding its other partition, and nothing on that partition was consumed again.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from bsopt.ml_scorer.v1 import events_pb2 as scorer_events
from bsopt.ml_scorer.v1 import ml_scorer_pb2 as spb
from bsopt_common.db import make_session_factory
from bsopt_common.events import Event, EventConsumer, EventPublisher, event_tables
from bsopt_common.security.event_signing import EventSignatureVerifier, EventSigner
from bsopt_common.topics import Topic

PRODUCER = "ml-scorer"


@pytest.fixture(scope="module")
def engine(postgres_url: str) -> Iterator[Engine]:
    engine = create_engine(postgres_url)
    yield engine
    engine.dispose()


class GatedHandler:
    """Records every event id it applies; its first call waits for :attr:`gate`."""

    def __init__(self) -> None:
        self.applied: list[str] = []
        self.entered = threading.Event()
        self.gate = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, event: Event, session: object) -> None:
        if not self.entered.is_set():
            self.entered.set()
            assert self.gate.wait(60), "the test never opened the gate"
        with self._lock:
            self.applied.append(event.id)


async def until(condition, timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_a_member_losing_a_partition_mid_batch_keeps_consuming_and_applies_each_event_once(
        engine, kafka_bootstrap, kafka_topics, kafka_group_settings, test_issuer):
    topic: Topic[scorer_events.TradeScored] = Topic(
        f"test.rebalance.{uuid.uuid4().hex[:10]}.v1", scorer_events.TradeScored,
        lambda m: m.trade.user_id, lambda m: f"trades/{m.trade.trade_id}", frozenset({PRODUCER}))
    kafka_topics([topic.name, topic.dlq], partitions=2)
    schema = f"rebal_{uuid.uuid4().hex[:10]}"
    with engine.begin() as c:
        c.execute(text(f'CREATE SCHEMA "{schema}"'))
    event_tables(schema)[0].metadata.create_all(engine)
    session_factory = make_session_factory(engine)

    publisher = EventPublisher(kafka_bootstrap, source=f"/bsopt/{PRODUCER}",
                               signer=EventSigner(PRODUCER, test_issuer.service_key(PRODUCER)))
    await publisher.start()
    verifier = EventSignatureVerifier(test_issuer.client_jwks_url_template)
    handler = GatedHandler()
    group = f"g-{uuid.uuid4().hex[:8]}"
    members = [EventConsumer(bootstrap_servers=kafka_bootstrap, group_id=group, handlers={topic: handler},
                             session_factory=session_factory, schema=schema, verifier=verifier,
                             dlq_publisher=publisher, **kafka_group_settings) for _ in range(2)]
    tasks: list[asyncio.Task[None]] = []

    async def publish(n: int) -> set[str]:
        return {await publisher.publish(topic, scorer_events.TradeScored(trade=spb.ScoredTrade(
            trade_id=str(uuid.uuid4()), user_id=f"user-{i}", account_id="a1", symbol="GOOGL", quantity=1,
            label=spb.BIAS_LABEL_FOMO, explanation="x"))) for i in range(n)}

    def alive() -> None:
        for task in tasks:
            assert not task.done(), f"a consumer loop ended: {task.exception()!r}"

    try:
        first = await publish(16)  # 16 users: both partitions hold records
        a, b = members
        await a.start()
        tasks.append(asyncio.create_task(a.run()))
        await until(handler.entered.is_set, 60, "the first member to take a batch")
        before = set(a._consumer.assignment())
        assert len(before) == 2, before  # alone in the group: both partitions, one batch of both

        await b.start()  # joins: the group rebalances while the first member is mid-batch
        tasks.append(asyncio.create_task(b.run()))
        await until(lambda: a._consumer.assignment() and b._consumer.assignment()
                    and not a._consumer.assignment() & b._consumer.assignment(), 60, "the group to split")
        handler.gate.set()

        await until(lambda: first <= set(handler.applied) or any(t.done() for t in tasks), 60,
                    "the first events to be applied")
        alive()
        assert first <= set(handler.applied)
        second = await publish(16)  # after the rebalance: both partitions, both members
        await until(lambda: second <= set(handler.applied) or any(t.done() for t in tasks), 60,
                    "the events published after the rebalance")
        alive()
    finally:
        handler.gate.set()
        for member in members:
            await member.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await publisher.stop()
        await verifier.aclose()

    assert set(handler.applied) == first | second
    assert len(handler.applied) == len(first | second), "an event's effect was applied twice"
    assert sum(m.dead_lettered for m in members) == 0
