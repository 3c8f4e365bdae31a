"""``python -m bsopt_trainer``: run rl-trainer until SIGINT/SIGTERM."""

from __future__ import annotations

from bsopt_common.runtime import run_until_signalled
from bsopt_common.telemetry import setup_logging, setup_telemetry
from bsopt_trainer.bootstrap import serve
from bsopt_trainer.config import TrainerSettings


def main() -> None:
    settings = TrainerSettings()
    setup_logging(settings.service_name)
    setup_telemetry(settings.service_name)
    run_until_signalled(lambda stop: serve(settings, stop))


if __name__ == "__main__":
    main()
