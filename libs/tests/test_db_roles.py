"""Per-service database roles on a real Postgres: each service's role owns its schema,
runs its own migrations there, and can touch nothing else. Replays the audit's finding
(every service connected as the superuser, so one service's credentials read every
schema, the auth server's signing keys included)."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bsopt_common.db import create_db_engine
from bsopt_common.db_roles import SERVICE_SCHEMAS, bootstrap_service_roles, role_name
from bsopt_common.migrations import schema_drift, upgrade


def _connect(url: str) -> psycopg.Connection[tuple[object, ...]]:
    u = make_url(url)
    return psycopg.connect(host=u.host, port=u.port or 5432, user=u.username, password=u.password,
                           dbname=u.database, autocommit=True)


@pytest.fixture(scope="module")
def urls(postgres_url: str) -> dict[str, str]:
    with _connect(postgres_url) as admin:  # an earlier version's table, created as the superuser
        admin.execute("CREATE SCHEMA IF NOT EXISTS scorer")
        admin.execute("CREATE TABLE scorer.legacy (id bigserial PRIMARY KEY, note text)")
        admin.execute("CREATE SCHEMA IF NOT EXISTS auth")
        admin.execute("CREATE TABLE auth.secrets (kid text PRIMARY KEY, private_jwk text)")
        admin.execute("INSERT INTO auth.secrets VALUES ('k1', '{\"d\": \"private\"}')")
    first = bootstrap_service_roles(postgres_url)
    assert bootstrap_service_roles(postgres_url) == first  # idempotent
    return first


def test_every_service_gets_its_own_login_role(urls):
    assert set(urls) == set(SERVICE_SCHEMAS)
    for service, url in urls.items():
        with _connect(url) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (role_name(service),)
            flags = conn.execute("SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles "
                                 "WHERE rolname = current_user").fetchone()
            assert flags == (False, False, False)


def test_a_role_owns_its_schema_and_adopts_what_the_superuser_created_there(urls):
    with _connect(urls["ml-scorer"]) as conn:
        conn.execute("INSERT INTO scorer.legacy (note) VALUES ('mine')")  # table and its sequence adopted
        conn.execute("CREATE TABLE scorer.fresh (id int)")
        conn.execute("DROP TABLE scorer.fresh")


@pytest.mark.parametrize("statement", [
    "SELECT private_jwk FROM auth.secrets",  # the auth server's keys: the audit's prize
    "CREATE TABLE auth.planted (id int)",
    "CREATE TABLE public.planted (id int)",
    "CREATE SCHEMA planted",
    "SELECT * FROM scorer.legacy",
])
def test_another_services_role_is_refused(urls, statement):
    with _connect(urls["broker-gateway"]) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(statement)


def test_migrations_run_as_the_schema_owner_and_leave_no_drift(urls):
    from bsopt_broker import models
    from bsopt_common.events import event_tables

    engine = create_db_engine(urls["broker-gateway"])
    try:
        upgrade("bsopt_broker", engine, "broker")
        targets = [models.metadata, event_tables("broker")[0].metadata]
        assert schema_drift("bsopt_broker", engine, "broker", targets) == []
        with engine.connect() as conn:
            owners = {r[0] for r in conn.execute(text(
                "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'broker'"))}
        assert owners == {"bsopt_broker"}
    finally:
        engine.dispose()


@pytest.mark.parametrize(("service", "package", "schema"), [
    ("auth-server", "bsopt_auth", "auth"), ("resource-api", "bsopt_api", "api"),
    ("rl-trainer", "bsopt_trainer", "trainer"), ("ml-scorer", "bsopt_scorer", "scorer"),
    ("digest-worker", "bsopt_digest", "digest"),
])
def test_every_service_migrates_its_schema_as_its_own_role(urls, service, package, schema):
    engine = create_db_engine(urls[service])
    try:
        upgrade(package, engine, schema)
    finally:
        engine.dispose()
