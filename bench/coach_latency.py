"""``coach.reflect`` pushed after ``trades.scored.v1`` is committed (issue 9 section 1:
<= 50 ms p50; the blueprint: 500 ms from import).

The real resource-api with event consumption on (``bootstrap`` + ``serve``: uvicorn on
127.0.0.1 in a ``ServiceThread``, as the tests run it) over a fresh Postgres database
(created, migrated to head by the app, dropped after; resource-api connects as its own
role), an embedded Kafka-protocol broker (Tansu, ``EmbeddedKafka``) and a test token
issuer (``bsopt_common.testing.tokens.TestIssuer``: the socket's bearer token, the
service's client credentials, and ml-scorer's event-signing key, whose public part
resource-api fetches to verify each event).

One ``websockets`` client opens ``/v1/ws/coach`` for one user. Then N ``TradeScored``
events of that user are published one at a time as ml-scorer publishes them (its
``EventPublisher``, the one its outbox relay sends with: signed, CloudEvents headers,
acks=all, source ``/bsopt/ml-scorer``), each after the previous one's ``coach.reflect``
arrived. Per event: **acknowledged** = the instant ``publish`` returns (the broker
acknowledged the write: the event is committed to the topic), **received** = the
instant the client reads the matching ``coach.reflect`` (by ``trade_id``). The path in
between: resource-api's consumer fetch (``getmany``), signature check, one transaction
(the coach message and the ``api.coach_stream`` row, whose trigger NOTIFYs), offset
commit, the LISTEN connection's notification, the hub's per-socket queue, the
WebSocket frame. A few warm-up events (the first one waits for the consumer group
join) are not counted.

Prints p50/p95 (nearest rank) and max of received - acknowledged in ms and the p50's
ratio to the 50 ms target. With ``--breakdown`` (resource-api runs in this process) it
also stamps, by wrapping three methods, when the consumer got the record
(``EventConsumer._process``), when its transaction committed
(``EventConsumer._handle_in_transaction`` returned) and when the LISTEN connection
handed the notification over (``StreamListener._handle``), and prints the p50 of each
hop.

    .venv/bin/python bench/coach_latency.py [--events 200] [--warmup 5] [--breakdown]
        [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import math
import os
import platform
import time
import uuid
from typing import Any

import psycopg
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.engine import make_url
from websockets.asyncio.client import connect

from bsopt.broker_gateway.v1 import broker_gateway_pb2 as broker_pb
from bsopt.ml_scorer.v1 import events_pb2 as scorer_events
from bsopt.ml_scorer.v1 import ml_scorer_pb2 as scorer_pb
from bsopt_api.bootstrap import bootstrap, serve
from bsopt_api.config import ApiSettings
from bsopt_common import codec
from bsopt_common.db_roles import bootstrap_service_roles
from bsopt_common.embedded.kafka import FAST_FETCH_MAX_WAIT_MS, FAST_GROUP_SETTINGS, EmbeddedKafka, ensure_topics
from bsopt_common.events import EventPublisher
from bsopt_common.money import Money
from bsopt_common.security.event_signing import EventSigner
from bsopt_common.security.token_provider import ClientCredentialsTokenProvider
from bsopt_common.settings import RESOURCE_API_AUDIENCE
from bsopt_common.testing.services import ServiceThread, free_port
from bsopt_common.testing.tokens import TestIssuer
from bsopt_common.topics import DIGESTS_READY, IMPORTS_PROGRESS, TRADES_SCORED

TARGET_P50_MS = 50.0
USER = "u-bench-coach"
TOPICS = [t.name for t in (TRADES_SCORED, DIGESTS_READY, IMPORTS_PROGRESS)]


#: (stage, key, perf_counter) stamped by :func:`instrument`; key: the event id, or the
#: trade id for the LISTEN hop.
STAMPS: list[tuple[str, str, float]] = []


def instrument() -> None:
    """Wrap the consumer and the listener to stamp each hop (``--breakdown``)."""
    from bsopt_api.stream import StreamListener
    from bsopt_common.events import EventConsumer

    process, handle, notified = (EventConsumer._process, EventConsumer._handle_in_transaction,
                                 StreamListener._handle)

    async def _process(self: EventConsumer, msg: Any) -> None:
        ids = [v.decode() for k, v in (msg.headers or ()) if k == "ce_id"]
        STAMPS.append(("fetched", ids[0] if ids else "", time.perf_counter()))
        await process(self, msg)

    def _handle_in_transaction(self: EventConsumer, event: Any) -> None:
        handle(self, event)
        STAMPS.append(("committed", event.id, time.perf_counter()))

    async def _handle(self: StreamListener, raw: str) -> None:
        at = time.perf_counter()
        try:
            trade_id = str(json.loads(raw).get("payload", {}).get("trade_id", ""))
        except (ValueError, AttributeError):
            trade_id = ""
        STAMPS.append(("notified", trade_id, at))
        await notified(self, raw)

    EventConsumer._process = _process  # type: ignore[method-assign]
    EventConsumer._handle_in_transaction = _handle_in_transaction  # type: ignore[method-assign]
    StreamListener._handle = _handle  # type: ignore[method-assign]


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def scored(user_id: str, trade_id: str) -> scorer_events.TradeScored:
    """A scored trade as ml-scorer publishes it (the same shape as the coach stream tests')."""
    executed = Timestamp()
    executed.FromJsonString("2024-03-04T00:00:00Z")
    return scorer_events.TradeScored(trade=scorer_pb.ScoredTrade(
        trade_id=trade_id, user_id=user_id, account_id="acct-1", symbol="MSFT", side=broker_pb.SIDE_SELL,
        quantity=5, price=codec.money_pb(Money.of("402.10", "USD")), executed_at=executed,
        label=scorer_pb.BIAS_LABEL_PANIC, explanation="sold after -6.2% in 1 day (RSI 24)",
        reflection="Was the plan to sell at this level?"))


async def measure(settings: ApiSettings, kafka: str, issuer: TestIssuer, events: int,
                  warmup: int) -> tuple[list[float], list[tuple[str, str, float, float]]]:
    """Latencies in ms, and per counted event (event id, trade id, acknowledged, received)."""
    received: dict[str, asyncio.Future[float]] = {}
    loop = asyncio.get_running_loop()

    def waiter(trade_id: str) -> asyncio.Future[float]:
        return received.setdefault(trade_id, loop.create_future())

    token = issuer.token(aud=RESOURCE_API_AUDIENCE, scope="trades:read", sub=USER, client_id="bsopt-cli")
    url = f"ws://{settings.host}:{settings.port}/v1/ws/coach"
    publisher = EventPublisher(kafka, source="/bsopt/ml-scorer",
                               signer=EventSigner("ml-scorer", issuer.service_key("ml-scorer")))
    await publisher.start()
    try:
        async with connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
            async def reader() -> None:
                async for raw in ws:
                    at = time.perf_counter()
                    msg = json.loads(raw)
                    if msg.get("type") == "coach.reflect":
                        fut = waiter(msg["trade_id"])
                        if not fut.done():
                            fut.set_result(at)

            reading = asyncio.create_task(reader())
            await asyncio.sleep(0.5)  # the socket is subscribed to the hub
            latencies: list[float] = []
            counted: list[tuple[str, str, float, float]] = []
            try:
                for n in range(warmup + events):
                    trade_id = f"t-bench-{n}-{uuid.uuid4().hex[:8]}"
                    fut = waiter(trade_id)
                    event_id = await publisher.publish(TRADES_SCORED, scored(USER, trade_id))
                    acked = time.perf_counter()
                    got = await asyncio.wait_for(fut, 60 if n == 0 else 10)
                    if n >= warmup:
                        latencies.append((got - acked) * 1000)
                        counted.append((event_id, trade_id, acked, got))
            finally:
                reading.cancel()
            return latencies, counted
    finally:
        await publisher.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--breakdown", action="store_true", help="stamp and print each hop's p50 too")
    ap.add_argument("--fetch-max-wait-ms", type=int, default=FAST_FETCH_MAX_WAIT_MS,
                    help="the consumer's fetch wait (the stack's setting on Tansu; aiokafka's default is 500)")
    ap.add_argument("--database-url", default=os.environ.get(
        "TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.breakdown:
        instrument()

    u = make_url(args.database_url)
    name = f"bsopt_bench_coach_{uuid.uuid4().hex[:10]}"
    admin = dict(host=u.host or "127.0.0.1", port=u.port or 5432, user=u.username, password=u.password,
                 dbname=u.database or "postgres", autocommit=True)
    with psycopg.connect(**admin) as conn:  # type: ignore[arg-type]
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        db_urls = bootstrap_service_roles(u.set(database=name).render_as_string(hide_password=False))
        with EmbeddedKafka() as kafka, TestIssuer() as issuer:
            ensure_topics(kafka.bootstrap_servers, TOPICS + [f"{t}.dlq" for t in TOPICS])
            settings = ApiSettings(
                _env_file=None, environment="test", host="127.0.0.1", port=free_port(),
                database_url=db_urls["resource-api"], issuer=issuer.issuer, jwks_url=issuer.jwks_url,
                client_jwks_url=issuer.client_jwks_url_template, client_secret="dev-test-secret",
                consume_events=True, kafka_bootstrap_servers=kafka.bootstrap_servers,
                consumer_group=f"bench-resource-api-{uuid.uuid4().hex[:8]}",
                kafka_session_timeout_ms=FAST_GROUP_SETTINGS["session_timeout_ms"],
                kafka_heartbeat_interval_ms=FAST_GROUP_SETTINGS["heartbeat_interval_ms"],
                kafka_fetch_max_wait_ms=args.fetch_max_wait_ms,
                # backends nobody calls here: ports nothing listens on
                broker_gateway_target=f"127.0.0.1:{free_port()}", ml_scorer_target=f"127.0.0.1:{free_port()}",
                rl_trainer_target=f"127.0.0.1:{free_port()}", shutdown_grace_seconds=2.0)
            runtime = bootstrap(settings, token_provider=ClientCredentialsTokenProvider(
                issuer.token_url, "resource-api", "dev-test-secret"))
            with ServiceThread(lambda stop: serve(settings, stop, runtime=runtime), port=settings.port):
                latencies, counted = asyncio.run(measure(settings, kafka.bootstrap_servers, issuer, args.events,
                                                args.warmup))
    finally:
        with psycopg.connect(**admin) as conn:  # type: ignore[arg-type]
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    p50, p95 = pct(latencies, 50), pct(latencies, 95)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; {len(latencies)} trades.scored.v1 events "
          f"(after {args.warmup} warm-up), one at a time, one socket")
    print("coach.reflect received - trades.scored.v1 acknowledged (acks=all):")
    print(f"  p50 {p50:.1f} ms, p95 {p95:.1f} ms, max {max(latencies):.1f} ms, min {min(latencies):.1f} ms")
    if args.breakdown:
        print_breakdown(counted)
    verdict = "met" if p50 <= TARGET_P50_MS else "NOT met"
    print(f"p50 / target = {p50 / TARGET_P50_MS:.2f} (target p50 <= {TARGET_P50_MS:.0f} ms: {verdict})")


def print_breakdown(counted: list[tuple[str, str, float, float]]) -> None:
    at = {(stage, key): t for stage, key, t in STAMPS}
    hops: dict[str, list[float]] = {"acknowledged -> consumer got the record": [],
                                    "-> its transaction committed (NOTIFY sent)": [],
                                    "-> LISTEN connection got the notification": [],
                                    "-> client read coach.reflect": []}
    for event_id, trade_id, acked, got in counted:
        marks = [acked, at.get(("fetched", event_id)), at.get(("committed", event_id)),
                 at.get(("notified", trade_id)), got]
        if any(m is None for m in marks):
            continue
        for name, (a, b) in zip(hops, itertools.pairwise(marks), strict=True):
            hops[name].append((b - a) * 1000)  # type: ignore[operator]
    print("per hop (p50 / p95 ms):")
    for name, values in hops.items():
        if values:
            print(f"  {name:<44} {pct(values, 50):>7.1f} / {pct(values, 95):>7.1f}  (n={len(values)})")


if __name__ == "__main__":
    main()
