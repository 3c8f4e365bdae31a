"""Wire digest-worker from settings: the runtime (database + migrations, outbox relay),
the ``trades.scored.v1`` consumer, and a gRPC server with health only, for probes."""

from __future__ import annotations

import asyncio

from bsopt_common.grpc_server import serve_grpc
from bsopt_common.service import ServiceRuntime
from bsopt_digest import models
from bsopt_digest.config import DigestSettings
from bsopt_digest.consumers import scored_trades


async def serve(settings: DigestSettings, stop: asyncio.Event) -> None:
    runtime = ServiceRuntime(settings, schema=models.SCHEMA, migrations_package="bsopt_digest")
    await runtime.connect()
    async with runtime.running([scored_trades(runtime.outbox)]):
        await serve_grpc(stop, host=settings.host, port=settings.health_port)
