"""Typed settings from the environment (pydantic-settings), one class per service.

Each service subclasses :class:`ServiceSettings` with its own ``env_prefix`` (for example
``BSOPT_BROKER_``). Three settings are shared by the whole suite and may also be given
without the prefix, as platform teams expect: ``DATABASE_URL``,
``KAFKA_BOOTSTRAP_SERVERS`` and ``BSOPT_ISSUER``. The prefixed name wins when both are set.

Building a settings object reads the environment only; it never connects.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Resource identifiers (RFC 8707) that tokens are audience-restricted to.
RESOURCE_API_AUDIENCE = "urn:bsopt:resource-api"
BROKER_GATEWAY_AUDIENCE = "urn:bsopt:broker-gateway"
ML_SCORER_AUDIENCE = "urn:bsopt:ml-scorer"
RL_TRAINER_AUDIENCE = "urn:bsopt:rl-trainer"
#: The event bus: producers attach a token with this audience to every event.
EVENTS_AUDIENCE = "urn:bsopt:events"

DEV_ISSUER = "http://127.0.0.1:9000"


class ServiceSettings(BaseSettings):
    """Settings every service shares. Subclasses set ``model_config`` with a prefix."""

    model_config = SettingsConfigDict(extra="ignore", env_prefix="BSOPT_")

    #: Names of fields that fall back to an unprefixed environment variable.
    _UNPREFIXED: ClassVar[dict[str, str]] = {
        "database_url": "DATABASE_URL",
        "kafka_bootstrap_servers": "KAFKA_BOOTSTRAP_SERVERS",
        "issuer": "BSOPT_ISSUER",
    }

    service_name: str = "bsopt"
    environment: str = Field("dev", description="dev | test | prod; placeholder secrets are rejected outside dev and test")
    #: SQLAlchemy URL of the suite's Postgres, e.g. postgresql+psycopg://u:p@host/db.
    database_url: str | None = None
    #: Comma-separated host:port list.
    kafka_bootstrap_servers: str | None = None
    #: The authorization server's issuer identifier; its JWKS is found from metadata.
    issuer: str | None = None
    #: Override for the JWKS URL (defaults to ``<issuer>/.well-known/jwks.json``).
    jwks_url: str | None = None
    #: Override for the token endpoint (defaults to ``<issuer>/oauth2/token``).
    token_endpoint: str | None = None
    #: This service's OAuth client (client credentials grant).
    client_id: str | None = None
    client_secret: SecretStr | None = None
    #: Leeway for exp/nbf checks, seconds.
    token_leeway_seconds: int = 30
    #: Shortest interval between two JWKS refetches triggered by an unknown kid, seconds.
    jwks_min_refetch_interval_seconds: float = 10.0

    @model_validator(mode="before")
    @classmethod
    def _unprefixed_fallbacks(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for field, env_name in cls._UNPREFIXED.items():
                if data.get(field) is None and os.environ.get(env_name):
                    data[field] = os.environ[env_name]
        return data

    @model_validator(mode="after")
    def _reject_placeholder_secrets(self) -> ServiceSettings:
        if self.environment not in ("dev", "test") and self.client_secret is not None:
            if self.client_secret.get_secret_value().startswith("dev-"):
                raise ValueError(
                    f"{self.service_name}: client_secret is a dev placeholder; set a real secret "
                    f"for environment={self.environment!r}"
                )
        return self

    @model_validator(mode="after")
    def _default_issuer(self) -> ServiceSettings:
        if self.issuer is None:
            self.issuer = DEV_ISSUER
        return self

    @property
    def resolved_jwks_url(self) -> str:
        return self.jwks_url or self.issuer.rstrip("/") + "/.well-known/jwks.json"

    @property
    def token_url(self) -> str:
        return self.token_endpoint or self.issuer.rstrip("/") + "/oauth2/token"

    def require_database_url(self) -> str:
        if not self.database_url:
            raise RuntimeError(
                f"{self.service_name}: no database configured; set DATABASE_URL "
                f"(or {self.model_config.get('env_prefix', '')}DATABASE_URL)"
            )
        return self.database_url

    def require_kafka(self) -> str:
        if not self.kafka_bootstrap_servers:
            raise RuntimeError(
                f"{self.service_name}: no Kafka configured; set KAFKA_BOOTSTRAP_SERVERS "
                f"(or {self.model_config.get('env_prefix', '')}KAFKA_BOOTSTRAP_SERVERS)"
            )
        return self.kafka_bootstrap_servers
