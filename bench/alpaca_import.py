"""Alpaca trade import: 1,000 fills (10 pages of 100) from the local Alpaca stand-in into
broker-gateway's schema, then published to Kafka, against the issue's target.

Per run: a fresh Postgres database (created, migrated to head, dropped after), then
``TradeImporter.import_trades`` over the last 30 days through ``AlpacaBroker`` (alpaca-py
over real HTTP to the stand-in on 127.0.0.1: ``GET /v2/account/activities/FILL``, 10
pages): **fetch + dedupe + store** (the fetch alone is shown too; store = dedupe rows,
import record and outbox rows in one transaction). Then the ``OutboxRelay`` publishes the
1,000 ``trades.imported.v1`` events to an embedded Kafka-protocol broker (Tansu, one per
run), each signed and acknowledged (acks=all): **publishing**. A second import of the
same window (every fill a duplicate) is timed as well. Then **scoring**: ml-scorer's own
consumer (``imported_trades``: signature check, ``TradeScorer.score``, scored row and
``trades.scored.v1`` outbox row per event, offset committed per record) reads the 1,000
events from Kafka into the run's ``scorer`` schema, with Alpaca's daily bars of the
stand-in (``AlpacaBarsProvider``, a fresh per-process cache each run: one bars request),
timed from the consumer's start (group join included) to the last trade scored. Fills are
seeded on weekdays, 14:30-20:30 UTC (a real account fills in market hours; a weekend fill
has no daily bar). Prints p50/p95 (nearest rank) over the runs against the target: an
import of 30 days within 60 s p95 (issue 8 section 5; aim < 5 s), and import -> published
-> scored.

    .venv/bin/python bench/alpaca_import.py [--runs 5] [--fills 1000]
        [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import math
import os
import platform
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import psycopg
from joserfc.jwk import ECKey
from sqlalchemy.engine import make_url

from bsopt_broker import models
from bsopt_broker.adapters.alpaca.accounts import parse_accounts
from bsopt_broker.adapters.alpaca.broker import AlpacaBroker
from bsopt_broker.domain.records import Fill
from bsopt_broker.trade_import import TradeImporter
from bsopt_common import migrations, topics
from bsopt_common.db import create_db_engine, make_session_factory
from bsopt_common.embedded.kafka import FAST_GROUP_SETTINGS, EmbeddedKafka, ensure_topics
from bsopt_common.events import EventConsumer, EventPublisher, Outbox, OutboxRelay
from bsopt_common.marketdata import AlpacaBarsProvider
from bsopt_common.money import Money
from bsopt_common.security.event_signing import EventSignatureVerifier, EventSigner
from bsopt_scorer import models as scorer_models
from bsopt_scorer.consumers import imported_trades
from bsopt_scorer.scoring import TradeScorer

HERE = Path(__file__).resolve().parent
STANDIN = HERE.parent / "services" / "broker-gateway" / "tests" / "alpaca_standin.py"
TARGET_P95_S = 60.0
AIM_S = 5.0


def _standin_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_alpaca_standin", STANDIN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class TimedBroker:
    """The broker, with the time its ``fills_between`` (the Alpaca fetch) took."""

    def __init__(self, broker: AlpacaBroker):
        self.broker = broker
        self.name = broker.name
        self.fetch_s = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.broker, name)

    def fills_between(self, account_id: str, user_id: str, start: datetime, end: datetime) -> list[Fill]:
        t0 = time.perf_counter()
        try:
            return self.broker.fills_between(account_id, user_id, start, end)
        finally:
            self.fetch_s = time.perf_counter() - t0


def _admin(server_url: str) -> psycopg.Connection[Any]:
    u = make_url(server_url)
    return psycopg.connect(host=u.host or "127.0.0.1", port=u.port or 5432, user=u.username, password=u.password,
                           dbname=u.database or "postgres", autocommit=True)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


async def relay_all(relay: OutboxRelay) -> int:
    sent = 0
    while n := await relay.relay_once():
        sent += n
    return sent


def weekday_sessions(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """(14:30, 20:30) UTC of every weekday strictly between ``start`` and ``end``."""
    days = [start.date() + timedelta(days=n) for n in range(1, (end.date() - start.date()).days)]
    return [(datetime(d.year, d.month, d.day, 14, 30, tzinfo=UTC), datetime(d.year, d.month, d.day, 20, 30, tzinfo=UTC))
            for d in days if d.weekday() < 5]


def seed_weekdays(standin: Any, key: str, count: int, sessions: list[tuple[datetime, datetime]],
                  fills_per_order: int = 1) -> None:
    """``count`` fills (orders of ``fills_per_order``) spread over the sessions."""
    base, extra = divmod(count // fills_per_order, len(sessions))
    for i, (open_, close) in enumerate(sessions):
        if orders := base + (i < extra):
            standin.seed_fills(key, orders * fills_per_order, open_, close, fills_per_order=fills_per_order)


async def score_all(kafka: str, factory: Any, signing_key: ECKey, provider: AlpacaBarsProvider,
                    expected: int) -> tuple[int, int]:
    """ml-scorer's consumer over the published events until ``expected`` are handled;
    (handled, dead-lettered)."""
    jwks = {"keys": [signing_key.as_dict(private=False)]}
    http = httpx.AsyncClient(transport=httpx.MockTransport(lambda request: httpx.Response(200, json=jwks)))
    dlq = EventPublisher(kafka, "/bsopt/ml-scorer", None)
    await dlq.start()
    outbox = Outbox(scorer_models.SCHEMA)
    spec = imported_trades(TradeScorer(provider, outbox))
    consumer = EventConsumer(
        bootstrap_servers=kafka, group_id="bench-ml-scorer", handlers=spec.handlers, session_factory=factory,
        schema=scorer_models.SCHEMA, verifier=EventSignatureVerifier("http://jwks/{client_id}", http_client=http),
        dlq_publisher=dlq, outbox=outbox, permanent_errors=spec.permanent_errors, **FAST_GROUP_SETTINGS)
    await consumer.start()
    task = asyncio.create_task(consumer.run())
    try:
        deadline = time.monotonic() + 600
        while consumer.handled + consumer.dead_lettered < expected:
            if task.done():
                task.result()
            if time.monotonic() > deadline:
                raise TimeoutError(f"scored {consumer.handled} of {expected} in 600 s")
            await asyncio.sleep(0.02)
        return consumer.handled, consumer.dead_lettered
    finally:
        await consumer.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await dlq.stop()
        await http.aclose()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--fills", type=int, default=1000)
    ap.add_argument("--database-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    args = ap.parse_args()

    standin = _standin_module().AlpacaStandin()
    key = "PKBENCH"
    standin.add_account(key, "bench-secret", cash=100_000)
    end = datetime.now(UTC)
    start = end - timedelta(days=30)
    # Every tenth order filled in 4 partial fills, the rest whole; weekdays in market hours.
    partial = args.fills // 10 // 4 * 4
    sessions = weekday_sessions(start, end)
    seed_weekdays(standin, key, args.fills - partial, sessions)
    seed_weekdays(standin, key, partial, sessions, fills_per_order=4)
    accounts = parse_accounts([{"broker": "alpaca", "base_url": standin.base_url, "name": "bench",
                                "owner": "u-bench", "api_key_id": key, "api_secret_key": "bench-secret",
                                "read_only": True}])
    broker = TimedBroker(AlpacaBroker(accounts, lambda s: Money(standin.prices[s], "USD")))
    signing_key = ECKey.generate_key("P-256", parameters={"alg": "ES256", "use": "sig"})
    signing_key.ensure_kid()
    signer = EventSigner("broker-gateway", signing_key)

    rows: dict[str, list[float]] = {k: [] for k in ("fetch", "import", "publish", "reimport", "score")}
    with standin.serving():
        broker.get_account("bench", "u-bench")  # the client is created and detected once, not timed
        for run in range(1, args.runs + 1):
            # A broker per run (not timed): only this run's events in the topic, and the
            # scorer's consumer group joins fresh (Tansu delays a rejoin soon after a leave).
            kafka = EmbeddedKafka().__enter__()
            ensure_topics(kafka.bootstrap_servers, [topics.TRADES_IMPORTED.name, topics.TRADES_IMPORTED.dlq,
                                                    topics.TRADES_SCORED.name])
            name = f"bsopt_bench_import_{uuid.uuid4().hex[:10]}"
            with _admin(args.database_url) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            engine = create_db_engine(make_url(args.database_url).set(database=name))
            try:
                migrations.upgrade("bsopt_broker", engine, models.SCHEMA)
                migrations.upgrade("bsopt_scorer", engine, scorer_models.SCHEMA)
                factory = make_session_factory(engine)
                outbox = Outbox(models.SCHEMA)
                importer = TradeImporter(factory, broker, outbox)

                t0 = time.perf_counter()
                result = importer.import_trades("bench", "u-bench", start, end)
                rows["import"].append(time.perf_counter() - t0)
                rows["fetch"].append(broker.fetch_s)
                assert (result.trades_imported, result.duplicates_skipped) == (args.fills, 0), result

                async def publish(factory: Any = factory, outbox: Outbox = outbox,
                                  bootstrap: str = kafka.bootstrap_servers) -> int:
                    publisher = EventPublisher(bootstrap, "/bsopt/broker-gateway", signer)
                    await publisher.start()
                    try:
                        return await relay_all(OutboxRelay(outbox, factory, publisher))
                    finally:
                        await publisher.stop()

                t0 = time.perf_counter()
                sent = asyncio.run(publish())
                rows["publish"].append(time.perf_counter() - t0)
                assert sent == args.fills, sent

                t0 = time.perf_counter()
                again = importer.import_trades("bench", "u-bench", start, end)
                rows["reimport"].append(time.perf_counter() - t0)
                assert (again.import_id, again.trades_imported, again.duplicates_skipped) == (
                    result.import_id, 0, args.fills), again

                provider = AlpacaBarsProvider(key, "bench-secret", base_url=standin.base_url)
                t0 = time.perf_counter()
                handled, dead = asyncio.run(score_all(kafka.bootstrap_servers, factory, signing_key, provider,
                                                      args.fills))
                rows["score"].append(time.perf_counter() - t0)
                assert (handled, dead) == (args.fills, 0), (handled, dead)
                with engine.connect() as c:
                    scored = c.exec_driver_sql("SELECT count(*) FROM scorer.scored_trades").scalar_one()
                    outboxed = c.exec_driver_sql("SELECT count(*) FROM scorer.outbox").scalar_one()
                assert scored == outboxed == args.fills, (scored, outboxed)
            finally:
                kafka.__exit__(None, None, None)
                engine.dispose()
                with _admin(args.database_url) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            print(f"run {run}: fetch {rows['fetch'][-1]:.2f}s, fetch+dedupe+store {rows['import'][-1]:.2f}s, "
                  f"publish {rows['publish'][-1]:.2f}s, re-import (all duplicates) {rows['reimport'][-1]:.2f}s, "
                  f"score {rows['score'][-1]:.2f}s",
                  flush=True)

    pages = sum(1 for r in standin.requests if r[2] == "/v2/account/activities/FILL") // (2 * args.runs)
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; {args.fills} fills, "
          f"{pages} pages of <= 100 per import, {args.runs} runs, p50/p95 nearest rank")
    for label, k in (("fetch (Alpaca pages)", "fetch"), ("fetch+dedupe+store", "import"),
                     ("publishing (outbox -> Kafka)", "publish"), ("re-import, all duplicates", "reimport"),
                     ("scoring (Kafka -> scored)", "score")):
        print(f"{label:30s} p50 {pct(rows[k], 50):6.2f}s  p95 {pct(rows[k], 95):6.2f}s")
    total = [a + b for a, b in zip(rows["import"], rows["publish"], strict=True)]
    p95 = pct(total, 95)
    print(f"{'import + publishing':30s} p50 {pct(total, 50):6.2f}s  p95 {p95:6.2f}s  -> "
          f"{p95 / TARGET_P95_S:.1%} of the {TARGET_P95_S:.0f}s p95 target "
          f"({'within' if p95 < AIM_S else 'over'} the {AIM_S:.0f}s aim)")

    scored = [a + b + c for a, b, c in zip(rows["import"], rows["publish"], rows["score"], strict=True)]
    print(f"{'import -> published -> scored':30s} p50 {pct(scored, 50):6.2f}s  p95 {pct(scored, 95):6.2f}s  "
          f"({args.fills / pct(scored, 50):.0f} fills/s at p50)")


if __name__ == "__main__":
    main()
