"""``python -m bsopt_scorer``: run ml-scorer until SIGINT/SIGTERM."""

from __future__ import annotations

from bsopt_scorer.bootstrap import serve
from bsopt_scorer.config import ScorerSettings
from bsopt_common.runtime import run_until_signalled
from bsopt_common.telemetry import setup_logging, setup_telemetry


def main() -> None:
    settings = ScorerSettings()
    setup_logging(settings.service_name)
    setup_telemetry(settings.service_name)
    run_until_signalled(lambda stop: serve(settings, stop))


if __name__ == "__main__":
    main()
