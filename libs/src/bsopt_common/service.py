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
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from bsopt_common import migrations
from bsopt_common.db import create_db_engine, make_session_factory, wait_for_database
from bsopt_common.events import EventConsumer, EventPublisher, Handler, Outbox, OutboxRelay
from bsopt_common.kafka_auth import kafka_client_options
from bsopt_common.security import AccessTokenVerifier, ClientCredentialsTokenProvider, JWKSCache
from bsopt_common.settings import EVENTS_AUDIENCE, ServiceSettings
from bsopt_common.topics import Topic

log = logging.getLogger(__name__)


def make_verifier(settings: ServiceSettings, audience: str) -> AccessTokenVerifier:
    jwks = JWKSCache(settings.resolved_jwks_url,
                     min_refetch_interval_seconds=settings.jwks_min_refetch_interval_seconds)
    return AccessTokenVerifier(settings.require_issuer(), audience, jwks, leeway_seconds=settings.token_leeway_seconds)


def make_token_provider(settings: ServiceSettings) -> ClientCredentialsTokenProvider:
    if not settings.client_id or settings.client_secret is None:
        raise RuntimeError(
            f"{settings.service_name}: client credentials are not configured; set "
            f"{settings.model_config.get('env_prefix', '')}CLIENT_ID and ..._CLIENT_SECRET"
        )
    return ClientCredentialsTokenProvider(settings.token_url, settings.client_id, settings.client_secret)


@dataclass(frozen=True)
class ConsumerSpec:
    """One consumer group of a service: which registered topics it reads, and the
    handler of each (cosmicpython's handler table)."""

    group_id: str
    handlers: Mapping[Topic[Any], Handler]


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
    _events_verifier: AccessTokenVerifier | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    async def connect(self) -> None:
        """Database reachable and migrated, outbox ready (in a worker thread)."""
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self.connect_database)

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
            self.token_provider = self.token_provider or make_token_provider(self.settings)
            bootstrap = self.settings.require_kafka()
            session_factory, outbox = self._database()
            client_options = kafka_client_options(self.settings, self.token_provider)
            self.publisher = EventPublisher(bootstrap, source=f"/bsopt/{self.settings.service_name}",
                                            token_provider=self.token_provider, client_options=client_options)
            await self.publisher.start()
            self._relay = OutboxRelay(outbox, session_factory, self.publisher)
            self._tasks.append(asyncio.create_task(self._relay.run(), name="outbox-relay"))
            events_verifier = make_verifier(self.settings, EVENTS_AUDIENCE)
            self._events_verifier = events_verifier
            for spec in consumer_specs:
                consumer = EventConsumer(
                    bootstrap_servers=bootstrap, group_id=spec.group_id, handlers=spec.handlers,
                    session_factory=session_factory, schema=self.schema, verifier=events_verifier,
                    dlq_publisher=self.publisher, outbox=outbox,
                    session_timeout_ms=self.settings.kafka_session_timeout_ms,
                    heartbeat_interval_ms=self.settings.kafka_heartbeat_interval_ms,
                    client_options=client_options,
                )
                await consumer.start()
                self.consumers.append(consumer)
                self._tasks.append(asyncio.create_task(consumer.run(), name=f"consumer-{spec.group_id}"))

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
        for verifier in (self.verifier, self._events_verifier):
            if verifier is not None:
                await verifier.jwks.aclose()
        if self.engine is not None:
            self.engine.dispose()

