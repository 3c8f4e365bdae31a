"""``python -m bsopt_digest``: run digest-worker until SIGINT/SIGTERM."""

from __future__ import annotations

from bsopt_common.runtime import run_service
from bsopt_digest.bootstrap import serve
from bsopt_digest.config import DigestSettings


def main() -> None:
    run_service(DigestSettings, serve)


if __name__ == "__main__":
    main()
