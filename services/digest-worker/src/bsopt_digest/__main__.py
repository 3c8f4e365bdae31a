"""``python -m bsopt_digest``: run digest-worker until SIGINT/SIGTERM."""

from __future__ import annotations

from bsopt_digest.bootstrap import serve
from bsopt_digest.config import DigestSettings
from bsopt_common.runtime import run_until_signalled
from bsopt_common.telemetry import setup_logging, setup_telemetry


def main() -> None:
    settings = DigestSettings()
    setup_logging(settings.service_name)
    setup_telemetry(settings.service_name)
    run_until_signalled(lambda stop: serve(settings, stop))


if __name__ == "__main__":
    main()
