from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from bsopt_common.settings import ServiceSettings


class TrainerSettings(ServiceSettings):
    """Environment: ``BSOPT_TRAINER_*`` (plus ``DATABASE_URL``, ``KAFKA_BOOTSTRAP_SERVERS``)."""

    model_config = SettingsConfigDict(env_prefix="BSOPT_TRAINER_", extra="ignore")

    service_name: str = "rl-trainer"
    host: str = "127.0.0.1"
    port: int = 50053
    client_id: str | None = "rl-trainer"
    #: gRPC target (``host:port``) of broker-gateway (required outside dev/test).
    broker_gateway_target: str | None = None
    REQUIRED: ClassVar[tuple[str, ...]] = (*ServiceSettings.REQUIRED, "broker_gateway_target")
    DEV_DEFAULTS: ClassVar[dict[str, str]] = {
        **ServiceSettings.DEV_DEFAULTS, "broker_gateway_target": "127.0.0.1:50051"}
    #: Where checkpoints go: ``<artifacts_dir>/jobs/<job_id>/``.
    artifacts_dir: Path = Path(".state/artifacts")
    #: Threads torch may use for one training (1: two threads spin-wait badly on a busy 2-core host).
    torch_threads: int = 1

    # --- per-user quotas (a submit over one is refused before anything is stored) ---------
    #: Jobs of one user that may train at the same time, over all replicas; more wait queued.
    max_running_jobs_per_user: int = Field(1, ge=1)
    #: Jobs of one user that may wait queued; a submit beyond is RESOURCE_EXHAUSTED.
    max_queued_jobs_per_user: int = Field(3, ge=0)
    #: PPO environment steps per model of one job (a job trains two models); more is
    #: INVALID_ARGUMENT. 1,048,576 is about 15 minutes of the Transformer on one core.
    max_total_timesteps: int = Field(1_048_576, ge=1)
    #: How often a running job re-reads its row for a cancel made on another replica.
    cancel_poll_seconds: float = Field(1.0, gt=0)
