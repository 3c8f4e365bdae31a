"""Settings for the authorization server (environment prefix ``BSOPT_AUTH_``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal
from urllib.parse import quote, urlsplit

from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator
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
    #: Refresh tokens (RFC 6749 §6, RFC 9700 §4.14): each one expires when unused for
    #: this long (sliding: every rotation starts a new idle period), seconds...
    refresh_token_idle_ttl_seconds: int = Field(14 * 24 * 3600, gt=0)
    #: ...and no refresh token of a login (family) outlives this, counted from the code
    #: exchange, seconds: then the user signs in again.
    refresh_token_absolute_ttl_seconds: int = Field(30 * 24 * 3600, gt=0)
    #: Algorithm of newly generated signing keys: RS256 (RSA 2048) or ES256 (P-256).
    signing_alg: Literal["RS256", "ES256"] = "RS256"
    #: Resource (RFC 8707) an authorization code flow token is for when none is requested.
    default_code_flow_resource: str = RESOURCE_API_AUDIENCE
    #: Create the dev user and clients when ``serve`` starts (refused outside dev/test).
    seed_dev_on_start: bool = False
    #: On SIGTERM, how long in-flight requests may take to finish, seconds.
    shutdown_grace_seconds: float = Field(10.0, gt=0)
    #: uvicorn worker processes of ``serve``: 1 (tests, dev); in production as many as the
    #: cores the server has (each worker caches its own signing key and documents).
    workers: int = Field(1, ge=1, le=64)
    #: How long a worker serves the discovery and JWKS documents from memory, and uses its
    #: cached active signing key before checking the active kid again, seconds. A rotation
    #: or revocation by another process reaches every worker within it.
    metadata_cache_seconds: float = Field(1.0, ge=0, le=60)
    active_key_cache_seconds: float = Field(1.0, ge=0, le=60)
    #: How long a worker keeps a secret client's row in memory (no database round trip per
    #: client_secret_basic/post request); a new secret or a removed client reaches every
    #: worker within it. 0: read the row on every request.
    client_cache_seconds: float = Field(1.0, ge=0, le=60)
    #: While serving: a throttle key found without failures is trusted as clear for this
    #: long in the process, so a healthy client's token request reads no throttle row
    #: (another replica's new block applies here within it). Seconds; 0 reads every time.
    throttle_check_cache_seconds: float = Field(1.0, ge=0, le=60)
    #: While serving: token responses' and refused logins' audit rows are written in
    #: batches every this many seconds (``bsopt_auth.audit``); 0 writes each at once.
    audit_batch_seconds: float = Field(0.1, ge=0, le=10)
    #: A serving process's ``sys.setswitchinterval``: how long a thread may hold the GIL
    #: while another waits. 1 ms instead of Python's 5 ms trims the token endpoint's
    #: latency tail (p99 20-27 ms against 29-47 ms, ~3% fewer grants/s; BENCHMARKS.md).
    #: Set by ``serve`` (the command and each worker), never by the app factory.
    gil_switch_interval_ms: float = Field(1.0, gt=0, le=100)
    #: argon2id parameters of new user password hashes (client secrets are SHA-256 digests
    #: of server-generated secrets). Defaults: RFC 9106 "low memory" (t=3, 64 MiB, p=4).
    password_time_cost: int = Field(3, ge=1, le=20)
    password_memory_cost_kib: int = Field(65536, ge=8192, le=4 * 1024 * 1024)
    password_parallelism: int = Field(4, ge=1, le=64)
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
    #: Expired codes, device authorizations, token families and sessions are deleted this
    #: long after they expired (``bsopt_auth.retention``; at least the access-token TTL).
    retention_grace_seconds: float = Field(86400, ge=0)
    #: Browser origins (``scheme://host[:port]``) allowed to call the token endpoint, and
    #: only it, cross-origin (CORS: preflight + POST, no credentials): a page that runs a
    #: public client's code flow, e.g. resource-api's Swagger UI. Comma- or space-
    #: separated in the environment; no ``*``. Empty (no CORS) by default; the local
    #: stack sets resource-api's origin (``http://127.0.0.1:8000``).
    token_endpoint_cors_origins: Annotated[tuple[str, ...], NoDecode] = ()
    # Brute-force limits (:mod:`bsopt_auth.throttle`), shared by every replica through
    # ``auth.login_throttle``. Backoff: the first ``*_free_failures`` consecutive failures
    # of a key cost nothing; failure ``free + k`` blocks it for
    # ``min(throttle_base_delay_seconds * 2**(k-1), throttle_max_delay_seconds)``.
    #: Free failures per account (login form) before the backoff starts.
    throttle_account_free_failures: int = Field(5, ge=0)
    #: Consecutive failures that lock an account for ``throttle_account_lock_seconds``
    #: (audit line ``auth.account_locked``); 0 = never lock.
    throttle_account_lock_failures: int = Field(10, ge=0)
    throttle_account_lock_seconds: float = Field(900.0, gt=0)
    #: Free failures per client IP (IPv6: per /64) and scope, across usernames / clients.
    throttle_ip_free_failures: int = Field(30, ge=0)
    #: Free client-authentication failures per client_id at the token endpoint.
    throttle_client_free_failures: int = Field(5, ge=0)
    #: Free client-authentication failures per client IP across client_ids (many
    #: services may share one address).
    throttle_client_ip_free_failures: int = Field(100, ge=0)
    throttle_base_delay_seconds: float = Field(1.0, gt=0)
    throttle_max_delay_seconds: float = Field(300.0, gt=0)
    #: Failures are forgotten this long after a key's last one, seconds.
    throttle_window_seconds: float = Field(3600.0, gt=0)
    #: HMAC key of the stored throttle keys (IP addresses, usernames, client_ids are never
    #: stored raw). Unset: derived from the key-encryption key (same on every replica).
    throttle_key_secret: SecretStr | None = Field(default=None, repr=False)
    #: HMAC key of the login form's CSRF tokens (:mod:`bsopt_auth.csrf`); every replica
    #: must share it. Unset: derived from the key-encryption key.
    csrf_secret: SecretStr | None = Field(default=None, repr=False)
    #: DPoP (RFC 9449, :mod:`bsopt_auth.rfc9449`) at the token endpoint: require a server
    #: nonce in proofs (§8: ``use_dpop_nonce`` with a ``DPoP-Nonce`` header). Nonces are
    #: stateless, HMAC-SHA256 of a ``dpop_nonce_lifetime_seconds`` time slot, accepted
    #: for the current and the previous slot...
    dpop_nonce_required: bool = True
    dpop_nonce_lifetime_seconds: int = Field(300, ge=10, le=3600)
    #: ...keyed by this secret (every replica must share it). Unset: derived from the
    #: key-encryption key.
    dpop_nonce_secret: SecretStr | None = Field(default=None, repr=False)
    #: How old (``iat``) a DPoP proof may be, seconds (plus ``token_leeway_seconds`` of
    #: clock skew); its ``jti`` is remembered in ``auth.dpop_proof_jtis`` that long.
    dpop_proof_max_age_seconds: int = Field(60, ge=5, le=600)
    #: How long a rendered login form may be submitted, seconds.
    login_form_ttl_seconds: int = Field(1800, gt=0)
    #: Authorization-server session (:mod:`bsopt_auth.sessions`, the sign-in cookie): it
    #: ends when unused for this long (sliding), seconds...
    session_idle_ttl_seconds: int = Field(8 * 3600, gt=0)
    #: ...and at the latest this long after the password was given, seconds.
    session_absolute_ttl_seconds: int = Field(7 * 24 * 3600, gt=0)
    #: Device Authorization Grant (RFC 8628): lifetime of a device code and its user code
    #: (``expires_in``, §3.2), seconds...
    device_code_ttl_seconds: int = Field(600, gt=0, le=3600)
    #: ...and the minimum polling interval the client is given (``interval``, §3.2);
    #: polling faster is ``slow_down`` and adds 5 seconds (§3.5).
    device_code_interval_seconds: int = Field(5, ge=1, le=60)
    _derived_secrets: dict[str, bytes] = PrivateAttr(default_factory=dict)

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

    def derived_secret(self, purpose: Literal["throttle", "csrf", "dpop"]) -> bytes:
        """The HMAC key for ``purpose``: its own setting when set, else HMAC-SHA256 of the
        key-encryption key over a purpose label (one secret to deploy, separate keys).
        Reads the KEK file once per settings object."""
        own = {"throttle": self.throttle_key_secret, "csrf": self.csrf_secret,
               "dpop": self.dpop_nonce_secret}[purpose]
        if own is not None:
            return own.get_secret_value().encode()
        if purpose not in self._derived_secrets:
            import hashlib
            import hmac

            from bsopt_auth.rfc7517.encryption import LocalKeyEncryptionKey

            kek = self.key_encryption_key_provider()
            if not isinstance(kek, LocalKeyEncryptionKey):
                raise ValueError(f"set a {purpose} secret: the key-encryption key is not local")
            self._derived_secrets[purpose] = hmac.new(
                kek.secret, f"bsopt-auth {purpose} v1".encode(), hashlib.sha256
            ).digest()
        return self._derived_secrets[purpose]

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

    @property
    def revocation_endpoint_url(self) -> str:
        return self.base_url + "/oauth2/revoke"

    @property
    def introspection_endpoint_url(self) -> str:
        return self.base_url + "/oauth2/introspect"

    @property
    def device_authorization_endpoint_url(self) -> str:
        return self.base_url + "/oauth2/device_authorization"

    @property
    def device_verification_url(self) -> str:
        """RFC 8628 §3.2 ``verification_uri``: the page where the user enters the user code."""
        return self.base_url + "/device"

    def client_jwks_endpoint_url(self, client_id: str) -> str:
        """Where a client's registered public keys are published (consumers of its events
        build the same URL: ``<issuer>/oauth2/clients/<client_id>/jwks.json``)."""
        return f"{self.base_url}/oauth2/clients/{quote(client_id, safe='')}/jwks.json"
