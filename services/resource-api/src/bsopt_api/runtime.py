"""resource-api's runtime: :class:`ApiRuntime` holds every adapter the app
uses (database + migrations, the token verifier, the Kafka consumers, the WebSocket hub,
the backends' gRPC clients) and their start/stop order. Building one connects nothing.

Start: hub bound to the loop -> database reachable -> migrations -> verifier
(audience ``urn:bsopt:resource-api``) -> consumers (when ``consume_events``) -> gRPC
channels. Stop (drain; uvicorn has already closed open sockets with 1012): remaining
sockets told to close (1001) -> consumers finish their in-flight event and commit ->
channels closed -> pool disposed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from bsopt_api.clients import BackendClients, TokenSource
from bsopt_api.config import SCHEMA, ApiSettings
from bsopt_api.consumers import consumer_specs
from bsopt_api.hub import CoachHub
from bsopt_common.security.jwt import AccessTokenVerifier
from bsopt_common.security.token_provider import ClientCredentialsTokenProvider
from bsopt_common.service import ServiceRuntime, make_token_provider
from bsopt_common.settings import RESOURCE_API_AUDIENCE

log = logging.getLogger(__name__)


@dataclass
class ApiRuntime:
    settings: ApiSettings
    service: ServiceRuntime
    hub: CoachHub
    #: Token source of the backend channels; None: the runtime's client-credentials
    #: provider (shared with the event bus), made from settings when it has none.
    token_provider: TokenSource | None = None
    backends: BackendClients | None = None
    started: bool = False
    _own_provider: ClientCredentialsTokenProvider | None = field(default=None, repr=False)

    @property
    def verifier(self) -> AccessTokenVerifier:
        if self.service.verifier is None:
            raise RuntimeError("ApiRuntime.start() first")
        return self.service.verifier

    @property
    def session_factory(self) -> sessionmaker[Session]:
        if self.service.session_factory is None:
            raise RuntimeError("ApiRuntime.start() first")
        return self.service.session_factory

    async def start(self) -> None:
        """Raises RuntimeError for missing configuration (database, Kafka, client
        credentials) and the database's errors once its retries are spent."""
        self.hub.bind(asyncio.get_running_loop())
        specs = consumer_specs(self.hub, self.settings.consumer_group) if self.settings.consume_events else []
        try:
            await self.service.start(specs, publish=False)
            await self.hub.start(self.session_factory)  # LISTEN for the coach stream
            provider = self.token_provider or self.service.token_provider
            if provider is None:
                provider = self._own_provider = make_token_provider(self.settings)
            self.backends = BackendClients(self.settings, provider)
            self.backends.open()
        except BaseException:
            await self.stop()
            raise
        self.started = True
        log.info("resource-api started (consumers: %s)", "on" if specs else "off")

    async def stop(self) -> None:
        self.started = False
        self.hub.close_all()
        await self.hub.stop()
        await self.service.stop()
        if self.backends is not None:
            await self.backends.close()
        if self._own_provider is not None:
            with contextlib.suppress(Exception):
                await self._own_provider.aclose()


def bootstrap(settings: ApiSettings, *, token_provider: TokenSource | None = None) -> ApiRuntime:
    """An unstarted runtime for ``settings``."""
    service = ServiceRuntime(settings, schema=SCHEMA, migrations_package="bsopt_api",
                             audience=RESOURCE_API_AUDIENCE)
    hub = CoachHub(queue_size=settings.ws_queue_size, max_sockets_per_user=settings.ws_max_sockets_per_user)
    return ApiRuntime(settings=settings, service=service, hub=hub, token_provider=token_provider)
