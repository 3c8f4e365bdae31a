from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from bsopt_common.settings import DEV_ENVIRONMENTS, ServiceSettings

if TYPE_CHECKING:
    from bsopt_broker.connections.crypto import CredentialsCipher

#: Alpaca's OAuth 2.0 endpoints (https://docs.alpaca.markets/docs/using-oauth2-and-trading-api).
ALPACA_AUTHORIZE_URL = "https://app.alpaca.markets/oauth/authorize"
ALPACA_TOKEN_URL = "https://api.alpaca.markets/oauth/token"


class BrokerSettings(ServiceSettings):
    """Environment: ``BSOPT_BROKER_*`` (plus ``DATABASE_URL``, ``KAFKA_BOOTSTRAP_SERVERS``)."""

    model_config = SettingsConfigDict(env_prefix="BSOPT_BROKER_", extra="ignore")

    service_name: str = "broker-gateway"
    host: str = "127.0.0.1"
    port: int = 50051
    client_id: str | None = "broker-gateway"
    #: Paper broker commission, basis points of traded notional.
    paper_commission_bps: Decimal = Decimal(10)
    #: Alpaca accounts file (YAML, see ``bsopt_broker.adapters.alpaca.accounts``); optional.
    #: Read at start-up (a malformed file stops it, naming entry and field) and again on
    #: SIGHUP (an invalid file is logged and the accounts in use stay).
    accounts_file: Path | None = None
    #: Every Alpaca account's requests (accounts file and connections): each HTTP request's
    #: timeout; retries of 429/5xx/connection errors (tries in all, and no retry starting
    #: later than this many seconds after the first try; backoff with jitter, or Alpaca's
    #: ``Retry-After``); the per-account circuit breaker (consecutive failed calls that open
    #: it, seconds before it lets one trial call through). See ``adapters/alpaca/resilience.py``.
    alpaca_request_timeout_seconds: float = Field(10.0, gt=0, le=120)
    alpaca_retry_attempts: int = Field(4, ge=1, le=10)
    alpaca_retry_total_seconds: float = Field(15.0, gt=0, le=300)
    alpaca_breaker_failures: int = Field(5, ge=1, le=100)
    alpaca_breaker_cooldown_seconds: float = Field(30.0, gt=0, le=3600)

    # -- broker connections (users connecting their own Alpaca account) -------------------
    #: AES-256-GCM key of the stored broker credentials: base64 of 32 random bytes, in a
    #: secret file (``BSOPT_BROKER_CREDENTIALS_KEY_FILE``) or the variable itself
    #: (``BSOPT_BROKER_CREDENTIALS_KEY``). One of them is required outside dev/test, where
    #: the dev-only key (derived from a public constant) is refused.
    credentials_key_file: Path | None = None
    credentials_key: SecretStr | None = Field(default=None, repr=False)
    #: Keys that sealed stored credentials before the current one (rotation): base64 of 32
    #: bytes each, one per line in the file, or separated by commas or spaces in the
    #: variable. Opened with, never sealed with (``reseal-credentials`` moves rows off them).
    credentials_previous_keys_file: Path | None = None
    credentials_previous_keys: SecretStr | None = Field(default=None, repr=False)
    #: bsopt's OAuth client at Alpaca (registered in Alpaca's dashboard, OAuth Apps).
    alpaca_oauth_client_id: str | None = None
    alpaca_oauth_client_secret: SecretStr | None = Field(default=None, repr=False)
    #: Alpaca's authorization and token endpoints (overridable: a local stand-in).
    alpaca_oauth_authorize_url: str = ALPACA_AUTHORIZE_URL
    alpaca_oauth_token_url: str = ALPACA_TOKEN_URL
    #: Where Alpaca sends the user's browser back: resource-api's
    #: ``GET /v1/brokers/alpaca/callback`` as registered with the OAuth app.
    alpaca_oauth_redirect_uri: str | None = None
    #: Scopes asked of Alpaca (space-separated).
    alpaca_oauth_scope: str = "account:write trading data"
    #: How long a started connection (its ``state``) may be completed, seconds.
    alpaca_oauth_state_ttl_seconds: int = Field(600, ge=30, le=3600)
    #: Trading API base URL of connected accounts (a proxy or a local stand-in); unset:
    #: Alpaca's paper (``paper-api.alpaca.markets``) or live (``api.alpaca.markets``) endpoint.
    alpaca_trading_base_url: str | None = None

    def alpaca_options(self) -> dict[str, Any]:
        """Keyword arguments of ``AlpacaBroker`` from the ``alpaca_*`` request settings."""
        return {"request_timeout_s": self.alpaca_request_timeout_seconds,
                "retry_attempts": self.alpaca_retry_attempts, "retry_total_s": self.alpaca_retry_total_seconds,
                "breaker_failures": self.alpaca_breaker_failures,
                "breaker_cooldown_s": self.alpaca_breaker_cooldown_seconds}

    @field_validator("alpaca_oauth_authorize_url", "alpaca_oauth_token_url", "alpaca_trading_base_url",
                     "alpaca_oauth_redirect_uri")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return v

    @model_validator(mode="after")
    def _credentials_key_outside_dev(self) -> BrokerSettings:
        if self.credentials_key_file is not None and self.credentials_key is not None:
            raise ValueError(f"{self.service_name}: set only one of BSOPT_BROKER_CREDENTIALS_KEY_FILE and "
                             "BSOPT_BROKER_CREDENTIALS_KEY")
        if self.credentials_previous_keys_file is not None and self.credentials_previous_keys is not None:
            raise ValueError(f"{self.service_name}: set only one of BSOPT_BROKER_CREDENTIALS_PREVIOUS_KEYS_FILE "
                             "and BSOPT_BROKER_CREDENTIALS_PREVIOUS_KEYS")
        if self.environment not in DEV_ENVIRONMENTS:
            if self.credentials_key is None and self.credentials_key_file is None:
                raise ValueError(
                    f"{self.service_name}: environment={self.environment!r} needs a key for the stored broker "
                    "credentials: set BSOPT_BROKER_CREDENTIALS_KEY_FILE (a secret file) or "
                    "BSOPT_BROKER_CREDENTIALS_KEY, holding base64 of 32 random bytes (`openssl rand -base64 32`)")
            if self.credentials_key is not None:
                from bsopt_broker.connections.crypto import CredentialsCipher

                CredentialsCipher.from_base64(self.credentials_key.get_secret_value(), environment=self.environment)
        return self

    def credentials_cipher(self) -> CredentialsCipher:
        """The cipher of the stored broker credentials (the current key, and the previous
        keys it still opens rows with). Raises ValueError (unreadable file, not base64 of
        32 bytes, the dev-only key outside dev/test); messages name no key material."""
        from bsopt_broker.connections.crypto import CredentialsCipher

        previous_text = ""
        if self.credentials_previous_keys_file is not None:
            try:
                previous_text = self.credentials_previous_keys_file.read_text(encoding="utf-8")
            except OSError as exc:
                raise ValueError("cannot read BSOPT_BROKER_CREDENTIALS_PREVIOUS_KEYS_FILE="
                                 f"{self.credentials_previous_keys_file}: {exc.strerror}") from None
        elif self.credentials_previous_keys is not None:
            previous_text = self.credentials_previous_keys.get_secret_value()
        previous = [CredentialsCipher.from_base64(k, environment=self.environment)
                    for k in previous_text.replace(",", " ").split()]
        return self._current_cipher().with_previous(previous)

    def _current_cipher(self) -> CredentialsCipher:
        from bsopt_broker.connections.crypto import CredentialsCipher

        if self.credentials_key_file is not None:
            try:
                text = self.credentials_key_file.read_text(encoding="utf-8")
            except OSError as exc:
                raise ValueError(f"cannot read BSOPT_BROKER_CREDENTIALS_KEY_FILE={self.credentials_key_file}: "
                                 f"{exc.strerror}") from None
            return CredentialsCipher.from_base64(text, environment=self.environment)
        if self.credentials_key is not None:
            return CredentialsCipher.from_base64(self.credentials_key.get_secret_value(),
                                                 environment=self.environment)
        if self.environment in DEV_ENVIRONMENTS:
            return CredentialsCipher.dev_only()
        raise ValueError("no broker credentials key configured")

