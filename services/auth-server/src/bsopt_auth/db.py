"""Database glue for this service: migrations into schema ``auth``."""

from __future__ import annotations

from sqlalchemy import Engine

from bsopt_auth.config import SCHEMA
from bsopt_common.migrations import upgrade


def migrate(engine: Engine, revision: str = "head") -> None:
    """Create schema ``auth`` and upgrade it to ``revision`` (idempotent)."""
    upgrade("bsopt_auth", engine, SCHEMA, revision)
