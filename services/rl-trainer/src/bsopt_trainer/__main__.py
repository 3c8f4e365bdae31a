"""``python -m bsopt_trainer``: run rl-trainer until SIGINT/SIGTERM."""

from __future__ import annotations

from bsopt_common.runtime import run_service
from bsopt_trainer.bootstrap import serve
from bsopt_trainer.config import TrainerSettings


def main() -> None:
    run_service(TrainerSettings, serve)


if __name__ == "__main__":
    main()
