"""The Kafka consumers, end to end through a Kafka-protocol broker (``kafka_bootstrap``)
with producers' real event signatures: a scored trade becomes a stored coach message pushed
to that user's sockets only; redelivery changes nothing; the digest projection keeps
the highest version; an event from a producer not allowed on the topic is dead-lettered.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import func, select
from websockets.asyncio.client import connect

from bsopt.broker_gateway.v1 import broker_gateway_pb2 as broker_pb
from bsopt.digest_worker.v1 import events_pb2 as digest_events
from bsopt.ml_scorer.v1 import events_pb2 as scorer_events
from bsopt.ml_scorer.v1 import ml_scorer_pb2 as scorer_pb
from bsopt_api.models import coach_messages
from bsopt_common import codec
from bsopt_common.db import session_scope
from bsopt_common.events import EventConsumer, EventPublisher
from bsopt_common.money import Money
from bsopt_common.security.event_signing import EventSigner
from bsopt_common.testing.pytest_plugin import create_topics
from bsopt_common.topics import DIGESTS_READY, TRADES_SCORED

TOPICS = [TRADES_SCORED.name, DIGESTS_READY.name, TRADES_SCORED.dlq, DIGESTS_READY.dlq]


@pytest.fixture(scope="module")
def api_settings(settings_for, kafka_bootstrap):
    create_topics(kafka_bootstrap, TOPICS)
    return settings_for(consume_events=True, kafka_bootstrap_servers=kafka_bootstrap,
                        consumer_group=f"resource-api-test-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def consumer(running_api) -> EventConsumer:
    (c,) = running_api.runtime.service.consumers
    return c


@pytest.fixture
async def publisher_for(kafka_bootstrap, test_issuer) -> AsyncIterator[Callable[[str], EventPublisher]]:
    """``publisher_for(client_id)``: a started publisher signing with that producer's key
    (registered as the client's JWKS at the test issuer)."""
    started: list[EventPublisher] = []

    async def make(client_id: str) -> EventPublisher:
        pub = EventPublisher(kafka_bootstrap, source=f"/bsopt/{client_id}",
                             signer=EventSigner(client_id, test_issuer.service_key(client_id)))
        await pub.start()
        started.append(pub)
        return pub

    yield make
    for pub in started:
        await pub.stop()


def trade_scored(user_id: str, trade_id: str | None = None) -> scorer_events.TradeScored:
    executed = Timestamp()
    executed.FromJsonString("2024-03-04T00:00:00Z")
    return scorer_events.TradeScored(trade=scorer_pb.ScoredTrade(
        trade_id=trade_id or f"t-{uuid.uuid4().hex[:10]}", user_id=user_id, account_id="acct-1",
        symbol="MSFT",
        side=broker_pb.SIDE_SELL, quantity=5, price=codec.money_pb(Money.of("402.10", "USD")), executed_at=executed,
        label=scorer_pb.BIAS_LABEL_PANIC, explanation="sold after -6.2% in 1 day (RSI 24)",
        reflection="Was the plan to sell at this level?",
    ))


def digest(user_id: str, digest_id: str, version: int, *, week: str = "2024-03-04", summary: str = "") -> (
        digest_events.DigestReady):
    start = week
    end = f"{week[:8]}{int(week[8:]) + 6:02d}"
    return digest_events.DigestReady(
        digest_id=digest_id, user_id=user_id, period_start=start, period_end=end, trades=3 + version,
        label_counts={"FOMO": 1, "PANIC": version, "NONE": 2},
        net_cash_flow=codec.money_pb(Money.of("-1250.50", "USD")),
        summary=summary or f"version {version}", version=version,
    )


async def eventually(predicate: Callable[[], object], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def recv_json(ws, timeout: float = 30.0) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


def stored_count(db, user_id: str) -> int:
    with session_scope(db) as s:
        return s.execute(select(func.count()).where(coach_messages.c.user_id == user_id)).scalar_one()


async def open_live_socket(running_api, tokens, user_id: str):
    headers = tokens.bearer(tokens.user("trades:read", sub=user_id))
    ws = await connect(running_api.ws_url, additional_headers=headers)
    await eventually(lambda: running_api.runtime.hub.connections(user_id) >= 1, 5)
    return ws


async def test_scored_trade_is_stored_and_pushed_to_that_users_socket_only(
        running_api, tokens, db, publisher_for, consumer):
    user, other = tokens.new_user(), tokens.new_user()
    mine = await open_live_socket(running_api, tokens, user)
    theirs = await open_live_socket(running_api, tokens, other)
    try:
        event = trade_scored(user)
        await (await publisher_for("ml-scorer")).publish(TRADES_SCORED, event)

        message = await recv_json(mine)
        assert message == {
            "type": "coach.reflect", "id": message["id"], "seq": message["id"], "trade_id": event.trade.trade_id,
            "label": "PANIC", "explanation": "sold after -6.2% in 1 day (RSI 24)",
            "reflection": "Was the plan to sell at this level?",
            "symbol": "MSFT", "side": "sell", "executed_at": "2024-03-04T00:00:00Z",
        }
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(theirs.recv(), 1.0)
        assert stored_count(db, user) == 1
        assert stored_count(db, other) == 0
    finally:
        await mine.close()
        await theirs.close()

    # what was pushed is also what a reconnecting client replays
    async with connect(running_api.ws_url + "?after=0",
                       additional_headers=tokens.bearer(tokens.user("trades:read", sub=user))) as ws:
        assert await recv_json(ws, 5) == message


async def test_redelivered_event_is_neither_stored_nor_pushed_twice(
        running_api, tokens, db, publisher_for, consumer):
    user = tokens.new_user()
    ws = await open_live_socket(running_api, tokens, user)
    try:
        publisher = await publisher_for("ml-scorer")
        event, event_id = trade_scored(user), str(uuid.uuid4())
        skipped = consumer.skipped_duplicates
        for _ in range(2):  # at-least-once delivery: the same event id twice
            await publisher.publish(TRADES_SCORED, event, event_id=event_id)
        first = await recv_json(ws)
        await eventually(lambda: consumer.skipped_duplicates > skipped)

        # the same trade scored again under a new event id: still one coach message
        handled = consumer.handled
        await publisher.publish(TRADES_SCORED, event)
        await eventually(lambda: consumer.handled > handled)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 1.0)
    finally:
        await ws.close()
    assert first["trade_id"] == event.trade.trade_id
    assert stored_count(db, user) == 1


async def test_digest_projection_keeps_the_highest_version(
        running_api, client, tokens, publisher_for, consumer):
    user = tokens.new_user()
    headers = tokens.bearer(tokens.user("trades:read", sub=user))
    publisher = await publisher_for("digest-worker")
    digest_id = f"d-{uuid.uuid4().hex[:8]}"

    async def publish(d: digest_events.DigestReady) -> None:
        handled = consumer.handled
        await publisher.publish(DIGESTS_READY, d)
        await eventually(lambda: consumer.handled > handled)

    assert (await client.get("/v1/digests/latest", headers=headers)).status_code == 404

    await publish(digest(user, digest_id, 2))
    await publish(digest(user, digest_id, 1))  # late, older version
    resp = await client.get("/v1/digests/latest", headers=headers)
    assert resp.status_code == 200
    body = resp.json()
    assert body == {
        "digest_id": digest_id, "period_start": "2024-03-04", "period_end": "2024-03-10", "trades": 5,
        "label_counts": {"FOMO": 1, "NONE": 2, "PANIC": 2}, "net_cash_flow": {"amount": "-1250.5", "currency": "USD"},
        "summary": "version 2", "version": 2, "updated_at": None,
    }

    await publish(digest(user, digest_id, 3))
    assert (await client.get("/v1/digests/latest", headers=headers)).json()["version"] == 3

    # a later week is the latest digest; another user's digest is not ours
    await publish(digest(tokens.new_user(), f"d-{uuid.uuid4().hex[:8]}", 9, week="2024-03-18"))
    await publish(digest(user, f"d-{uuid.uuid4().hex[:8]}", 1, week="2024-03-11", summary="next week"))
    latest = (await client.get("/v1/digests/latest", headers=headers)).json()
    assert (latest["period_start"], latest["summary"]) == ("2024-03-11", "next week")


async def test_event_from_a_producer_not_allowed_on_the_topic_is_dead_lettered(
        running_api, tokens, db, publisher_for, consumer):
    user = tokens.new_user()
    dead = consumer.dead_lettered
    forged = await publisher_for("broker-gateway")  # a valid token, but not ml-scorer's
    await forged.publish(TRADES_SCORED, trade_scored(user))
    await eventually(lambda: consumer.dead_lettered > dead)
    assert stored_count(db, user) == 0
