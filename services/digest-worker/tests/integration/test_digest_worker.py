"""digest-worker consumes trades.scored.v1 over a real Kafka-protocol broker: events that
are unsigned, signed by a key ml-scorer never registered, signed by a client not allowed
on the topic, or forged by copying a real event's headers onto a payload re-addressed to
another user (the audit's attack, issue 6 §1) are dead-lettered and change nothing; a
valid event only records the trade (no digest per trade). The weekly tick (issue 9 §2),
driven by a controlled clock, is tested in test_weekly_tick.py."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import create_engine, select

from bsopt.broker_gateway.v1 import broker_gateway_pb2 as bpb
from bsopt.ml_scorer.v1 import events_pb2 as scorer_events
from bsopt.ml_scorer.v1 import ml_scorer_pb2 as spb
from bsopt_common import codec, topics
from bsopt_common.events import EventPublisher
from bsopt_common.money import Money
from bsopt_common.security.event_signing import EventSigner, generate_signing_key
from bsopt_common.testing.identity import service_identity
from bsopt_common.testing.services import ServiceThread
from bsopt_digest import models
from bsopt_digest.bootstrap import serve
from bsopt_digest.config import DigestSettings


@pytest.fixture(scope="module")
def worker(postgres_url, service_database_urls, kafka_bootstrap, test_issuer):
    from bsopt_common.testing.services import free_port

    port = free_port()
    settings = DigestSettings(
        database_url=service_database_urls["digest-worker"], kafka_bootstrap_servers=kafka_bootstrap, health_port=port,
        catchup_settle_seconds=None, **service_identity(test_issuer, "digest-worker"))
    # a clock standing still mid-week: the tick never fires in this module
    clock = lambda: datetime(2017, 3, 1, 12, 0, tzinfo=UTC)  # noqa: E731
    with ServiceThread(lambda stop: serve(settings, stop, clock=clock), port=port):
        yield create_engine(postgres_url)


def scored(user: str, day: str) -> scorer_events.TradeScored:
    ts = Timestamp()
    ts.FromDatetime(datetime.fromisoformat(day).replace(tzinfo=UTC))
    return scorer_events.TradeScored(trade=spb.ScoredTrade(
        trade_id=str(uuid.uuid4()), user_id=user, account_id="a1", symbol="GOOGL", side=bpb.SIDE_BUY, quantity=3,
        price=codec.money_pb(Money.of("800.10", "USD")), executed_at=ts, label=spb.BIAS_LABEL_FOMO, explanation="x",
        reflection="y"))


async def publish(bootstrap: str, signer: EventSigner, message) -> str:
    pub = EventPublisher(bootstrap, source="/bsopt/ml-scorer", signer=signer)
    await pub.start()
    try:
        return await pub.publish(topics.TRADES_SCORED, message)
    finally:
        await pub.stop()


async def produce_raw(bootstrap: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]]) -> None:
    """What an attacker with a plain aiokafka client produces."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topics.TRADES_SCORED.name, value, key=key, headers=headers)
    finally:
        await producer.stop()


async def read_event(bootstrap: str, event_id: str, timeout: float = 20.0):
    """The record of ``event_id`` on trades.scored.v1, read as any client of the broker can."""
    consumer = AIOKafkaConsumer(topics.TRADES_SCORED.name, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=300)).values():
                for m in msgs:
                    if dict(m.headers).get("ce_id") == event_id.encode():
                        return m
    finally:
        await consumer.stop()
    raise AssertionError(f"event {event_id} not found")


async def dead_letters(bootstrap: str, wanted: set[str], timeout: float = 20.0) -> dict[str, str]:
    consumer = AIOKafkaConsumer(topics.TRADES_SCORED.dlq, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    found: dict[str, str] = {}
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while not wanted <= found.keys() and asyncio.get_running_loop().time() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=300)).values():
                for m in msgs:
                    h = dict(m.headers)
                    found[h["ce_id"].decode()] = h["dlq_error"].decode()
    finally:
        await consumer.stop()
    return found


def digests_for(engine, user: str) -> list:
    with engine.connect() as c:
        return list(c.execute(select(models.digests).where(models.digests.c.user_id == user)).mappings())


def ml_scorer(test_issuer) -> EventSigner:
    """ml-scorer's real signer: its key, registered as the client's JWKS."""
    return EventSigner("ml-scorer", test_issuer.service_key("ml-scorer"))


async def test_forged_and_unsigned_events_are_dead_lettered_and_change_nothing(worker, kafka_bootstrap, test_issuer):
    ids: dict[str, str] = {}
    # signed by a key that is not ml-scorer's registered key
    ids[await publish(kafka_bootstrap, EventSigner("ml-scorer", generate_signing_key()),
                      scored("victim", "2017-03-01"))] = "rogue-key"
    # a real client, with its real key, on a topic it may not publish
    ids[await publish(kafka_bootstrap, EventSigner("broker-gateway", test_issuer.service_key("broker-gateway")),
                      scored("victim", "2017-03-01"))] = "wrong-producer"

    # the audit's attack: read one real event, copy every header onto a payload
    # re-addressed to another user, under a new ce_id, and produce it
    real_id = await publish(kafka_bootstrap, ml_scorer(test_issuer), scored("someone", "2017-01-04"))
    real = await read_event(kafka_bootstrap, real_id)
    forged = scorer_events.TradeScored.FromString(real.value)
    forged.trade.user_id = "victim"
    forged_id = str(uuid.uuid4())
    headers = [(k, forged_id.encode() if k == "ce_id" else v) for k, v in real.headers]
    await produce_raw(kafka_bootstrap, forged.SerializeToString(), b"victim", headers)
    ids[forged_id] = "copied-headers"
    # the same payload under a new id (a replay that dodges the idempotency table)
    replay_id = str(uuid.uuid4())
    await produce_raw(kafka_bootstrap, real.value, real.key,
                      [(k, replay_id.encode() if k == "ce_id" else v) for k, v in real.headers])
    ids[replay_id] = "new-id-replay"
    # no signature at all
    unsigned_id = str(uuid.uuid4())
    await produce_raw(kafka_bootstrap, scored("victim", "2017-03-01").SerializeToString(), b"victim",
                      [(k, unsigned_id.encode() if k == "ce_id" else v) for k, v in real.headers
                       if k != "ce_signature"])
    ids[unsigned_id] = "unsigned"

    found = await dead_letters(kafka_bootstrap, set(ids))
    assert set(ids) <= found.keys()
    reasons = {ids[i]: found[i] for i in ids}
    assert "does not publish" in reasons["rogue-key"]
    assert "may not publish" in reasons["wrong-producer"]
    assert "does not match" in reasons["copied-headers"]
    assert "signed ce_id does not match" in reasons["new-id-replay"]
    assert "carries no signature" in reasons["unsigned"]
    assert real_id not in found  # the authentic event was handled
    assert digests_for(worker, "victim") == []
    assert trades_for(worker, "victim") == []


def trades_for(engine, user: str) -> list:
    with engine.connect() as c:
        return list(c.execute(select(models.trades).where(models.trades.c.user_id == user)).mappings())


async def test_valid_event_records_the_trade_and_builds_no_digest(worker, kafka_bootstrap, test_issuer):
    event = scored("trader", "2017-03-01")  # a Wednesday
    await publish(kafka_bootstrap, ml_scorer(test_issuer), event)
    await publish(kafka_bootstrap, ml_scorer(test_issuer), event)  # same trade again: recorded once
    deadline = asyncio.get_running_loop().time() + 20
    while not trades_for(worker, "trader") and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)
    (row,) = trades_for(worker, "trader")
    assert (row["trade_id"], row["label"], row["side"], row["quantity"]) == (event.trade.trade_id, "FOMO", "BUY", 3)
    # 3 shares at 800.10, exact, in its currency
    assert (row["price"], row["currency"]) == (Decimal("800.10"), "USD")
    assert digests_for(worker, "trader") == []  # the weekly tick builds digests, not each trade
