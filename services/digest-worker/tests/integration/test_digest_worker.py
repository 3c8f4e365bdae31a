"""digest-worker consumes trades.scored.v1 over a real Kafka-protocol broker: events
whose token is missing, for another audience, expired, signed by an unknown key, or from
a client not allowed on the topic are dead-lettered and change nothing; a valid event
builds the week's digest and publishes digests.ready.v1."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from aiokafka import AIOKafkaConsumer
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import create_engine, select

from bsopt.broker_gateway.v1 import broker_gateway_pb2 as bpb
from bsopt.digest_worker.v1 import events_pb2 as digest_events
from bsopt.ml_scorer.v1 import events_pb2 as scorer_events
from bsopt.ml_scorer.v1 import ml_scorer_pb2 as spb
from bsopt_common import codec, topics
from bsopt_common.events import EventPublisher
from bsopt_common.money import Money
from bsopt_common.settings import EVENTS_AUDIENCE
from bsopt_common.testing.identity import service_identity
from bsopt_common.testing.services import ServiceThread
from bsopt_common.testing.tokens import refusal_tokens
from bsopt_digest import models
from bsopt_digest.bootstrap import serve
from bsopt_digest.config import DigestSettings


class FixedToken:
    """A token source that always hands out one given token (or none)."""

    def __init__(self, token: str | None):
        self._token = token

    async def token(self, resource: str, scope: str = "") -> str:
        return self._token or ""


@pytest.fixture(scope="module")
def worker(postgres_url, service_database_urls, kafka_bootstrap, test_issuer):
    from bsopt_common.testing.services import free_port

    port = free_port()
    settings = DigestSettings(
        database_url=service_database_urls["digest-worker"], kafka_bootstrap_servers=kafka_bootstrap, health_port=port,
        **service_identity(test_issuer, "digest-worker"))
    with ServiceThread(lambda stop: serve(settings, stop), port=port):
        yield create_engine(postgres_url)


def scored(user: str, day: str) -> scorer_events.TradeScored:
    ts = Timestamp()
    ts.FromDatetime(datetime.fromisoformat(day).replace(tzinfo=UTC))
    return scorer_events.TradeScored(trade=spb.ScoredTrade(
        trade_id=str(uuid.uuid4()), user_id=user, account_id="a1", symbol="GOOGL", side=bpb.SIDE_BUY, quantity=3,
        price=codec.money_pb(Money.of("800.10", "USD")), executed_at=ts, label=spb.BIAS_LABEL_FOMO, explanation="x",
        reflection="y"))


async def publish(bootstrap: str, token: str | None, message, user: str) -> str:
    pub = EventPublisher(bootstrap, source="/test", token_provider=FixedToken(token) if token else None)
    await pub.start()
    try:
        return await pub.publish(topics.TRADES_SCORED, message)
    finally:
        await pub.stop()


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


async def test_bad_tokens_are_dead_lettered_and_change_nothing(worker, kafka_bootstrap, test_issuer):
    tokens = refusal_tokens(test_issuer, EVENTS_AUDIENCE, "events:publish")
    tokens["wrong-producer"] = test_issuer.token(aud=EVENTS_AUDIENCE, scope="events:publish", client_id="intruder")
    ids = {}
    for kind, token in tokens.items():
        ids[await publish(kafka_bootstrap, token, scored("victim", "2017-03-01"), "victim")] = kind
    found = await dead_letters(kafka_bootstrap, set(ids))
    assert set(ids) <= found.keys()
    reasons = {ids[i]: found[i] for i in ids}
    assert "no bearer token" in reasons["no-token"]
    assert "expired" in reasons["expired"]
    assert "not in the issuer's JWKS" in reasons["unknown-key"]
    assert "may not publish" in reasons["wrong-producer"]
    assert digests_for(worker, "victim") == []


async def test_valid_event_builds_the_weekly_digest(worker, kafka_bootstrap, test_issuer):
    token = test_issuer.token(aud=EVENTS_AUDIENCE, scope="events:publish", client_id="ml-scorer")
    event = scored("trader", "2017-03-01")  # a Wednesday
    await publish(kafka_bootstrap, token, event, "trader")
    await publish(kafka_bootstrap, token, event, "trader")  # same trade again: counted once
    consumer = AIOKafkaConsumer(topics.DIGESTS_READY.name, bootstrap_servers=kafka_bootstrap,
                                auto_offset_reset="earliest")
    await consumer.start()
    ready = []
    try:
        deadline = asyncio.get_running_loop().time() + 20
        while not ready and asyncio.get_running_loop().time() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=300)).values():
                ready += [d for d in (digest_events.DigestReady.FromString(m.value) for m in msgs)
                          if d.user_id == "trader"]
    finally:
        await consumer.stop()
    assert ready, "no digests.ready.v1 for the trader"
    (row,) = digests_for(worker, "trader")
    assert (row["period_start"].isoformat(), row["period_end"].isoformat()) == ("2017-02-27", "2017-03-05")
    assert row["trades"] == 1 and row["label_counts"]["FOMO"] == 1
    # a 3-share buy at 800.10: exactly -2400.30, in its currency, in the store and on the wire
    assert (row["net_cash_flow"], row["currency"]) == (Decimal("-2400.30"), "USD")
    assert codec.money_from_pb(ready[-1], "net_cash_flow") == Money.of("-2400.30", "USD")
