from __future__ import annotations

from pathlib import Path
from typing import ClassVar

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
