"""``python -m bsopt_broker``: run broker-gateway until SIGINT/SIGTERM."""

from __future__ import annotations

from bsopt_broker.bootstrap import serve
from bsopt_broker.config import BrokerSettings
from bsopt_common.runtime import run_service


def main() -> None:
    run_service(BrokerSettings, serve)


if __name__ == "__main__":
    main()
