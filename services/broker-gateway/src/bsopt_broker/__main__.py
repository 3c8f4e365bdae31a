"""``python -m bsopt_broker``: run broker-gateway until SIGINT/SIGTERM; SIGHUP re-reads
the accounts file. A malformed accounts file stops start-up with exit status 2 and one
line naming the entry and the field (never a secret)."""

from __future__ import annotations

import sys

from bsopt_broker.adapters.alpaca.accounts import AccountsFileError
from bsopt_broker.bootstrap import serve
from bsopt_broker.config import BrokerSettings
from bsopt_common.runtime import run_service


def main() -> None:
    try:
        run_service(BrokerSettings, serve)
    except AccountsFileError as exc:
        print(f"broker-gateway: not started: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
