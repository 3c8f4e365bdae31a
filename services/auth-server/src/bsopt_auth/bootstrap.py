"""Wire auth-server from settings: database reachable and migrated, an active signing key,
the dev seed when asked for, then the ASGI app behind the shared HTTP serve helper until
``stop`` (SIGTERM drains like every other service)."""

from __future__ import annotations

import asyncio

from bsopt_auth.app import create_app
from bsopt_auth.config import AuthSettings
from bsopt_auth.db import migrate
from bsopt_auth.rfc7517 import ensure_active_key
from bsopt_auth.seed import seed_dev
from bsopt_common.db import create_db_engine, make_session_factory, wait_for_database
from bsopt_common.http_server import serve_asgi


def prepare(settings: AuthSettings, *, seed: bool) -> object:
    """Blocking start-up: engine, migrations, signing key, optional dev seed."""
    engine = create_db_engine(settings.require_database_url(), application_name="bsopt-auth-server")
    wait_for_database(engine)
    migrate(engine)
    factory = make_session_factory(engine)
    ensure_active_key(factory, settings.signing_alg)
    if seed:
        seed_dev(factory)
    return engine


async def serve(settings: AuthSettings, stop: asyncio.Event) -> None:
    engine = await asyncio.to_thread(prepare, settings, seed=settings.seed_dev_on_start)
    try:
        await serve_asgi(create_app(settings, engine), stop, host=settings.host, port=settings.port,  # type: ignore[arg-type]
                         grace_seconds=settings.shutdown_grace_seconds)
    finally:
        engine.dispose()  # type: ignore[attr-defined]
