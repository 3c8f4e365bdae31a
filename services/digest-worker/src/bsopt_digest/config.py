from __future__ import annotations

from pydantic import field_validator
from pydantic_settings import SettingsConfigDict

from bsopt_common.settings import ServiceSettings


class DigestSettings(ServiceSettings):
    """Environment: ``BSOPT_DIGEST_*`` (plus ``DATABASE_URL``, ``KAFKA_BOOTSTRAP_SERVERS``)."""

    model_config = SettingsConfigDict(env_prefix="BSOPT_DIGEST_", extra="ignore")

    service_name: str = "digest-worker"
    host: str = "127.0.0.1"
    #: gRPC health (grpc.health.v1) for probes; the worker has no other API.
    health_port: int = 50054
    client_id: str | None = "digest-worker"
    #: The weekly tick: a 5-field cron expression, evaluated in UTC. Each tick builds the
    #: weeks that have ended (Monday 00:00 in each user's time zone) since their last digest.
    tick_cron: str = "0 * * * *"
    #: Weeks already complete when their trades arrive (an import of past fills) are built
    #: this many seconds after their last trade was recorded, without waiting for the tick.
    #: None turns this catch-up off.
    catchup_settle_seconds: float | None = 5.0

    @field_validator("tick_cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        from bsopt_digest.scheduler import validate_cron

        return validate_cron(value)
