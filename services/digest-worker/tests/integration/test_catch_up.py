"""The catch-up path of the weekly tick, in the running worker: trades of weeks that are
already over when they arrive (an import of past fills, as ``make demo`` does) get their
digest a few seconds after the last one was recorded, without waiting for the hourly
tick; trades of the current week get none before it ends."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import create_engine, func, select

from bsopt.broker_gateway.v1 import broker_gateway_pb2 as bpb
from bsopt.ml_scorer.v1 import events_pb2 as scorer_events
from bsopt.ml_scorer.v1 import ml_scorer_pb2 as spb
from bsopt_common import codec, topics
from bsopt_common.events import EventPublisher
from bsopt_common.money import Money
from bsopt_common.security.event_signing import EventSigner
from bsopt_common.testing.identity import service_identity
from bsopt_common.testing.services import ServiceThread, free_port
from bsopt_digest import models
from bsopt_digest.bootstrap import serve
from bsopt_digest.config import DigestSettings

USER = f"importer-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def worker(postgres_url, service_database_urls, kafka_bootstrap, test_issuer):
    port = free_port()
    settings = DigestSettings(
        database_url=service_database_urls["digest-worker"], kafka_bootstrap_servers=kafka_bootstrap, health_port=port,
        catchup_settle_seconds=0.5, **service_identity(test_issuer, "digest-worker"))
    with ServiceThread(lambda stop: serve(settings, stop), port=port):  # the system clock
        yield create_engine(postgres_url)


def scored(when: datetime, side: int, price: str) -> scorer_events.TradeScored:
    ts = Timestamp()
    ts.FromDatetime(when)
    return scorer_events.TradeScored(trade=spb.ScoredTrade(
        trade_id=str(uuid.uuid4()), user_id=USER, account_id="a1", symbol="GOOGL", side=side, quantity=2,
        price=codec.money_pb(Money.of(price, "USD")), executed_at=ts, label=spb.BIAS_LABEL_NONE, explanation="x",
        reflection="y"))


async def test_past_weeks_are_built_after_the_import_settles_and_the_current_week_is_not(
        worker, kafka_bootstrap, test_issuer):
    now = datetime.now(UTC)
    pub = EventPublisher(kafka_bootstrap, source="/bsopt/ml-scorer",
                         signer=EventSigner("ml-scorer", test_issuer.service_key("ml-scorer")))
    await pub.start()
    try:
        for e in (scored(datetime(2017, 1, 3, 15, tzinfo=UTC), bpb.SIDE_BUY, "800"),
                  scored(datetime(2017, 1, 10, 15, tzinfo=UTC), bpb.SIDE_SELL, "810.5"),
                  scored(now, bpb.SIDE_BUY, "900")):
            await pub.publish(topics.TRADES_SCORED, e)
    finally:
        await pub.stop()

    def weeks() -> dict[str, dict]:
        with worker.connect() as c:
            rows = c.execute(select(models.digests).where(models.digests.c.user_id == USER)).mappings()
            return {r["period_start"].isoformat(): dict(r) for r in rows}

    deadline = asyncio.get_running_loop().time() + 30
    while len(weeks()) < 2:
        assert asyncio.get_running_loop().time() < deadline, f"past weeks not built: {weeks()}"
        await asyncio.sleep(0.1)
    await asyncio.sleep(3)  # another catch-up pass or two
    built = weeks()
    assert set(built) == {"2017-01-02", "2017-01-09"}  # not the current week
    assert built["2017-01-09"]["pnl"] == 21 and built["2017-01-09"]["round_trips"] == 1
    with worker.connect() as c:
        assert c.execute(select(func.count()).select_from(models.trades)
                         .where(models.trades.c.user_id == USER)).scalar_one() == 3
