"""The ``api`` schema's migrations on a fresh Postgres database."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from bsopt_api import models
from bsopt_common import migrations
from bsopt_common.db import create_db_engine


@pytest.fixture(scope="module")
def engine(postgres_url):
    eng = create_db_engine(postgres_url, application_name="bsopt-api-migration-tests")
    yield eng
    eng.dispose()


def test_upgrade_creates_the_projections_and_event_tables_idempotently(engine):
    migrations.upgrade("bsopt_api", engine, "api")
    migrations.upgrade("bsopt_api", engine, "api")  # a restarted replica: no-op
    tables = set(inspect(engine).get_table_names(schema="api"))
    assert {"coach_messages", "digests", "processed_events", "outbox", "alembic_version"} <= tables


def test_migrated_tables_match_the_models(engine):
    migrations.upgrade("bsopt_api", engine, "api")
    insp = inspect(engine)
    for table in models.metadata.sorted_tables:
        columns = {c["name"] for c in insp.get_columns(table.name, schema="api")}
        assert columns == {c.name for c in table.columns}, table.name
    uniques = insp.get_unique_constraints("coach_messages", schema="api")
    assert any(u["column_names"] == ["trade_id"] for u in uniques)


def test_downgrade_to_base_removes_the_tables(engine):
    migrations.upgrade("bsopt_api", engine, "api")
    from alembic import command

    command.downgrade(migrations.alembic_config("bsopt_api", engine, "api"), "base")
    assert set(inspect(engine).get_table_names(schema="api")) <= {"alembic_version"}
    migrations.upgrade("bsopt_api", engine, "api")
