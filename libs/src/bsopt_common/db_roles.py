"""One Postgres role per service, with privileges on its own schema only.

The superuser (or any role with CREATEROLE that owns the database) is used for one thing:
:func:`bootstrap_service_roles` creates each service's login role, creates its schema
owned by that role (so the service runs its own migrations as the schema owner), adopts
objects an earlier version created as another owner, and takes every privilege on that
schema away from PUBLIC. Services then connect with :func:`role_url`: a role can use
and change its own schema and nothing else (no other schema, no ``public``, no new
schemas).

Roles are cluster-wide in Postgres; the privileges granted here are per database.
Platform teams do the same with their own tooling (see docs/architecture.md, "Data
ownership"); the embedded stack and the test fixtures call this module.
"""

from __future__ import annotations

from collections.abc import Mapping

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

#: Each service's schema (its role is ``bsopt_<schema>``).
SERVICE_SCHEMAS: Mapping[str, str] = {
    "auth-server": "auth", "resource-api": "api", "broker-gateway": "broker", "rl-trainer": "trainer",
    "ml-scorer": "scorer", "digest-worker": "digest",
}


def role_name(service: str) -> str:
    """``broker-gateway`` -> ``bsopt_broker``. KeyError for an unknown service."""
    return f"bsopt_{SERVICE_SCHEMAS[service]}"


def dev_password(service: str) -> str:
    """The dev/test password of a service's role (never used outside dev and test)."""
    return f"dev-{role_name(service)}-password"


def role_url(admin_url: str, service: str, password: str | None = None) -> str:
    """``admin_url`` (SQLAlchemy URL) with the service's role and password instead."""
    u = make_url(admin_url).set(username=role_name(service), password=password or dev_password(service))
    return u.render_as_string(hide_password=False)


def _connect(admin_url: str) -> psycopg.Connection[tuple[object, ...]]:
    u = make_url(admin_url)
    socket_dir = u.query.get("host")
    host = u.host or (socket_dir if isinstance(socket_dir, str) else None)
    return psycopg.connect(host=host, port=u.port or 5432, user=u.username, password=u.password,
                           dbname=u.database or "postgres", autocommit=True)


def bootstrap_service_roles(admin_url: str, services: Mapping[str, str] | None = None) -> dict[str, str]:
    """Create or update the login role and schema of each service in ``services``
    (``{service: password}``; all six with their dev passwords by default) in the
    database of ``admin_url``; return ``{service: database URL of its role}``.
    Idempotent. Raises psycopg errors when ``admin_url``'s role may not create roles."""
    passwords = dict(services) if services is not None else {s: dev_password(s) for s in SERVICE_SCHEMAS}
    database = make_url(admin_url).database or "postgres"
    urls: dict[str, str] = {}
    with _connect(admin_url) as conn:
        # Nobody but the owners and the roles granted below may connect or create here.
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(database)))
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        for service, password in passwords.items():
            role, schema = role_name(service), SERVICE_SCHEMAS[service]
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(sql.SQL(verb + " ROLE {} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT "
                                 "PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
            conn.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(
                sql.Identifier(database), sql.Identifier(role)))
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}").format(
                sql.Identifier(schema), sql.Identifier(role)))
            conn.execute(sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(sql.Identifier(schema), sql.Identifier(role)))
            _adopt(conn, schema, role)
            conn.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(sql.Identifier(schema)))
            urls[service] = role_url(admin_url, service, password)
    return urls


#: relkinds adopted by :func:`_adopt`, in order: tables first (ALTER TABLE also moves the
#: sequences their columns own), then views, then any sequence still owned by another role.
_ADOPT = (("TABLE", ("r", "p")), ("VIEW", ("v",)), ("SEQUENCE", ("S",)))


def _adopt(conn: psycopg.Connection[tuple[object, ...]], schema: str, role: str) -> None:
    """Make ``role`` the owner of every relation in ``schema`` (objects an earlier version
    created as the superuser)."""
    for kind, relkinds in _ADOPT:
        rows = conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind = ANY(%s) AND pg_get_userbyid(c.relowner) <> %s",
            (schema, list(relkinds), role)).fetchall()
        for (name,) in rows:
            statement = "ALTER " + kind + " {}.{} OWNER TO {}"
            conn.execute(sql.SQL(statement).format(sql.Identifier(schema), sql.Identifier(str(name)),
                                                    sql.Identifier(role)))
