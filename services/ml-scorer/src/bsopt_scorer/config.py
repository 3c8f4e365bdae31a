from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from bsopt_common.settings import ServiceSettings


class ScorerSettings(ServiceSettings):
    """Environment: ``BSOPT_SCORER_*`` (plus ``DATABASE_URL``, ``KAFKA_BOOTSTRAP_SERVERS``).

    Market data: the bars bundled in gym-anytrading (GOOGL to 2018-08-29), and, when
    ``BSOPT_SCORER_ALPACA_DATA_KEY_ID`` and a secret (``..._SECRET_KEY`` or
    ``..._SECRET_KEY_FILE``) are set, Alpaca's daily bars for every other symbol and date
    (``ALPACA_DATA_URL``: another base URL, e.g. a proxy or the local stand-in; each
    symbol's bars are cached ``MARKET_DATA_CACHE_TTL_S`` seconds, requests time out after
    ``MARKET_DATA_TIMEOUT_S``). Unset: bundled bars only.
    """

    model_config = SettingsConfigDict(env_prefix="BSOPT_SCORER_", extra="ignore")

    service_name: str = "ml-scorer"
    host: str = "127.0.0.1"
    port: int = 50052
    client_id: str | None = "ml-scorer"

    alpaca_data_key_id: str | None = None
    alpaca_data_secret_key: SecretStr | None = Field(default=None, repr=False)
    alpaca_data_secret_key_file: str | None = None
    alpaca_data_url: str | None = None
    alpaca_data_feed: str | None = None
    market_data_cache_ttl_s: float = Field(default=900.0, gt=0)
    market_data_timeout_s: float = Field(default=10.0, gt=0)

    def alpaca_data_secret(self) -> str | None:
        """The Alpaca market-data secret (file first), or None. Raises RuntimeError for an
        unreadable file (the message names the setting, never the secret)."""
        if self.alpaca_data_secret_key_file:
            try:
                with open(self.alpaca_data_secret_key_file, encoding="utf-8") as f:
                    return f.read().strip()
            except OSError as exc:
                raise RuntimeError(f"{self.service_name}: cannot read "
                                   f"{self.env_name('alpaca_data_secret_key_file')}: {exc.strerror}") from None
        return self.alpaca_data_secret_key.get_secret_value() if self.alpaca_data_secret_key is not None else None
