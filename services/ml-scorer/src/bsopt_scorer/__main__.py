"""``python -m bsopt_scorer``: run ml-scorer until SIGINT/SIGTERM."""

from __future__ import annotations

from bsopt_common.runtime import run_service
from bsopt_scorer.bootstrap import serve
from bsopt_scorer.config import ScorerSettings


def main() -> None:
    run_service(ScorerSettings, serve)


if __name__ == "__main__":
    main()
