"""Wire auth-server from settings: the key-encryption key, database reachable and
migrated, an active signing key (decryptable with that KEK), the dev seed when asked for,
then the ASGI app behind the shared HTTP serve helper until ``stop`` (SIGTERM drains like
every other service). Beside it, the key maintenance loop retires previous keys past the
verification window and rotates on schedule (``signing_key_rotation_days``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from bsopt_auth.app import create_app
from bsopt_auth.config import AuthSettings
from bsopt_auth.db import migrate
from bsopt_auth.rfc7517 import KeyDecryptionError, configure_key_encryption, ensure_active_key, maintain_keys
from bsopt_auth.seed import read_client_keys_dir, seed_dev
from bsopt_common.db import create_db_engine, make_session_factory, wait_for_database
from bsopt_common.http_server import serve_asgi

log = logging.getLogger(__name__)


def configure_keys(settings: AuthSettings) -> None:
    """Load the KEK (reads the secret file) and make it the process-wide one."""
    kek = settings.key_encryption_key_provider()
    configure_key_encryption(kek)
    if kek.key_id.startswith("dev-only:"):
        log.warning("signing keys are sealed with the DEV-ONLY key-encryption key %s (environment=%s)",
                    kek.key_id, settings.environment)
    else:
        log.info("signing keys are encrypted at rest with KEK %s", kek.key_id)


def check_active_key(settings: AuthSettings, factory: sessionmaker[Session]) -> str:
    """Decrypt the active key now, so a wrong KEK stops start-up with a clear message."""
    try:
        return ensure_active_key(factory, settings.signing_alg)
    except KeyDecryptionError as exc:
        raise RuntimeError(
            f"auth-server: the active signing key cannot be decrypted ({exc}). Configure the "
            "key-encryption key it was sealed with; or, to move to this KEK, run "
            "`python -m bsopt_auth keys rotate` (the old key stays published without its private "
            "part); or, if it is compromised, `python -m bsopt_auth keys revoke <kid>` (tokens it "
            "signed stop verifying)"
        ) from exc


def maintain(settings: AuthSettings, factory: sessionmaker[Session]) -> str | None:
    """One pass of key maintenance (also makes sure an active key exists)."""
    return maintain_keys(factory, alg=settings.signing_alg, rotation_days=settings.signing_key_rotation_days,
                         window_seconds=settings.verification_window_seconds)


def prepare(settings: AuthSettings, *, seed: bool) -> Engine:
    """Blocking start-up: KEK, engine, migrations, signing key, optional dev seed."""
    configure_keys(settings)
    engine = create_db_engine(settings.require_database_url(), application_name="bsopt-auth-server")
    wait_for_database(engine)
    migrate(engine)
    factory = make_session_factory(engine)
    maintain(settings, factory)
    check_active_key(settings, factory)
    if seed:
        keys_dir = settings.seed_client_keys_dir
        seed_dev(factory, read_client_keys_dir(keys_dir) if keys_dir is not None else None)
    return engine


async def key_maintenance_loop(settings: AuthSettings, factory: sessionmaker[Session],
                               stop: asyncio.Event) -> None:
    """Run :func:`maintain` every ``key_maintenance_interval_seconds`` until ``stop``."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), settings.key_maintenance_interval_seconds)
        if stop.is_set():
            return
        try:
            await asyncio.to_thread(maintain, settings, factory)
        except Exception:  # the next pass retries; serving goes on with the current key
            log.exception("signing key maintenance failed")


async def serve(settings: AuthSettings, stop: asyncio.Event) -> None:
    engine = await asyncio.to_thread(prepare, settings, seed=settings.seed_dev_on_start)
    maintenance = asyncio.create_task(key_maintenance_loop(settings, make_session_factory(engine), stop))
    try:
        await serve_asgi(create_app(settings, engine), stop, host=settings.host, port=settings.port,
                         grace_seconds=settings.shutdown_grace_seconds)
    finally:
        maintenance.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await maintenance
        engine.dispose()
