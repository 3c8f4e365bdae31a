"""Wire digest-worker from settings: the runtime (database + migrations, outbox relay),
the ``trades.scored.v1`` consumer (records trades), the weekly tick
(:class:`~bsopt_digest.scheduler.DigestScheduler`), and a gRPC server with health only,
for probes."""

from __future__ import annotations

import asyncio
import contextlib

from bsopt_common.grpc_server import serve_grpc
from bsopt_common.service import ServiceRuntime
from bsopt_digest import models
from bsopt_digest.config import DigestSettings
from bsopt_digest.consumers import scored_trades
from bsopt_digest.scheduler import Clock, DigestScheduler, system_clock


async def serve(settings: DigestSettings, stop: asyncio.Event, *, clock: Clock = system_clock,
                poll_seconds: float = 1.0) -> None:
    runtime = ServiceRuntime(settings, schema=models.SCHEMA, migrations_package="bsopt_digest")
    await runtime.connect()
    async with runtime.running([scored_trades()]):
        assert runtime.session_factory is not None and runtime.outbox is not None  # connect() ran
        scheduler = DigestScheduler(runtime.session_factory, runtime.outbox, cron=settings.tick_cron, clock=clock,
                                    catchup_settle_seconds=settings.catchup_settle_seconds,
                                    poll_seconds=poll_seconds, notify=runtime.notify_outbox_threadsafe)
        ticking = asyncio.create_task(scheduler.run(stop), name="digest-tick")
        try:
            await serve_grpc(stop, host=settings.host, port=settings.health_port)
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await ticking
