"""Run a service's Alembic migrations programmatically.

Each service ships ``<package>/migrations`` (``env.py`` + ``versions/``) and keeps its
``alembic_version`` table inside its own schema. Migrations run with the direct
(non-pooled) URL.
"""

from __future__ import annotations

from importlib import resources

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

from bsopt_common.db import ensure_schema


def alembic_config(package: str, engine: Engine, schema: str) -> Config:
    script_location = str(resources.files(package) / "migrations")
    cfg = Config()
    cfg.set_main_option("script_location", script_location)
    cfg.attributes["engine"] = engine
    cfg.attributes["schema"] = schema
    return cfg


def upgrade(package: str, engine: Engine, schema: str, revision: str = "head") -> None:
    """Create ``schema`` and upgrade it to ``revision``. Idempotent."""
    ensure_schema(engine, schema)
    command.upgrade(alembic_config(package, engine, schema), revision)


def run_env(context) -> None:  # noqa: ANN001 - alembic's context module
    """Body of every service's ``migrations/env.py``: online mode, version table in the
    service's schema, using the engine handed over in ``config.attributes``."""
    cfg = context.config
    engine: Engine = cfg.attributes["engine"]
    schema: str = cfg.attributes["schema"]
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            version_table_schema=schema,
            include_schemas=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
