"""gRPC clients of the backends, one stub per backend over an authorized channel.

Every call carries an access token of *this* service (client credentials, RFC 6749
§4.4) restricted to the backend's resource identifier (RFC 8707) and to the scopes
below; the user the call is for travels as an explicit ``user_id`` request field.

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
from bsopt_common.security.grpc import authorized_channel
from bsopt_common.settings import BROKER_GATEWAY_AUDIENCE, ML_SCORER_AUDIENCE, RL_TRAINER_AUDIENCE


@dataclass(frozen=True)
class Backend:
    """A backend as this service calls it: audience of our token and the scopes asked."""

    name: str
    audience: str
    scope: str


BROKER_GATEWAY = Backend(
    "broker-gateway", BROKER_GATEWAY_AUDIENCE, "broker:accounts broker:orders broker:import"
)
ML_SCORER = Backend("ml-scorer", ML_SCORER_AUDIENCE, "scorer:read")
RL_TRAINER = Backend("rl-trainer", RL_TRAINER_AUDIENCE, "trainer:jobs.read trainer:jobs.write")


class TokenSource(Protocol):
    """What the channels need from a token provider (ClientCredentialsTokenProvider)."""

    async def token(self, resource: str, scope: str = "") -> str: ...


class BackendClients:
    """The three stubs plus the deadlines to call them with (seconds).

    Raises ``RuntimeError`` when a stub is used before :meth:`open`.
    """

    def __init__(self, settings: ApiSettings, token_provider: TokenSource):
        self.settings = settings
        self.token_provider = token_provider
        self.timeout_seconds = settings.grpc_timeout_seconds
        self.paper_trading_timeout_seconds = settings.paper_trading_timeout_seconds
        self._channels: list[aio.Channel] = []
        self._broker: broker_grpc.BrokerGatewayServiceStub | None = None
        self._scorer: scorer_grpc.MlScorerServiceStub | None = None
        self._trainer: trainer_grpc.RlTrainerServiceStub | None = None

    def _channel(self, target: str, backend: Backend) -> aio.Channel:
        channel = authorized_channel(
            target, self.token_provider, backend.audience, backend.scope  # type: ignore[arg-type]
        )
        self._channels.append(channel)
        return channel

    def open(self) -> None:
        """Create the channels (lazy: nothing connects until the first call)."""
        if self._channels:
            return
        s = self.settings
        self._broker = broker_grpc.BrokerGatewayServiceStub(
            self._channel(s.broker_gateway_target, BROKER_GATEWAY)
        )
        self._scorer = scorer_grpc.MlScorerServiceStub(self._channel(s.ml_scorer_target, ML_SCORER))
        self._trainer = trainer_grpc.RlTrainerServiceStub(self._channel(s.rl_trainer_target, RL_TRAINER))

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
