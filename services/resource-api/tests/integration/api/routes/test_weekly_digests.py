"""``GET /v1/digests/weekly/latest`` and ``GET /v1/digests/weekly`` (issue 9 §2) over the
real consumer: digests.ready.v1 events signed by digest-worker's key go through a
Kafka-protocol broker into the projection, and the routes return the weekly fields (P&L,
best and worst decision, habits), newest week first, paged with ``before``, the
caller's own only; ``/v1/digests/latest`` keeps its original contract."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import date, timedelta

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from bsopt.digest_worker.v1 import events_pb2 as digest_events
from bsopt_common import codec
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
async def publisher(kafka_bootstrap, test_issuer) -> AsyncIterator[EventPublisher]:
    pub = EventPublisher(kafka_bootstrap, source="/bsopt/digest-worker",
                         signer=EventSigner("digest-worker", test_issuer.service_key("digest-worker")))
    await pub.start()
    yield pub
    await pub.stop()


def ts(value: str) -> Timestamp:
    t = Timestamp()
    t.FromJsonString(value)
    return t


def weekly(user: str, week: str, *, pnl: str = "105", kept: bool | None = True) -> digest_events.DigestReady:
    start = date.fromisoformat(week)
    d = digest_events.DigestReady(
        digest_id=f"d-{uuid.uuid4().hex[:8]}", user_id=user, period_start=week,
        period_end=(start + timedelta(days=6)).isoformat(), trades=4,
        label_counts={"FOMO": 1, "PANIC": 1, "DISCIPLINE": 1, "NONE": 1},
        net_cash_flow=codec.money_pb(Money.of("1395", "USD")), summary=f"week {week}", version=1,
        time_zone="Asia/Tokyo", pnl=codec.money_pb(Money.of(pnl, "USD")), round_trips=4,
        best_decision=digest_events.Decision(
            symbol="GOOGL", open_trade_id="a1", close_trade_id="b1", quantity=10, direction="LONG",
            open_price=codec.money_pb(Money.of("100", "USD")), close_price=codec.money_pb(Money.of("120", "USD")),
            pnl=codec.money_pb(Money.of("200", "USD")), opened_at=ts("2024-02-27T15:00:00Z"),
            closed_at=ts("2024-03-04T15:00:00Z")),
        worst_decision=digest_events.Decision(
            symbol="GOOGL", open_trade_id="b2", close_trade_id="b3", quantity=2, direction="LONG",
            open_price=codec.money_pb(Money.of("130", "USD")), close_price=codec.money_pb(Money.of("95", "USD")),
            pnl=codec.money_pb(Money.of("-70", "USD"))),
        habit="wait one session", habit_label="FOMO", previous_habit="wait one session")
    d.updated_at.FromJsonString("2024-03-11T00:00:01Z")
    if kept is not None:
        d.previous_habit_kept = kept
    return d


async def test_weekly_routes(client, tokens, publisher, consumer):  # consumer: the projection runs
    user, other = tokens.new_user(), tokens.new_user()
    headers = tokens.bearer(tokens.user("trades:read", sub=user))
    assert (await client.get("/v1/digests/weekly/latest", headers=headers)).status_code == 404
    assert (await client.get("/v1/digests/weekly", headers=headers)).json() == {"digests": [], "next_before": None}

    weeks = ["2024-02-19", "2024-03-04", "2024-02-26"]
    await publisher.publish(DIGESTS_READY, weekly(other, "2024-03-11"))
    for i, week in enumerate(weeks):
        await publisher.publish(DIGESTS_READY, weekly(user, week, pnl=str(i), kept=None if i == 0 else True))
    # the consumer may first read other tests' events on the shared broker
    deadline = time.monotonic() + 60
    while len((await client.get("/v1/digests/weekly", headers=headers)).json()["digests"]) < 3:
        assert time.monotonic() < deadline, "digests not projected in time"
        await asyncio.sleep(0.1)

    latest = await client.get("/v1/digests/weekly/latest", headers=headers)
    assert latest.status_code == 200
    body = latest.json()
    assert (body["period_start"], body["period_end"], body["time_zone"]) == ("2024-03-04", "2024-03-10", "Asia/Tokyo")
    assert body["pnl"] == {"amount": "1", "currency": "USD"} and body["round_trips"] == 4
    assert body["label_counts"] == {"DISCIPLINE": 1, "FOMO": 1, "NONE": 1, "PANIC": 1}
    assert body["best_decision"] == {
        "symbol": "GOOGL", "open_trade_id": "a1", "close_trade_id": "b1", "quantity": 10, "direction": "LONG",
        "open_price": {"amount": "100", "currency": "USD"}, "close_price": {"amount": "120", "currency": "USD"},
        "pnl": {"amount": "200", "currency": "USD"}, "opened_at": "2024-02-27T15:00:00Z",
        "closed_at": "2024-03-04T15:00:00Z"}
    assert body["worst_decision"]["pnl"] == {"amount": "-70", "currency": "USD"}
    assert body["worst_decision"]["closed_at"] is None
    assert (body["habit"], body["habit_label"], body["previous_habit_kept"]) == ("wait one session", "FOMO", True)

    # the original route: the same digest, its original fields only
    old = (await client.get("/v1/digests/latest", headers=headers)).json()
    assert set(old) == {"digest_id", "period_start", "period_end", "trades", "label_counts", "net_cash_flow",
                        "summary", "version", "updated_at"}
    assert (old["digest_id"], old["period_start"]) == (body["digest_id"], "2024-03-04")

    # the list: newest first, paged with before
    page = (await client.get("/v1/digests/weekly", params={"limit": 2}, headers=headers)).json()
    assert [d["period_start"] for d in page["digests"]] == ["2024-03-04", "2024-02-26"]
    assert page["next_before"] == "2024-02-26"
    rest = (await client.get("/v1/digests/weekly", params={"limit": 2, "before": page["next_before"]},
                             headers=headers)).json()
    assert [d["period_start"] for d in rest["digests"]] == ["2024-02-19"] and rest["next_before"] is None
    assert rest["digests"][0]["previous_habit_kept"] is None
    everything = (await client.get("/v1/digests/weekly", headers=headers)).json()
    assert len(everything["digests"]) == 3  # never another user's

    for bad in ({"limit": 0}, {"limit": 101}, {"before": "last week"}):
        assert (await client.get("/v1/digests/weekly", params=bad, headers=headers)).status_code == 422
    assert (await client.get("/v1/digests/weekly")).status_code == 401
