"""What rl-trainer's job store hands to its servicer and worker: frozen records."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bsopt_common.vocabulary import JobStatus
from bsopt_trainer.domain.job import TrainingSpec


@dataclass(frozen=True, slots=True)
class TrainingJob:
    """A training job as stored in ``trainer.training_jobs``."""

    job_id: str
    user_id: str
    spec: TrainingSpec
    status: JobStatus
    timesteps_done: int
    """Environment steps done over both trainings (Transformer, then MLP)."""
    total_timesteps: int
    """Environment steps of both trainings together."""
    results: dict[str, Any] | None
    """``JobResult.to_dict()`` plus ``checkpoint_uri``, once the job succeeded."""
    error: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cancel_requested: bool = False
    """The owner asked to cancel the job while it ran; it stops at its next iteration."""

    @property
    def progress(self) -> float:
        """Fraction of timesteps done, 0..1."""
        return min(1.0, self.timesteps_done / (self.total_timesteps or 1))
