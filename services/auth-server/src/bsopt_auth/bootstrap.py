"""Wire auth-server from settings: the key-encryption key, database reachable and
migrated, an active signing key (decryptable with that KEK), the dev seed when asked for,
then the ASGI app behind the shared HTTP serve helper until ``stop`` (SIGTERM drains like
every other service). Beside it, the key maintenance loop retires previous keys past the
verification window and rotates on schedule (``signing_key_rotation_days``).

With ``workers`` > 1 the parent does the start-up and the key maintenance, binds the
listening socket, and starts that many worker processes (spawned, each with its own
engine, pool and caches) serving it; SIGTERM to the parent stops them (each drains)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import socket
import sys
from collections.abc import AsyncIterator

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from bsopt_auth import audit
from bsopt_auth.admin import ensure_self_client
from bsopt_auth.app import create_app
from bsopt_auth.audit import AUTH_SERVER_CLIENT_ID, OUTBOX
from bsopt_auth.config import AuthSettings
from bsopt_auth.db import migrate
from bsopt_auth.passwords import PasswordParams, configure_password_hashing
from bsopt_auth.retention import purge_expired
from bsopt_auth.rfc6749.client_auth import configure_client_cache
from bsopt_auth.rfc7517 import (
    KeyDecryptionError,
    configure_active_key_cache,
    configure_key_encryption,
    ensure_active_key,
    maintain_keys,
)
from bsopt_auth.seed import read_client_keys_dir, seed_dev
from bsopt_auth.throttle import configure_check_cache
from bsopt_common.db import create_db_engine, make_session_factory, wait_for_database
from bsopt_common.events import EventPublisher, OutboxRelay
from bsopt_common.http_server import serve_asgi
from bsopt_common.kafka_auth import kafka_client_options
from bsopt_common.security.event_signing import EventSigner, public_jwks
from bsopt_common.service import service_signing_key

log = logging.getLogger(__name__)


def configure_keys(settings: AuthSettings) -> None:
    """Load the KEK (reads the secret file) and make it the process-wide one; the key
    cache's TTL and the argon2id parameters too."""
    kek = settings.key_encryption_key_provider()
    configure_key_encryption(kek)
    configure_active_key_cache(settings.active_key_cache_seconds)
    configure_password_hashing(PasswordParams(settings.password_time_cost, settings.password_memory_cost_kib,
                                              settings.password_parallelism))
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
    """One pass of key maintenance (also makes sure an active key exists), then of
    retention (:func:`bsopt_auth.retention.purge_expired`)."""
    kid = maintain_keys(factory, alg=settings.signing_alg, rotation_days=settings.signing_key_rotation_days,
                        window_seconds=settings.verification_window_seconds)
    purge_expired(factory, grace_seconds=max(settings.retention_grace_seconds, settings.access_token_ttl_seconds))
    return kid


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
    register_event_key(settings, factory)
    return engine


def register_event_key(settings: AuthSettings, factory: sessionmaker[Session]) -> None:
    """With an event-signing key configured (``BSOPT_AUTH_SIGNING_KEY_FILE`` or
    ``BSOPT_AUTH_SIGNING_KEY``, as every service's ``signing_key``), publish its public
    half as the JWKS of the client ``auth-server`` (consumers verify ``auth.audit.v1``
    against ``<issuer>/oauth2/clients/auth-server/jwks.json``)."""
    key = service_signing_key(settings)
    if key is not None:
        ensure_self_client(factory, public_jwks(key))
        log.info("auth-server events are signed as client %s", AUTH_SERVER_CLIENT_ID)


@contextlib.asynccontextmanager
async def audit_relay(settings: AuthSettings, factory: sessionmaker[Session]) -> AsyncIterator[None]:
    """Publish the outbox (``auth.audit.v1``) while the server runs, when Kafka is
    configured (``KAFKA_BOOTSTRAP_SERVERS``) and the server has its signing key; otherwise
    audit rows are still stored and their outbox rows wait."""
    key = service_signing_key(settings)
    if not settings.kafka_bootstrap_servers or key is None:
        if settings.kafka_bootstrap_servers:
            log.warning("auth-server: Kafka is configured but no signing key (BSOPT_AUTH_SIGNING_KEY_FILE): "
                        "audit events stay in auth.outbox")
        yield
        return
    publisher = EventPublisher(settings.kafka_bootstrap_servers, source=f"/bsopt/{settings.service_name}",
                               signer=EventSigner(AUTH_SERVER_CLIENT_ID, key), client_id=AUTH_SERVER_CLIENT_ID,
                               client_options=kafka_client_options(settings, None))
    await publisher.start()
    relay = OutboxRelay(OUTBOX, factory, publisher)
    task = asyncio.create_task(relay.run(), name="auth-outbox-relay")
    try:
        yield
    finally:
        relay.stop()
        with contextlib.suppress(Exception):
            await relay.relay_once()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await publisher.stop()


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


#: The youngest generation's collection threshold while serving (Python's default: 700).
GC_GEN0_THRESHOLD = 10_000


def tune_interpreter(settings: AuthSettings) -> None:
    """Process-wide settings of a serving process (the ``serve`` command and each worker;
    never the app factory, so tests keep Python's defaults):

    - ``sys.setswitchinterval`` (``gil_switch_interval_ms``, see :class:`AuthSettings`);
    - ``gc.freeze()``: what exists now (modules, classes, the app) moves to the permanent
      generation and is never scanned again. Full collections over it stalled the event
      loop 100-150 ms every few seconds at 3,000-4,000 grants/s (p99 60-110 ms against
      25-40 ms frozen; BENCHMARKS.md);
    - :data:`GC_GEN0_THRESHOLD` for the youngest generation (a request allocates a few
      hundred container objects; 700 meant a collection every other request or so).
    """
    sys.setswitchinterval(settings.gil_switch_interval_ms / 1000)
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def _worker(settings: AuthSettings, sock: socket.socket) -> None:
    """One worker process of a multi-worker ``serve``: its own engine and app on the
    parent's listening socket, until SIGTERM (uvicorn drains)."""
    import uvicorn

    from bsopt_common.telemetry import setup_logging

    setup_logging(settings.service_name, environment=settings.environment)
    configure_keys(settings)
    configure_client_cache(settings.client_cache_seconds)
    configure_check_cache(settings.throttle_check_cache_seconds)
    audit.configure_batching(settings.audit_batch_seconds)
    engine = create_db_engine(settings.require_database_url(), application_name="bsopt-auth-server")
    config = uvicorn.Config(create_app(settings, engine), lifespan="on", log_config=None, access_log=False,
                            timeout_graceful_shutdown=max(1, round(settings.shutdown_grace_seconds)))
    tune_interpreter(settings)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        engine.dispose()


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


async def _serve_workers(settings: AuthSettings, stop: asyncio.Event) -> None:
    sock = _listen(settings.host, settings.port)
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_worker, args=(settings, sock), name=f"auth-worker-{i}", daemon=False)
             for i in range(settings.workers)]
    for proc in procs:
        proc.start()
    log.info("auth-server: %d workers on %s:%d", len(procs), settings.host, settings.port)
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            dead = [p for p in procs if not p.is_alive()]
            if dead and not stop.is_set():
                raise RuntimeError(f"auth-server worker {dead[0].name} exited with {dead[0].exitcode}")
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()  # SIGTERM: the worker drains
        deadline = settings.shutdown_grace_seconds + 5
        for proc in procs:
            await asyncio.to_thread(proc.join, deadline)
            if proc.is_alive():
                proc.kill()
        sock.close()


async def serve(settings: AuthSettings, stop: asyncio.Event) -> None:
    engine = await asyncio.to_thread(prepare, settings, seed=settings.seed_dev_on_start)
    maintenance = asyncio.create_task(key_maintenance_loop(settings, make_session_factory(engine), stop))
    configure_client_cache(settings.client_cache_seconds)  # process-wide: undone when serving ends
    configure_check_cache(settings.throttle_check_cache_seconds)
    audit.configure_batching(settings.audit_batch_seconds)
    try:
        async with audit_relay(settings, make_session_factory(engine)):
            await _serve(settings, engine, stop)
    finally:
        configure_client_cache(0)
        configure_check_cache(0)
        audit.configure_batching(0)
        maintenance.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await maintenance
        engine.dispose()


async def _serve(settings: AuthSettings, engine: Engine, stop: asyncio.Event) -> None:
    if settings.workers > 1:
        await _serve_workers(settings, stop)
    else:
        await serve_asgi(create_app(settings, engine), stop, host=settings.host, port=settings.port,
                         grace_seconds=settings.shutdown_grace_seconds)
