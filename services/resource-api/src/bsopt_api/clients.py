"""gRPC clients of the backends, one stub per backend over an authorized channel.

Every call acts for the user who called us, and carries a token that says so: the
user's access token exchanged at the authorization server (RFC 8693 token exchange,
:class:`~bsopt_common.security.token_exchange.TokenExchanger`) for one whose ``aud`` is
the backend (RFC 8707), ``sub`` the user, ``act`` this service, and whose scope is what
that one call needs. The backend takes the user from that token; no request names a
user. The channels themselves carry no credentials, so a call made without
:meth:`BackendClients.acting_for` is refused by the backend (UNAUTHENTICATED).

Channels are created by :meth:`BackendClients.open` inside the running event loop
(grpc.aio channels belong to the loop that made them), never at import.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Protocol

from grpc import aio

from bsopt.broker_gateway.v1 import broker_gateway_pb2_grpc as broker_grpc
from bsopt.ml_scorer.v1 import ml_scorer_pb2_grpc as scorer_grpc
from bsopt.rl_trainer.v1 import rl_trainer_pb2_grpc as trainer_grpc
from bsopt_api.config import ApiSettings
from bsopt_common.security.grpc import bearer_metadata
from bsopt_common.security.jwt import AccessTokenClaims
from bsopt_common.security.token_exchange import TokenExchanger
from bsopt_common.settings import BROKER_GATEWAY_AUDIENCE, ML_SCORER_AUDIENCE, RL_TRAINER_AUDIENCE


@dataclass(frozen=True)
class Backend:
    """A backend as this service calls it: its name and resource identifier (the
    ``aud`` of the tokens it accepts)."""

    name: str
    audience: str


BROKER_GATEWAY = Backend("broker-gateway", BROKER_GATEWAY_AUDIENCE)
ML_SCORER = Backend("ml-scorer", ML_SCORER_AUDIENCE)
RL_TRAINER = Backend("rl-trainer", RL_TRAINER_AUDIENCE)


class TokenSource(Protocol):
    """What the exchanger needs from this service's token-endpoint client
    (:class:`~bsopt_common.security.token_provider.ClientCredentialsTokenProvider`)."""

    async def request_token(self, form: dict[str, str], *, what: str = "a token") -> dict[str, object]: ...

    async def token(self, resource: str, scope: str = "") -> str: ...


class BackendClients:
    """The three stubs plus the deadlines to call them with (seconds).

    Raises ``RuntimeError`` when a stub is used before :meth:`open`.
    """

    def __init__(self, settings: ApiSettings, token_provider: TokenSource):
        self.settings = settings
        self.token_provider = token_provider
        self.exchanger = TokenExchanger(token_provider)
        self.timeout_seconds = settings.grpc_timeout_seconds
        self.paper_trading_timeout_seconds = settings.paper_trading_timeout_seconds
        self._channels: list[aio.Channel] = []
        self._broker: broker_grpc.BrokerGatewayServiceStub | None = None
        self._scorer: scorer_grpc.MlScorerServiceStub | None = None
        self._trainer: trainer_grpc.RlTrainerServiceStub | None = None

    def _channel(self, target: str) -> aio.Channel:
        channel = aio.insecure_channel(target)  # loopback / in-cluster; mTLS by the mesh
        self._channels.append(channel)
        return channel

    async def acting_for(self, principal: AccessTokenClaims, backend: Backend,
                         scope: str) -> tuple[tuple[str, str], ...]:
        """Call metadata for one call to ``backend`` on behalf of ``principal`` (the user's
        verified token to this API), with only ``scope``: pass it as ``metadata=``.

        Raises TokenRequestError when the authorization server refuses the exchange or
        cannot be reached (rendered as 503 problem details)."""
        token = await self.exchanger.token_for(principal.token, backend.audience, scope)
        return bearer_metadata(token)

    async def as_service(self, backend: Backend, scope: str) -> tuple[tuple[str, str], ...]:
        """Call metadata carrying this service's *own* client-credentials token (RFC 6749
        §4.4) for ``backend`` with ``scope``: only for a call that has no user token to act
        with and whose user the backend takes from elsewhere (the OAuth callback of a broker
        connection: the user is the one the ``state`` was bound to). Raises TokenRequestError."""
        return bearer_metadata(await self.token_provider.token(backend.audience, scope))

    def open(self) -> None:
        """Create the channels (lazy: nothing connects until the first call)."""
        if self._channels:
            return
        s = self.settings
        self._broker = broker_grpc.BrokerGatewayServiceStub(
            self._channel(s.broker_gateway_target)
        )
        self._scorer = scorer_grpc.MlScorerServiceStub(self._channel(s.ml_scorer_target))
        self._trainer = trainer_grpc.RlTrainerServiceStub(self._channel(s.rl_trainer_target))

    async def close(self, grace_seconds: float | None = None) -> None:
        for channel in self._channels:
            with contextlib.suppress(Exception):
                await channel.close(grace_seconds)
        self._channels.clear()
        self._broker = self._scorer = self._trainer = None

    @staticmethod
    def _opened(stub: object, name: str) -> object:
        if stub is None:
            raise RuntimeError(f"{name} client used before BackendClients.open()")
        return stub

    @property
    def broker_gateway(self) -> broker_grpc.BrokerGatewayServiceStub:
        return self._opened(self._broker, BROKER_GATEWAY.name)  # type: ignore[return-value]

    @property
    def ml_scorer(self) -> scorer_grpc.MlScorerServiceStub:
        return self._opened(self._scorer, ML_SCORER.name)  # type: ignore[return-value]

    @property
    def rl_trainer(self) -> trainer_grpc.RlTrainerServiceStub:
        return self._opened(self._trainer, RL_TRAINER.name)  # type: ignore[return-value]
