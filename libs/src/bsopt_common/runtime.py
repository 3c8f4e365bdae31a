"""Process runtime shared by services: run an async main until SIGINT/SIGTERM, then let
it drain. Nothing here runs at import time."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from bsopt_common.settings import ServiceSettings


def run_until_signalled(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run ``main(stop_event)``; SIGINT/SIGTERM set ``stop_event`` so ``main`` can drain."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    asyncio.run(runner())


S = TypeVar("S", bound="ServiceSettings")


def load_settings(settings_type: type[S]) -> S:
    """``settings_type()`` from the environment; on a configuration error print what is
    wrong (never the values: they may be secrets) and exit with status 2."""
    from pydantic import ValidationError

    try:
        return settings_type()
    except ValidationError as exc:
        lines = [f"  {'.'.join(map(str, e['loc'])) or '-'}: {e['msg']}" for e in exc.errors()]
        print(f"configuration error ({settings_type.__name__}):", *lines, sep="\n", file=sys.stderr)
        raise SystemExit(2) from None


def run_service(settings_type: type[S], serve: Callable[[S, asyncio.Event], Awaitable[None]]) -> None:
    """Entry point body of every service: settings from the environment (exit 2 with a
    clear message when they are incomplete), logging, telemetry, then
    ``serve(settings, stop)`` until SIGINT/SIGTERM."""
    run_serve(load_settings(settings_type), serve)


def run_serve(settings: S, serve: Callable[[S, asyncio.Event], Awaitable[None]]) -> None:
    """Logging, telemetry, then ``serve(settings, stop)`` until SIGINT/SIGTERM (for a
    command that adjusted its settings first, e.g. ``--port``)."""
    from bsopt_common.telemetry import setup_logging, setup_telemetry

    setup_logging(settings.service_name, environment=settings.environment)
    setup_telemetry(settings.service_name)
    run_until_signalled(lambda stop: serve(settings, stop))
