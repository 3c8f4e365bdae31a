"""Wire digest-worker from settings: database + migrations, outbox relay, the
``trades.scored.v1`` consumer, and a gRPC health server for probes."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.orm import Session

from bsopt.ml_scorer.v1 import events_pb2 as scorer_events
from bsopt_common.events import Event
from bsopt_common.grpc_server import GrpcServer
from bsopt_common.security.grpc import TokenAuthInterceptor
from bsopt_common.service import ConsumerSpec, ServiceRuntime
from bsopt_digest import models
from bsopt_digest.config import DigestSettings
from bsopt_digest.digests import apply_scored_trade

log = logging.getLogger(__name__)
TOPIC_TRADES_SCORED = "trades.scored.v1"


def scored_trades(runtime: ServiceRuntime) -> ConsumerSpec:
    def handle(event: Event, session: Session) -> None:
        apply_scored_trade(event.payload.trade, session, runtime.outbox)

    return ConsumerSpec(group_id="digest-worker", topics={TOPIC_TRADES_SCORED: scorer_events.TradeScored},
                        allowed_producers={TOPIC_TRADES_SCORED: ["ml-scorer"]}, handler=handle)


async def serve(settings: DigestSettings, stop: asyncio.Event) -> None:
    runtime = ServiceRuntime(settings, schema=models.SCHEMA, migrations_package="bsopt_digest")
    await asyncio.to_thread(runtime.connect_database)
    await runtime.start([scored_trades(runtime)], connect=False)
    try:
        # Health only: no method is callable, so the interceptor's policy table is empty.
        server = GrpcServer(host=settings.host, port=settings.health_port,
                            interceptor=TokenAuthInterceptor(verifier=None, method_scopes={}),  # type: ignore[arg-type]
                            registrations=[], service_names=[])
        await server.start()
        await stop.wait()
        log.info("draining")
        await server.stop()
    finally:
        await runtime.stop()
