"""Process runtime shared by services: run an async main until SIGINT/SIGTERM, then let
it drain. Nothing here runs at import time."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable


def run_until_signalled(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run ``main(stop_event)``; SIGINT/SIGTERM set ``stop_event`` so ``main`` can drain."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    asyncio.run(runner())


def run_service(settings, serve) -> None:  # noqa: ANN001 - ServiceSettings, serve(settings, stop)
    """Entry point body of every service: logging, telemetry, then ``serve(settings,
    stop)`` until SIGINT/SIGTERM."""
    from bsopt_common.telemetry import setup_logging, setup_telemetry

    setup_logging(settings.service_name)
    setup_telemetry(settings.service_name)
    run_until_signalled(lambda stop: serve(settings, stop))
