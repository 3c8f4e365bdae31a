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

    Reflections: deterministic templates (offline), unless ``BSOPT_SCORER_LLM_BASE_URL``
    and ``..._LLM_MODEL`` name an OpenAI-compatible chat-completions API (OpenAI, vLLM,
    Ollama: ``http://host:11434/v1``); ``..._LLM_API_KEY`` or ``..._LLM_API_KEY_FILE``
    when it needs one, ``..._LLM_TIMEOUT_S`` per request (no retries; a timeout, an HTTP
    error or a refused answer falls back to the template), ``..._LLM_CACHE_SIZE`` accepted
    answers kept in process.
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

    llm_base_url: str | None = None
    llm_model: str | None = None
    llm_api_key: SecretStr | None = Field(default=None, repr=False)
    llm_api_key_file: str | None = None
    llm_timeout_s: float = Field(default=10.0, gt=0)
    llm_cache_size: int = Field(default=1024, ge=0)

    def llm_enabled(self) -> bool:
        return bool(self.llm_base_url and self.llm_model)

    def llm_secret(self) -> str | None:
        """The LLM API key (file first), or None; an unreadable file is a RuntimeError
        naming the setting."""
        return self._secret("llm_api_key", self.llm_api_key, self.llm_api_key_file)

    def alpaca_data_secret(self) -> str | None:
        """The Alpaca market-data secret (file first), or None. Raises RuntimeError for an
        unreadable file (the message names the setting, never the secret)."""
        return self._secret("alpaca_data_secret_key", self.alpaca_data_secret_key,
                            self.alpaca_data_secret_key_file)

    def _secret(self, name: str, value: SecretStr | None, path: str | None) -> str | None:
        if path:
            try:
                with open(path, encoding="utf-8") as f:
                    return f.read().strip()
            except OSError as exc:
                raise RuntimeError(f"{self.service_name}: cannot read "
                                   f"{self.env_name(name + '_file')}: {exc.strerror}") from None
        return value.get_secret_value() if value is not None else None
