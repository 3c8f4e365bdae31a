"""``python -m bsopt_api`` / ``bsopt-resource-api``: serve the API until SIGINT/SIGTERM.

SIGTERM drains: stop accepting connections, close the coach sockets (1012), let
in-flight requests finish for ``shutdown_grace_seconds``, then stop the consumers
(their in-flight event commits) and dispose of the pool (see bootstrap.serve).
"""

from __future__ import annotations

from bsopt_api.bootstrap import serve
from bsopt_api.config import ApiSettings
from bsopt_common.runtime import run_service


def main() -> None:
    run_service(ApiSettings, serve)


if __name__ == "__main__":
    main()
