"""Wiring shared by every service's ``bootstrap.py``: the pieces built from settings
(engine, verifier, token provider, publisher, outbox relay, consumers) and their
lifecycle. Nothing connects until :meth:`ServiceRuntime.start`.

Order on start: database reachable -> migrations -> JWKS verifier -> publisher ->
outbox relay -> consumers. Order on stop (drain): consumers stop (their in-flight
message finishes and commits) -> relay flushes once -> publisher stops -> pool disposed.

A service's ``serve`` reads::

    runtime = ServiceRuntime(settings, schema=..., migrations_package=..., audience=...)
    await runtime.connect()                      # database + migrations; adapters need the pool
    scorer = TradeScorer(market_data, runtime.outbox)
    async with runtime.running([imported_trades(scorer)]):
        await serve_grpc(stop, host=..., port=..., verifier=runtime.verifier, services=[...])
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from joserfc.jwk import Key
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from bsopt_common import migrations
from bsopt_common.db import create_db_engine, make_session_factory, wait_for_database
from bsopt_common.events import EventConsumer, EventPublisher, Handler, Outbox, OutboxRelay
from bsopt_common.kafka_auth import kafka_client_options
from bsopt_common.security import AccessTokenVerifier, ClientCredentialsTokenProvider, JWKSCache
from bsopt_common.security.event_signing import (
    EventSignatureVerifier,
    EventSigner,
    SigningKeyError,
    load_signing_key,
)
from bsopt_common.settings import ServiceSettings
from bsopt_common.topics import Topic

log = logging.getLogger(__name__)


def make_verifier(settings: ServiceSettings, audience: str) -> AccessTokenVerifier:
    jwks = JWKSCache(settings.resolved_jwks_url,
                     min_refetch_interval_seconds=settings.jwks_min_refetch_interval_seconds)
    return AccessTokenVerifier(settings.require_issuer(), audience, jwks, leeway_seconds=settings.token_leeway_seconds)


def service_signing_key(settings: ServiceSettings) -> Key | None:
    """The service's own private key from settings, or None. Raises RuntimeError naming
    the setting for a key that cannot be used (never quoting it)."""
    text = settings.signing_key_text()
    if text is None:
        return None
    try:
        return load_signing_key(text)
    except SigningKeyError as exc:
        raise RuntimeError(f"{settings.service_name}: {settings.env_name('signing_key')}: {exc}") from None


def make_token_provider(settings: ServiceSettings) -> ClientCredentialsTokenProvider:
    """This service's client at the token endpoint: ``private_key_jwt`` (RFC 7523) with its
    signing key when one is configured, else ``client_secret_basic``."""
    key = service_signing_key(settings)
    if not settings.client_id or (key is None and settings.client_secret is None):
        raise RuntimeError(
            f"{settings.service_name}: client credentials are not configured; set {settings.env_name('client_id')} "
            f"and {settings.env_name('signing_key_file')} (or {settings.env_name('client_secret')})"
        )
    if key is not None:
        return ClientCredentialsTokenProvider(settings.token_url, settings.client_id, signing_key=key)
    return ClientCredentialsTokenProvider(settings.token_url, settings.client_id, settings.client_secret)


def make_event_signer(settings: ServiceSettings) -> EventSigner:
    """Signs the events this service publishes. Raises RuntimeError without a key."""
    key = service_signing_key(settings)
    if key is None or not settings.client_id:
        raise RuntimeError(
            f"{settings.service_name}: publishing events needs the service's key pair; set "
            f"{settings.env_name('client_id')} and {settings.env_name('signing_key_file')} "
            f"(or {settings.env_name('signing_key')})"
        )
    return EventSigner(settings.client_id, key)


@dataclass(frozen=True)
class ConsumerSpec:
    """One consumer group of a service: which registered topics it reads, and the
    handler of each (cosmicpython's handler table)."""

    group_id: str
    handlers: Mapping[Topic[Any], Handler]
    #: Exceptions of the handlers that retrying cannot cure (bad data, no market data
    #: for the fill): dead-lettered at the first attempt instead of after the retries.
    permanent_errors: tuple[type[BaseException], ...] = ()


@dataclass
class ServiceRuntime:
    settings: ServiceSettings
    schema: str
    migrations_package: str
    audience: str | None = None
    engine: Engine | None = None
    session_factory: sessionmaker[Session] | None = None
    verifier: AccessTokenVerifier | None = None
    token_provider: ClientCredentialsTokenProvider | None = None
    publisher: EventPublisher | None = None
    outbox: Outbox | None = None
    consumers: list[EventConsumer] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _relay: OutboxRelay | None = None
    _events_verifier: EventSignatureVerifier | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    async def connect(self) -> None:
        """Database reachable and migrated, outbox ready (in a worker thread)."""
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self.connect_database)

    def require_token_provider(self) -> ClientCredentialsTokenProvider:
        """This service's client at the token endpoint (built from settings on first use;
        closed by :meth:`stop`). Raises RuntimeError when no client credentials are set."""
        if self.token_provider is None:
            self.token_provider = make_token_provider(self.settings)
        return self.token_provider

    def notify_outbox_threadsafe(self) -> None:
        """Wake the outbox relay from any thread (after a commit that staged events)."""
        if self._loop is not None and self.outbox is not None:
            self._loop.call_soon_threadsafe(self.outbox.notify)

    @contextlib.asynccontextmanager
    async def running(self, consumer_specs: Iterable[ConsumerSpec] = (), *,
                      publish: bool = True) -> AsyncIterator[ServiceRuntime]:
        """:meth:`start` (connecting first unless :meth:`connect` ran), yield, and
        always :meth:`stop`, also when start-up fails half-way."""
        try:
            await self.start(consumer_specs, publish=publish, connect=self.engine is None)
            yield self
        finally:
            await self.stop()

    def connect_database(self) -> None:
        self.engine = create_db_engine(self.settings.require_database_url(),
                                       application_name=self.settings.service_name)
        wait_for_database(self.engine)
        migrations.upgrade(self.migrations_package, self.engine, self.schema)
        self.session_factory = make_session_factory(self.engine)
        self.outbox = Outbox(self.schema)

    def _database(self) -> tuple[sessionmaker[Session], Outbox]:
        """The session factory and outbox built by :meth:`connect_database`."""
        if self.session_factory is None or self.outbox is None:
            raise RuntimeError("ServiceRuntime: start(connect=False) needs connect() or connect_database() first")
        return self.session_factory, self.outbox

    async def start(self, consumer_specs: Iterable[ConsumerSpec] = (), *, publish: bool = True,
                    connect: bool = True) -> None:
        """``connect=False`` when :meth:`connect_database` was already called."""
        consumer_specs = list(consumer_specs)
        self._loop = asyncio.get_running_loop()
        if connect:
            await asyncio.to_thread(self.connect_database)
        if self.audience is not None:
            self.verifier = make_verifier(self.settings, self.audience)
        if publish or consumer_specs:
            bootstrap = self.settings.require_kafka()
            session_factory, outbox = self._database()
            # SASL/OAUTHBEARER with our own token only when a real Kafka asks for it
            client_options = kafka_client_options(self.settings, self.require_token_provider()
                                                  if self.settings.kafka_security_protocol.startswith("SASL")
                                                  else None)
            self.publisher = EventPublisher(bootstrap, source=f"/bsopt/{self.settings.service_name}",
                                            signer=make_event_signer(self.settings) if publish else None,
                                            client_id=self.settings.client_id, client_options=client_options)
            await self.publisher.start()
            if publish:
                self._relay = OutboxRelay(outbox, session_factory, self.publisher)
                self._background(self._relay.run(), "outbox-relay")
            events_verifier = EventSignatureVerifier(self.settings.resolved_client_jwks_url)
            self._events_verifier = events_verifier
            for spec in consumer_specs:
                consumer = EventConsumer(
                    bootstrap_servers=bootstrap, group_id=spec.group_id, handlers=spec.handlers,
                    session_factory=session_factory, schema=self.schema, verifier=events_verifier,
                    dlq_publisher=self.publisher, outbox=outbox, permanent_errors=spec.permanent_errors,
                    session_timeout_ms=self.settings.kafka_session_timeout_ms,
                    heartbeat_interval_ms=self.settings.kafka_heartbeat_interval_ms,
                    fetch_max_wait_ms=self.settings.kafka_fetch_max_wait_ms,
                    client_options=client_options,
                )
                await consumer.start()
                self.consumers.append(consumer)
                self._background(consumer.run(), f"consumer-{spec.group_id}")

    def _background(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``coro`` as a task until :meth:`stop`; one that ends by itself is logged
        as an error with its exception (an outbox relay or consumer loop must not stop
        silently while the process stays up)."""
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(_log_unexpected_end)
        self._tasks.append(task)

    async def stop(self) -> None:
        for consumer in self.consumers:
            with contextlib.suppress(Exception):
                await consumer.stop()
        if self._relay is not None:
            self._relay.stop()
            with contextlib.suppress(Exception):
                await self._relay.relay_once()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self.consumers.clear()
        self._relay = None
        if self.publisher is not None:
            await self.publisher.stop()
            self.publisher = None
        if self.token_provider is not None:
            await self.token_provider.aclose()
        if self.verifier is not None:
            await self.verifier.jwks.aclose()
        if self._events_verifier is not None:
            await self._events_verifier.aclose()
        if self.engine is not None:
            self.engine.dispose()


def _log_unexpected_end(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("background task %s ended: %r", task.get_name(), exc, exc_info=exc)
