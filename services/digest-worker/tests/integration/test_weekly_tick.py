"""The weekly tick (issue 9 §2) over real Postgres and the real Kafka-protocol broker: the
worker records scored trades of two weeks; its scheduler, driven by a controlled clock
and the cron expression, builds exactly one digest per user per completed week (Monday
00:00 in the user's time zone: a user in Asia/Tokyo gets theirs nine hours before a user
in UTC), with counts, FIFO P&L, best and worst decisions and habits, and publishes each
as digests.ready.v1; a second tick, and a second replica ticking at once, build nothing
more; a trade arriving late for a built week builds it again as version 2."""

from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from aiokafka import AIOKafkaConsumer
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import create_engine, func, select

from bsopt.broker_gateway.v1 import broker_gateway_pb2 as bpb
from bsopt.digest_worker.v1 import events_pb2 as digest_events
from bsopt.ml_scorer.v1 import events_pb2 as scorer_events
from bsopt.ml_scorer.v1 import ml_scorer_pb2 as spb
from bsopt_common import codec, topics
from bsopt_common.db import create_db_engine, make_session_factory, session_scope
from bsopt_common.events import EventPublisher, Outbox
from bsopt_common.money import Money
from bsopt_common.security.event_signing import EventSigner
from bsopt_common.testing.identity import service_identity
from bsopt_common.testing.services import ServiceThread, free_port
from bsopt_digest import digest_store, models
from bsopt_digest.bootstrap import serve
from bsopt_digest.config import DigestSettings
from bsopt_digest.scheduler import DigestScheduler, next_fire, validate_cron

RUN = uuid.uuid4().hex[:6]
ALICE, KENJI = f"alice-{RUN}", f"kenji-{RUN}"  # UTC (the default) and Asia/Tokyo


class Clock:
    def __init__(self, now: datetime) -> None:
        self._now = now
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def set(self, now: datetime) -> None:
        with self._lock:
            self._now = now


def at(s: str) -> datetime:
    return datetime.fromisoformat(s).replace(tzinfo=UTC)


#: Sunday 2024-03-10 14:00 UTC (23:00 in Tokyo): no week since 03-04 is over anywhere yet
START = at("2024-03-10T14:00")


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock(START)


@pytest.fixture(scope="module")
def service_db(service_database_urls):
    engine = create_db_engine(service_database_urls["digest-worker"], application_name="digest-tick-test")
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture(scope="module")
def worker(postgres_url, service_database_urls, kafka_bootstrap, test_issuer, clock):
    port = free_port()
    settings = DigestSettings(
        database_url=service_database_urls["digest-worker"], kafka_bootstrap_servers=kafka_bootstrap, health_port=port,
        tick_cron="0 * * * *", catchup_settle_seconds=None, **service_identity(test_issuer, "digest-worker"))
    with ServiceThread(lambda stop: serve(settings, stop, clock=clock, poll_seconds=0.05), port=port):
        yield create_engine(postgres_url)


def scored(trade_id: str, user: str, when: str, side: int, qty: int, price: str, label: int,
           symbol: str = "GOOGL") -> scorer_events.TradeScored:
    ts = Timestamp()
    ts.FromDatetime(at(when))
    return scorer_events.TradeScored(trade=spb.ScoredTrade(
        trade_id=f"{trade_id}-{RUN}", user_id=user, account_id="a1", symbol=symbol, side=side, quantity=qty,
        price=codec.money_pb(Money.of(price, "USD")), executed_at=ts, label=label, explanation="x", reflection="y"))


BUY, SELL = bpb.SIDE_BUY, bpb.SIDE_SELL
FOMO, PANIC, DISC, NONE = (spb.BIAS_LABEL_FOMO, spb.BIAS_LABEL_PANIC, spb.BIAS_LABEL_DISCIPLINE,
                           spb.BIAS_LABEL_NONE)


def trades() -> list[scorer_events.TradeScored]:
    return [
        # week of 2024-02-26 (both users): two FOMO buys
        scored("a1", ALICE, "2024-02-27T15:00", BUY, 10, "100", FOMO),
        scored("a2", ALICE, "2024-02-28T15:00", BUY, 5, "110", FOMO),
        scored("k1", KENJI, "2024-02-27T01:00", BUY, 2, "50", NONE),
        # week of 2024-03-04
        scored("b1", ALICE, "2024-03-04T15:00", SELL, 12, "120", DISC),   # +200 (a1), +20 (a2)
        scored("b2", ALICE, "2024-03-05T15:00", BUY, 4, "130", FOMO),
        scored("b3", ALICE, "2024-03-08T15:00", SELL, 5, "95", PANIC),    # -45 (a2), -70 (b2)
        scored("k2", KENJI, "2024-03-06T01:00", SELL, 2, "55.5", PANIC),  # +11 (k1)
        # Sunday 16:00 UTC = Monday 01:00 in Tokyo: Kenji's next week, Alice's this week
        scored("x1", KENJI, "2024-03-10T16:00", BUY, 1, "60", FOMO),
        scored("x2", ALICE, "2024-03-10T13:00", BUY, 1, "60", NONE),
    ]


async def publish_all(bootstrap: str, signer: EventSigner, events) -> None:
    pub = EventPublisher(bootstrap, source="/bsopt/ml-scorer", signer=signer)
    await pub.start()
    try:
        for e in events:
            await pub.publish(topics.TRADES_SCORED, e)
    finally:
        await pub.stop()


def count(engine, table, user: str) -> int:
    with engine.connect() as c:
        return c.execute(select(func.count()).select_from(table).where(table.c.user_id == user)).scalar_one()


def digests(engine, user: str) -> dict[str, dict]:
    with engine.connect() as c:
        rows = c.execute(select(models.digests).where(models.digests.c.user_id == user)).mappings()
        return {r["period_start"].isoformat(): dict(r) for r in rows}


async def until(predicate, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def ready_events(bootstrap: str, users: set[str], wanted: int, timeout: float = 30.0):
    consumer = AIOKafkaConsumer(topics.DIGESTS_READY.name, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    found: list[digest_events.DigestReady] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(found) < wanted and asyncio.get_running_loop().time() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=300)).values():
                decoded = (digest_events.DigestReady.FromString(m.value) for m in msgs)
                found += [d for d in decoded if d.user_id in users]
    finally:
        await consumer.stop()
    return found


def test_cron_expression():
    assert validate_cron("0 * * * *") == "0 * * * *"
    for bad in ("", "* * * *", "61 * * * *", "0 * * * * *", "every monday"):
        with pytest.raises(ValueError):
            validate_cron(bad)
    assert next_fire("0 * * * *", at("2024-03-10T14:00")) == at("2024-03-10T15:00")
    assert next_fire("0 0 * * 1", at("2024-03-10T14:00")) == at("2024-03-11T00:00")
    with pytest.raises(ValueError):
        DigestSettings(tick_cron="nope")


async def test_weekly_tick_builds_one_digest_per_user_and_completed_week(
        worker, clock, service_db, kafka_bootstrap, test_issuer):
    with session_scope(service_db) as s:
        digest_store.set_time_zone(s, KENJI, "Asia/Tokyo")
    await publish_all(kafka_bootstrap, EventSigner("ml-scorer", test_issuer.service_key("ml-scorer")), trades())
    await until(lambda: count(worker, models.trades, ALICE) == 6 and count(worker, models.trades, KENJI) == 3)
    await asyncio.sleep(0.5)
    assert digests(worker, ALICE) == {} and digests(worker, KENJI) == {}  # scoring builds no digest

    # 15:00 UTC = Monday 00:00 in Tokyo: the hourly tick builds Kenji's two weeks and
    # Alice's week of 02-26 (over since Monday 03-04 00:00 UTC), not Alice's current week
    clock.set(at("2024-03-10T15:00:01"))
    await until(lambda: len(digests(worker, KENJI)) == 2 and len(digests(worker, ALICE)) == 1)
    await asyncio.sleep(0.5)
    assert set(digests(worker, ALICE)) == {"2024-02-26"}
    kenji = digests(worker, KENJI)
    assert set(kenji) == {"2024-02-26", "2024-03-04"}
    k = kenji["2024-03-04"]
    assert (k["time_zone"], k["trades"], k["pnl"], k["round_trips"]) == ("Asia/Tokyo", 1, Decimal("11"), 1)
    assert k["label_counts"] == {"FOMO": 0, "PANIC": 1, "DISCIPLINE": 0, "NONE": 0}
    assert k["best_decision"]["open_trade_id"] == f"k1-{RUN}" and k["best_decision"]["close_trade_id"] == f"k2-{RUN}"
    # last week's habit (NONE: no biased trade) was not kept: a PANIC sell
    assert (k["habit_label"], k["previous_habit_kept"]) == ("PANIC", False)

    # Monday 00:00 UTC: Alice's week of 03-04
    clock.set(at("2024-03-11T00:00:01"))
    await until(lambda: len(digests(worker, ALICE)) == 2)
    a = digests(worker, ALICE)["2024-03-04"]
    assert (a["period_end"].isoformat(), a["time_zone"], a["trades"]) == ("2024-03-10", "UTC", 4)
    assert a["label_counts"] == {"FOMO": 1, "PANIC": 1, "DISCIPLINE": 1, "NONE": 1}
    # 200 + 20 - 45 - 70 (hand-computed FIFO)
    assert (a["pnl"], a["currency"], a["round_trips"]) == (Decimal("105"), "USD", 4)
    assert (a["best_decision"]["open_trade_id"], a["best_decision"]["pnl"]) == (f"a1-{RUN}", {"amount": "200.000000000",
                                                                                                "currency": "USD"})
    assert a["worst_decision"]["close_trade_id"] == f"b3-{RUN}"
    assert a["worst_decision"]["pnl"]["amount"] == "-70.000000000"
    assert (a["habit_label"], a["previous_habit_kept"]) == ("FOMO", True)  # 1 FOMO after 2
    assert a["version"] == 1

    # published: one digests.ready.v1 per digest, with the new fields
    events = await ready_events(kafka_bootstrap, {ALICE, KENJI}, 4)
    assert sorted((e.user_id, e.period_start) for e in events) == sorted(
        [(ALICE, "2024-02-26"), (ALICE, "2024-03-04"), (KENJI, "2024-02-26"), (KENJI, "2024-03-04")])
    (ev,) = [e for e in events if e.user_id == ALICE and e.period_start == "2024-03-04"]
    assert codec.money_from_pb(ev, "pnl") == Money.of("105", "USD")
    assert ev.best_decision.close_trade_id == f"b1-{RUN}" and ev.HasField("previous_habit_kept")
    assert ev.previous_habit_kept and ev.habit_label == "FOMO" and ev.time_zone == "UTC"

    # the next hourly tick, and two more replicas ticking at once, build nothing
    clock.set(at("2024-03-11T01:00:01"))
    await asyncio.sleep(0.5)
    replicas = [DigestScheduler(service_db, Outbox(models.SCHEMA), catchup_settle_seconds=0) for _ in range(2)]
    results = await asyncio.gather(*(asyncio.to_thread(r.tick, at("2024-03-11T01:00:01")) for r in replicas))
    assert results == [[], []]
    assert {k: v["version"] for k, v in digests(worker, ALICE).items()} == {"2024-02-26": 1, "2024-03-04": 1}
    assert len(digests(worker, KENJI)) == 2

    # a trade of Alice's week of 03-04 arrives late: built again (same digest, version 2)
    await publish_all(kafka_bootstrap, EventSigner("ml-scorer", test_issuer.service_key("ml-scorer")),
                      [scored("late", ALICE, "2024-03-07T15:00", SELL, 1, "140", DISC, symbol="MSFT")])
    await until(lambda: count(worker, models.trades, ALICE) == 7)
    await asyncio.sleep(0.1)
    built = await asyncio.gather(*(asyncio.to_thread(r.catch_up) for r in replicas))
    # one replica built it, the other found it built
    assert sorted(len([e for e in b if e.user_id == ALICE]) for b in built) == [0, 1]
    late = digests(worker, ALICE)["2024-03-04"]
    assert (late["version"], late["trades"], late["digest_id"]) == (2, 5, a["digest_id"])
    assert digests(worker, ALICE)["2024-02-26"]["version"] == 1


async def test_time_zone_setting_is_validated(worker, service_db):
    from bsopt_common.errors import InvalidArgument

    with pytest.raises(InvalidArgument), session_scope(service_db) as s:
        digest_store.set_time_zone(s, "someone", "Mars/Olympus")
    with session_scope(service_db) as s:
        assert digest_store.time_zone_of(s, "someone") == "UTC"
        digest_store.set_time_zone(s, "someone", "Europe/Paris")
    with session_scope(service_db) as s:
        assert digest_store.time_zone_of(s, "someone") == "Europe/Paris"

