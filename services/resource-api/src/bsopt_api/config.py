"""Settings of resource-api (environment prefix ``BSOPT_API_``).

``DATABASE_URL`` and ``KAFKA_BOOTSTRAP_SERVERS`` also work unprefixed (see
:class:`bsopt_common.settings.ServiceSettings`). Building settings reads the
environment only; it never connects.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from bsopt_common.settings import ServiceSettings

#: Postgres schema holding every table of this service.
SCHEMA = "api"


class ApiSettings(ServiceSettings):
    """Environment: ``BSOPT_API_<FIELD>``, e.g. ``BSOPT_API_PORT=8000``,
    ``BSOPT_API_CLIENT_SECRET=...``, ``BSOPT_API_RL_TRAINER_TARGET=rl-trainer:50053``."""

    model_config = SettingsConfigDict(env_prefix="BSOPT_API_", extra="ignore")

    service_name: str = "resource-api"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    #: URL clients reach this API at (behind the TLS-terminating proxy). When it is
    #: https, every response carries HSTS (Strict-Transport-Security).
    public_url: str | None = None
    #: DPoP (RFC 9449, ``bsopt_common.security.dpop``): require a server nonce in proofs
    #: (``use_dpop_nonce`` + ``DPoP-Nonce``; stateless HMAC nonces of
    #: ``dpop_nonce_lifetime_seconds`` slots)...
    dpop_nonce_required: bool = False
    #: ...with this HMAC key (replicas must share one); unset: random per process.
    dpop_nonce_secret: SecretStr | None = Field(default=None, repr=False)
    dpop_nonce_lifetime_seconds: int = Field(300, ge=10, le=3600)
    #: How old (``iat``) a DPoP proof may be, seconds; its ``jti`` is remembered that long
    #: in ``api.dpop_proof_jtis``, shared by every replica (``bsopt_common.security.dpop_store``).
    dpop_proof_max_age_seconds: int = Field(60, ge=5, le=600)
    #: OAuth client of this service (client credentials grant towards the backends).
    client_id: str | None = "resource-api"

    #: gRPC targets (``host:port``) of the backends (required outside dev/test).
    broker_gateway_target: str | None = None
    ml_scorer_target: str | None = None
    rl_trainer_target: str | None = None
    REQUIRED: ClassVar[tuple[str, ...]] = (
        *ServiceSettings.REQUIRED, "broker_gateway_target", "ml_scorer_target", "rl_trainer_target")
    DEV_DEFAULTS: ClassVar[dict[str, str]] = {
        **ServiceSettings.DEV_DEFAULTS, "broker_gateway_target": "127.0.0.1:50051",
        "ml_scorer_target": "127.0.0.1:50052", "rl_trainer_target": "127.0.0.1:50053"}
    #: Deadline of an ordinary backend call, seconds.
    grpc_timeout_seconds: float = Field(10.0, gt=0)
    #: Deadline of RunPaperTrading (a whole test window of orders), seconds.
    paper_trading_timeout_seconds: float = Field(300.0, gt=0)

    #: Consume trades.scored.v1 and digests.ready.v1 (needs Kafka). Off only for
    #: local poking at the REST API without a broker.
    consume_events: bool = True
    #: Kafka consumer group of this service.
    consumer_group: str = "resource-api"

    #: Coach stream events queued per WebSocket; past it the oldest is dropped and the
    #: client gets ``{"type": "synced", "synced": false, ...}`` (see bsopt_api.hub).
    ws_queue_size: int = Field(100, ge=1)
    #: Coach sockets one user may hold open, across replicas; the next is closed with 1008.
    ws_max_sockets_per_user: int = Field(5, ge=1)
    #: Stored messages read per database round trip while replaying ``?after=``.
    ws_replay_batch_size: int = Field(500, ge=1)
    #: On SIGTERM, how long in-flight requests may take to finish, seconds.
    shutdown_grace_seconds: float = Field(20.0, gt=0)
