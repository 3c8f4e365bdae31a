"""Typed settings from the environment (pydantic-settings), one class per service.

Each service subclasses :class:`ServiceSettings` with its own ``env_prefix`` (for example
``BSOPT_BROKER_``). Three settings are shared by the whole suite and may also be given
without the prefix, as platform teams expect: ``DATABASE_URL``,
``KAFKA_BOOTSTRAP_SERVERS`` and ``BSOPT_ISSUER``. The prefixed name wins when both are set.

Outside the ``dev`` and ``test`` environments every address a service dials must be
given: a missing database URL, broker list, issuer or peer gRPC target stops start-up
with a message naming the environment variable, instead of quietly dialling 127.0.0.1.
In ``dev``/``test`` the peers default to the local stack's ports (:attr:`DEV_DEFAULTS`).

Building a settings object reads the environment only; it never connects.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Resource identifiers (RFC 8707) that tokens are audience-restricted to.
RESOURCE_API_AUDIENCE = "urn:bsopt:resource-api"
BROKER_GATEWAY_AUDIENCE = "urn:bsopt:broker-gateway"
ML_SCORER_AUDIENCE = "urn:bsopt:ml-scorer"
RL_TRAINER_AUDIENCE = "urn:bsopt:rl-trainer"
#: The Kafka brokers of a real cluster: services present a token for it with
#: SASL/OAUTHBEARER (:mod:`bsopt_common.kafka_auth`; scope ``kafka:cluster``). Events
#: themselves carry no token: each is signed by its producer's own key.
KAFKA_AUDIENCE = "urn:bsopt:kafka"

DEV_ISSUER = "http://127.0.0.1:9000"
DEV_ENVIRONMENTS = frozenset({"dev", "test"})


def _postgres_dsn(value: str) -> str:
    from bsopt_common.db import normalise_url

    normalise_url(value)  # ValueError (a validation error) for anything but a Postgres URL
    return value


#: A Postgres URL (``postgres://``, ``postgresql://``, ``postgresql+psycopg://``; a Unix
#: socket directory as ``?host=/path``), checked when settings are built.
DatabaseDsn = Annotated[str, AfterValidator(_postgres_dsn)]


class ServiceSettings(BaseSettings):
    """Settings every service shares. Subclasses set ``model_config`` with a prefix."""

    model_config = SettingsConfigDict(extra="ignore", env_prefix="BSOPT_")

    #: Names of fields that fall back to an unprefixed environment variable.
    _UNPREFIXED: ClassVar[dict[str, str]] = {
        "database_url": "DATABASE_URL",
        "kafka_bootstrap_servers": "KAFKA_BOOTSTRAP_SERVERS",
        "issuer": "BSOPT_ISSUER",
        "kafka_session_timeout_ms": "KAFKA_SESSION_TIMEOUT_MS",
        "kafka_security_protocol": "KAFKA_SECURITY_PROTOCOL",
        "kafka_ssl_cafile": "KAFKA_SSL_CAFILE",
        "kafka_oauth_audience": "KAFKA_OAUTH_AUDIENCE",
        "kafka_heartbeat_interval_ms": "KAFKA_HEARTBEAT_INTERVAL_MS",
        "kafka_fetch_max_wait_ms": "KAFKA_FETCH_MAX_WAIT_MS",
    }

    service_name: str = "bsopt"
    environment: str = Field(
        default="dev", description="dev | test | prod; placeholder secrets are rejected outside dev and test")
    #: SQLAlchemy URL of the suite's Postgres, e.g. postgresql+psycopg://u:p@host/db
    #: (never printed: it may hold a password).
    database_url: DatabaseDsn | None = Field(default=None, repr=False)
    #: Comma-separated host:port list.
    kafka_bootstrap_servers: str | None = None
    #: How clients reach a real Kafka: PLAINTEXT (embedded / trusted loopback), SSL, or
    #: SASL_SSL / SASL_PLAINTEXT with SASL/OAUTHBEARER client-credentials tokens
    #: (:mod:`bsopt_common.kafka_auth`).
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    #: CA bundle for the brokers' TLS certificates (system trust store when unset).
    kafka_ssl_cafile: str | None = None
    #: Audience of the tokens presented to Kafka (RFC 8707 resource identifier).
    kafka_oauth_audience: str = KAFKA_AUDIENCE
    #: Consumer-group session timeout and heartbeat, milliseconds (aiokafka's defaults;
    #: a real Kafka refuses sessions below its group.min.session.timeout.ms, 6 s by default).
    #: The embedded Tansu broker answers a group join after about half the session, so the
    #: local stack and the tests use 2000 / 200 there.
    kafka_session_timeout_ms: int = Field(default=10_000, ge=1_000)
    kafka_heartbeat_interval_ms: int = Field(default=3_000, ge=100)
    #: How long a consumer's fetch may wait for records, milliseconds (aiokafka's default
    #: 500). A real Kafka answers as soon as records arrive; the embedded Tansu broker
    #: answers at the end of the wait, which added ~250 ms to every event's delivery
    #: (bench/coach_latency.py), so the local stack and the tests use 50.
    kafka_fetch_max_wait_ms: int = Field(default=500, ge=1, le=60_000)
    #: The authorization server's issuer identifier; its JWKS is found from metadata.
    issuer: str | None = None
    #: Override for the JWKS URL (defaults to ``<issuer>/.well-known/jwks.json``).
    jwks_url: str | None = None
    #: Override for the token endpoint (defaults to ``<issuer>/oauth2/token``).
    token_endpoint: str | None = None
    #: This service's OAuth client (client credentials and token exchange grants).
    client_id: str | None = None
    #: ``client_secret_basic`` credential; unset when the service authenticates with its
    #: key pair (``private_key_jwt``, RFC 7523), which takes precedence.
    client_secret: SecretStr | None = None
    #: This service's private key (a private JWK as JSON, or PEM): it signs every event
    #: the service publishes and authenticates it at the token endpoint (private_key_jwt).
    #: Its public part is the client's JWKS registered at the auth-server
    #: (``python -m bsopt_auth clients set-jwks``). Never printed.
    signing_key: SecretStr | None = Field(default=None, repr=False)
    #: The same, read from a secret file (a mounted Kubernetes Secret); wins over
    #: ``signing_key``.
    signing_key_file: str | None = None
    #: Where a producer's public keys are fetched to verify its events: a URL with a
    #: ``{client_id}`` placeholder (default ``<issuer>/oauth2/clients/{client_id}/jwks.json``).
    client_jwks_url: str | None = None
    #: Leeway for exp/nbf checks, seconds.
    token_leeway_seconds: int = 30
    #: Shortest interval between two JWKS refetches triggered by an unknown kid, seconds
    #: (JWKSCache caps it at 1 s: a longer gap would let one forged kid delay a rotated
    #: key's tokens; concurrent requests for an unknown kid share one fetch).
    jwks_min_refetch_interval_seconds: float = 1.0

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

    #: Fields every deployment must set, and the dev/test default of some of them.
    #: Subclasses extend both (``REQUIRED = ServiceSettings.REQUIRED + (...)``).
    REQUIRED: ClassVar[tuple[str, ...]] = ("database_url", "kafka_bootstrap_servers", "issuer")
    DEV_DEFAULTS: ClassVar[dict[str, str]] = {"issuer": DEV_ISSUER}

    @model_validator(mode="after")
    def _required_outside_dev(self) -> ServiceSettings:
        dev = self.environment in DEV_ENVIRONMENTS
        missing = []
        for name in self.REQUIRED:
            if getattr(self, name) is not None:
                continue
            if dev and name in self.DEV_DEFAULTS:
                setattr(self, name, self.DEV_DEFAULTS[name])
            elif not dev:
                missing.append(self.env_name(name))
        if missing:
            raise ValueError(
                f"{self.service_name}: environment={self.environment!r} needs {', '.join(missing)}; "
                "nothing defaults to 127.0.0.1 outside dev and test"
            )
        return self

    def env_name(self, field: str) -> str:
        """The environment variable that sets ``field`` (its unprefixed twin, if any, too)."""
        prefixed = f"{self.model_config.get('env_prefix', '')}{field}".upper()
        plain = self._UNPREFIXED.get(field)
        return f"{plain} (or {prefixed})" if plain else prefixed

    @property
    def resolved_jwks_url(self) -> str:
        return self.jwks_url or self.require_issuer().rstrip("/") + "/.well-known/jwks.json"

    @property
    def resolved_client_jwks_url(self) -> str:
        return self.client_jwks_url or self.require_issuer().rstrip("/") + "/oauth2/clients/{client_id}/jwks.json"

    def signing_key_text(self) -> str | None:
        """The configured private key (file first), or None. Raises RuntimeError for an
        unreadable file (the message names the setting, never the key)."""
        if self.signing_key_file:
            try:
                with open(self.signing_key_file, encoding="utf-8") as f:
                    return f.read()
            except OSError as exc:
                raise RuntimeError(f"{self.service_name}: cannot read {self.env_name('signing_key_file')}: "
                                   f"{exc.strerror}") from None
        return self.signing_key.get_secret_value() if self.signing_key is not None else None

    @property
    def token_url(self) -> str:
        return self.token_endpoint or self.require_issuer().rstrip("/") + "/oauth2/token"

    def require_issuer(self) -> str:
        """The issuer; always set once validated while ``issuer`` is in :attr:`REQUIRED`
        (a dev default in dev/test), so the error is for a subclass that dropped it."""
        if self.issuer is None:
            raise RuntimeError(f"{self.service_name}: no issuer configured; set {self.env_name('issuer')}")
        return self.issuer

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
