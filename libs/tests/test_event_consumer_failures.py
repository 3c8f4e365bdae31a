"""What a consumer does when its handler fails, on the real Kafka-protocol broker and
Postgres: a transient failure is retried (and a later success applies the event once);
one that keeps failing, and at once one of the consumer's ``permanent_errors``, is
dead-lettered with the error, and nothing of the failed attempts is left in the database."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaConsumer
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import Engine

from bsopt.ml_scorer.v1 import events_pb2 as scorer_events
from bsopt.ml_scorer.v1 import ml_scorer_pb2 as spb
from bsopt_common.db import make_session_factory
from bsopt_common.events import Event, EventConsumer, EventPublisher, event_tables
from bsopt_common.security.event_signing import EventSignatureVerifier, EventSigner
from bsopt_common.topics import Topic

PRODUCER = "ml-scorer"


class NoMarketData(KeyError):
    """Stands for a permanent condition (no bars for the fill)."""


@pytest.fixture(scope="module")
def engine(postgres_url: str) -> Iterator[Engine]:
    engine = create_engine(postgres_url)
    yield engine
    engine.dispose()


async def _run(engine, kafka_bootstrap, kafka_topics, kafka_group_settings, test_issuer, handler,
               **consumer_kw) -> tuple[EventConsumer, list[dict[str, str]], str]:
    topic: Topic[scorer_events.TradeScored] = Topic(
        f"test.failures.{uuid.uuid4().hex[:10]}.v1", scorer_events.TradeScored,
        lambda m: m.trade.user_id, lambda m: f"trades/{m.trade.trade_id}", frozenset({PRODUCER}))
    kafka_topics([topic.name, topic.dlq], partitions=1)
    schema = f"fail_{uuid.uuid4().hex[:10]}"
    with engine.begin() as c:
        c.execute(text(f'CREATE SCHEMA "{schema}"'))
    event_tables(schema)[0].metadata.create_all(engine)
    publisher = EventPublisher(kafka_bootstrap, source=f"/bsopt/{PRODUCER}",
                               signer=EventSigner(PRODUCER, test_issuer.service_key(PRODUCER)))
    await publisher.start()
    verifier = EventSignatureVerifier(test_issuer.client_jwks_url_template)
    consumer = EventConsumer(bootstrap_servers=kafka_bootstrap, group_id=f"g-{uuid.uuid4().hex[:8]}",
                             handlers={topic: handler}, session_factory=make_session_factory(engine), schema=schema,
                             verifier=verifier, dlq_publisher=publisher, **consumer_kw, **kafka_group_settings)
    dlq = AIOKafkaConsumer(topic.dlq, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest")
    try:
        event_id = await publisher.publish(topic, scorer_events.TradeScored(trade=spb.ScoredTrade(
            trade_id=str(uuid.uuid4()), user_id="u1", account_id="a1", symbol="GOOGL", quantity=1,
            label=spb.BIAS_LABEL_FOMO, explanation="x")))
        await consumer.start()
        task = asyncio.create_task(consumer.run())
        deadline = asyncio.get_running_loop().time() + 60
        while consumer.handled + consumer.dead_lettered < 1:
            assert not task.done(), task.exception()
            assert asyncio.get_running_loop().time() < deadline, "the event was neither handled nor dead-lettered"
            await asyncio.sleep(0.05)
        await consumer.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        dead: list[dict[str, str]] = []
        if consumer.dead_lettered:
            await dlq.start()
            batches = await dlq.getmany(timeout_ms=10_000)
            dead = [{k: v.decode() for k, v in m.headers} for msgs in batches.values() for m in msgs]
    finally:
        await dlq.stop()
        await publisher.stop()
        await verifier.aclose()
    return consumer, dead, event_id


def _processed(engine, consumer: EventConsumer) -> int:
    with engine.connect() as c:
        return c.scalar(select(func.count()).select_from(consumer.processed)) or 0


async def test_a_transient_failure_is_retried_and_applied_once(
        engine, kafka_bootstrap, kafka_topics, kafka_group_settings, test_issuer) -> None:
    attempts: list[str] = []

    def flaky(event: Event, session) -> None:
        attempts.append(event.id)
        if len(attempts) < 2:
            raise ConnectionError("the database blinked")

    consumer, dead, event_id = await _run(engine, kafka_bootstrap, kafka_topics, kafka_group_settings, test_issuer,
                                          flaky)
    assert attempts == [event_id, event_id] and consumer.handled == 1 and dead == []
    assert _processed(engine, consumer) == 1


async def test_a_failure_that_lasts_is_dead_lettered_after_the_retries(
        engine, kafka_bootstrap, kafka_topics, kafka_group_settings, test_issuer) -> None:
    attempts: list[str] = []

    def broken(event: Event, session) -> None:
        attempts.append(event.id)
        raise ConnectionError("down")

    consumer, dead, event_id = await _run(engine, kafka_bootstrap, kafka_topics, kafka_group_settings, test_issuer,
                                          broken, max_attempts=3)
    assert len(attempts) == 3 and consumer.dead_lettered == 1
    assert [(d["ce_id"], d["dlq_error"]) for d in dead] == [(event_id, "ConnectionError: down")]
    assert _processed(engine, consumer) == 0  # no attempt left a processed row behind


async def test_a_permanent_error_is_dead_lettered_at_the_first_attempt(
        engine, kafka_bootstrap, kafka_topics, kafka_group_settings, test_issuer) -> None:
    attempts: list[str] = []

    def no_bars(event: Event, session) -> None:
        attempts.append(event.id)
        raise NoMarketData("no bar at 2026-11-25 (bars span 2004-08-19..2018-08-29)")

    consumer, dead, event_id = await _run(engine, kafka_bootstrap, kafka_topics, kafka_group_settings, test_issuer,
                                          no_bars, max_attempts=3, permanent_errors=(NoMarketData,))
    assert attempts == [event_id] and consumer.dead_lettered == 1
    assert dead[0]["ce_id"] == event_id and dead[0]["dlq_error"].startswith("NoMarketData: ")
