"""Settings for the authorization server (environment prefix ``BSOPT_AUTH_``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal
from urllib.parse import quote, urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from bsopt_common.settings import DEV_ENVIRONMENTS, RESOURCE_API_AUDIENCE, ServiceSettings

if TYPE_CHECKING:
    from bsopt_auth.rfc7517.encryption import KeyEncryptionKey

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
    #: Longest lifetime of a token issued by token exchange (RFC 8693); never past the
    #: subject token's own ``exp``.
    token_exchange_ttl_seconds: int = Field(300, gt=0)
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
    #: Cache lifetime the metadata documents advertise to clients, seconds.
    discovery_max_age_seconds: int = Field(300, ge=0)
    #: Cache lifetime the JWKS advertises (``Cache-Control: max-age``), seconds. Resource
    #: servers refetch within it, so a revoked key stops verifying everywhere within it.
    jwks_max_age_seconds: int = Field(300, ge=0)
    #: Cache lifetime of a client's registered public keys at
    #: ``/oauth2/clients/{client_id}/jwks.json`` (``Cache-Control: max-age``), seconds:
    #: event consumers refetch within it, so a replaced client key stops verifying
    #: everywhere within it.
    client_jwks_max_age_seconds: int = Field(300, ge=0)
    #: How far in the future a ``private_key_jwt`` client assertion's ``exp`` may be
    #: (RFC 7523 §3), seconds, plus ``token_leeway_seconds``: assertions are short-lived,
    #: and their ``jti`` is remembered until then.
    client_assertion_max_lifetime_seconds: int = Field(300, gt=0, le=3600)
    #: ``seed-dev`` / ``serve --seed-dev``: a folder of ``<client_id>.jwks.json`` files
    #: (public keys); a service client with a file there is registered for
    #: ``private_key_jwt`` with those keys instead of the dev secret.
    seed_client_keys_dir: Path | None = None
    #: Key-encryption key (KEK) for the signing keys at rest: a file holding base64 of
    #: 32 random bytes (a mounted secret), or the base64 value itself. One of the two is
    #: required outside dev/test; dev/test fall back to a deterministic dev-only KEK.
    key_encryption_key_file: Path | None = None
    key_encryption_key: SecretStr | None = Field(default=None, repr=False)
    #: Rotate the active signing key when it is older than this many days; 0 = never
    #: (rotate with ``keys rotate``). Checked at start and every
    #: ``key_maintenance_interval_seconds``.
    signing_key_rotation_days: float = Field(0, ge=0)
    #: How often the server retires expired previous keys and checks the rotation age.
    key_maintenance_interval_seconds: float = Field(300, gt=0)
    #: Browser origins (``scheme://host[:port]``) allowed to call the token endpoint, and
    #: only it, cross-origin (CORS: preflight + POST, no credentials): a page that runs a
    #: public client's code flow, e.g. resource-api's Swagger UI. Comma- or space-
    #: separated in the environment; no ``*``. Empty (no CORS) by default; the local
    #: stack sets resource-api's origin (``http://127.0.0.1:8000``).
    token_endpoint_cors_origins: Annotated[tuple[str, ...], NoDecode] = ()

    @model_validator(mode="after")
    def _key_encryption_key_outside_dev(self) -> AuthSettings:
        if self.key_encryption_key_file is not None and self.key_encryption_key is not None:
            raise ValueError(
                f"{self.service_name}: set only one of BSOPT_AUTH_KEY_ENCRYPTION_KEY_FILE and "
                "BSOPT_AUTH_KEY_ENCRYPTION_KEY"
            )
        if self.key_encryption_key is not None:
            from bsopt_auth.rfc7517.encryption import LocalKeyEncryptionKey, dev_only_key_encryption_key

            kek = LocalKeyEncryptionKey.from_base64(self.key_encryption_key.get_secret_value())
            if self.environment not in DEV_ENVIRONMENTS and kek.secret == dev_only_key_encryption_key().secret:
                raise ValueError(f"{self.service_name}: BSOPT_AUTH_KEY_ENCRYPTION_KEY is the dev-only key")
        elif self.key_encryption_key_file is None and self.environment not in DEV_ENVIRONMENTS:
            raise ValueError(
                f"{self.service_name}: environment={self.environment!r} needs a key-encryption key for the "
                "signing keys: set BSOPT_AUTH_KEY_ENCRYPTION_KEY_FILE (a secret file) or "
                "BSOPT_AUTH_KEY_ENCRYPTION_KEY, holding base64 of 32 random bytes "
                "(e.g. `openssl rand -base64 32`)"
            )
        return self

    def key_encryption_key_provider(self) -> KeyEncryptionKey:
        """The KEK: from the file or the variable; the dev-only KEK in dev/test when
        neither is set. Reads the file (start-up only). Raises ValueError."""
        from bsopt_auth.rfc7517.encryption import LocalKeyEncryptionKey, dev_only_key_encryption_key

        if self.key_encryption_key_file is not None:
            try:
                text = self.key_encryption_key_file.read_text()
            except OSError as exc:
                raise ValueError(
                    f"cannot read BSOPT_AUTH_KEY_ENCRYPTION_KEY_FILE={self.key_encryption_key_file}: "
                    f"{exc.strerror}"
                ) from exc
            kek = LocalKeyEncryptionKey.from_base64(text)
        elif self.key_encryption_key is not None:
            kek = LocalKeyEncryptionKey.from_base64(self.key_encryption_key.get_secret_value())
        elif self.environment in DEV_ENVIRONMENTS:
            return dev_only_key_encryption_key()
        else:  # the validator above makes this unreachable
            raise ValueError("no key-encryption key configured")
        if self.environment not in DEV_ENVIRONMENTS and kek.secret == dev_only_key_encryption_key().secret:
            raise ValueError("the configured key-encryption key is the dev-only key")
        return kek

    @property
    def verification_window_seconds(self) -> int:
        """How long a key that stopped signing must stay published: the longest token
        lifetime plus the verifiers' leeway."""
        return max(self.access_token_ttl_seconds, self.id_token_ttl_seconds) + self.token_leeway_seconds

    @field_validator("token_endpoint_cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(value.replace(",", " ").split())
        return value

    @field_validator("token_endpoint_cors_origins")
    @classmethod
    def _origins_are_origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            try:
                parts = urlsplit(origin)
                parts.port  # noqa: B018 - raises ValueError for a malformed port
            except ValueError:
                raise ValueError(f"token_endpoint_cors_origins: {origin!r} is not an origin") from None
            if (
                parts.scheme not in ("http", "https") or not parts.hostname or parts.username is not None
                or parts.password is not None or parts.path or parts.query or parts.fragment
                or "#" in origin or "?" in origin
            ):
                raise ValueError(
                    f"token_endpoint_cors_origins: {origin!r} is not an origin (scheme://host[:port], "
                    "no path, no wildcard)"
                )
        return tuple(dict.fromkeys(value))

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
    # ``token_endpoint`` / ``jwks_url`` / ``client_jwks_url``, which are a resource server's overrides.)

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

    def client_jwks_endpoint_url(self, client_id: str) -> str:
        """Where a client's registered public keys are published (consumers of its events
        build the same URL: ``<issuer>/oauth2/clients/<client_id>/jwks.json``)."""
        return f"{self.base_url}/oauth2/clients/{quote(client_id, safe='')}/jwks.json"
