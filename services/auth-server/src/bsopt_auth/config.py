"""Settings for the authorization server (environment prefix ``BSOPT_AUTH_``)."""

from __future__ import annotations

from typing import ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from bsopt_common.settings import RESOURCE_API_AUDIENCE, ServiceSettings

#: Postgres schema holding every table of this service.
SCHEMA = "auth"


class AuthSettings(ServiceSettings):
    """Environment: ``BSOPT_AUTH_<FIELD>`` (``DATABASE_URL`` also works unprefixed)."""

    model_config = SettingsConfigDict(extra="ignore", env_prefix="BSOPT_AUTH_")

    service_name: str = "auth-server"
    host: str = "127.0.0.1"
    port: int = Field(9000, ge=1, le=65535)
    #: Issuer identifier (RFC 8414 §2): https URL without query or fragment; the
    #: endpoints below it are advertised in the metadata documents.
    #: Required outside dev/test; ``http://127.0.0.1:9000`` in dev/test.
    issuer: str | None = None
    #: auth-server dials only its database (no broker, no peers).
    REQUIRED: ClassVar[tuple[str, ...]] = ("database_url", "issuer")
    access_token_ttl_seconds: int = Field(900, gt=0)
    id_token_ttl_seconds: int = Field(900, gt=0)
    authorization_code_ttl_seconds: int = Field(60, gt=0)
    #: Algorithm of newly generated signing keys: RS256 (RSA 2048) or ES256 (P-256).
    signing_alg: Literal["RS256", "ES256"] = "RS256"
    #: Resource (RFC 8707) an authorization code flow token is for when none is requested.
    default_code_flow_resource: str = RESOURCE_API_AUDIENCE
    #: Create the dev user and clients when ``serve`` starts (refused outside dev/test).
    seed_dev_on_start: bool = False
    #: On SIGTERM, how long in-flight requests may take to finish, seconds.
    shutdown_grace_seconds: float = Field(10.0, gt=0)
    #: Cache lifetime the JWKS and metadata documents advertise to clients, seconds.
    discovery_max_age_seconds: int = Field(300, ge=0)

    @field_validator("issuer")
    @classmethod
    def _issuer_is_a_plain_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise ValueError("issuer must be an http(s) URL without query or fragment (RFC 8414 §2)")
        return value

    # Endpoint URLs derive from the issuer. (Names differ from ServiceSettings'
    # ``token_endpoint`` / ``jwks_url``, which are a resource server's overrides.)

    @property
    def base_url(self) -> str:
        assert self.issuer is not None  # set by the REQUIRED check (a dev default in dev/test)
        return self.issuer.rstrip("/")

    @property
    def authorization_endpoint_url(self) -> str:
        return self.base_url + "/authorize"

    @property
    def token_endpoint_url(self) -> str:
        return self.base_url + "/oauth2/token"

    @property
    def jwks_uri(self) -> str:
        return self.base_url + "/.well-known/jwks.json"

    @property
    def userinfo_endpoint_url(self) -> str:
        return self.base_url + "/userinfo"
