from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from pydantic_settings import SettingsConfigDict

from bsopt_common.settings import ServiceSettings


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
