"""``python -m bsopt_broker``: run broker-gateway until SIGINT/SIGTERM; SIGHUP re-reads
the accounts file. A malformed accounts file stops start-up with exit status 2 and one
line naming the entry and the field (never a secret).

``python -m bsopt_broker reseal-credentials``: re-seal every stored broker connection's
credentials under the current key (``BSOPT_BROKER_CREDENTIALS_KEY[_FILE]``), opening them
with the previous keys (``BSOPT_BROKER_CREDENTIALS_PREVIOUS_KEYS[_FILE]``); prints the
counts; exit status 1 when a row could not be opened (its key is missing)."""

from __future__ import annotations

import sys

from bsopt_broker.adapters.alpaca.accounts import AccountsFileError
from bsopt_broker.bootstrap import serve
from bsopt_broker.config import BrokerSettings
from bsopt_common.runtime import load_settings, run_service


def reseal_credentials() -> int:
    from bsopt_broker.connections.store import ConnectionStore
    from bsopt_common.db import create_db_engine, make_session_factory
    from bsopt_common.telemetry import setup_logging

    settings = load_settings(BrokerSettings)
    setup_logging(settings.service_name, environment=settings.environment)
    try:
        cipher = settings.credentials_cipher()
    except ValueError as exc:
        print(f"broker-gateway: {exc}", file=sys.stderr)
        return 2
    engine = create_db_engine(settings.require_database_url(), application_name="bsopt-broker-reseal")
    try:
        resealed, failed = ConnectionStore(make_session_factory(engine), cipher).reseal()
    finally:
        engine.dispose()
    print(f"resealed {resealed} connection(s) under key {cipher.key_id}; {failed} could not be opened")
    return 1 if failed else 0


def main() -> None:
    if sys.argv[1:2] == ["reseal-credentials"]:
        raise SystemExit(reseal_credentials())
    try:
        run_service(BrokerSettings, serve)
    except AccountsFileError as exc:
        print(f"broker-gateway: not started: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
