from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from bsopt_common.settings import ServiceSettings


class ScorerSettings(ServiceSettings):
    """Environment: ``BSOPT_SCORER_*`` (plus ``DATABASE_URL``, ``KAFKA_BOOTSTRAP_SERVERS``)."""

    model_config = SettingsConfigDict(env_prefix="BSOPT_SCORER_", extra="ignore")

    service_name: str = "ml-scorer"
    host: str = "127.0.0.1"
    port: int = 50052
    client_id: str | None = "ml-scorer"
