from __future__ import annotations

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
