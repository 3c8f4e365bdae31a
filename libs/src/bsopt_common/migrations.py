"""Run a service's Alembic migrations programmatically, and check them for drift.

Each service ships ``<package>/migrations`` (``env.py`` + ``versions/``) and keeps its
``alembic_version`` table inside its own schema. Migrations run with the direct
(non-pooled) URL.

Revisions are frozen: they spell out their DDL with ``op.create_table`` and friends and
never import a service's ``models`` module, so changing a model changes no existing
revision and needs a new one. :func:`schema_drift` (what ``alembic check`` does,
restricted to one schema) is how tests catch a model change that no revision follows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from importlib import resources
from typing import Any, Protocol

import sqlalchemy as sa
from alembic import command, op
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, MetaData
from sqlalchemy.dialects import postgresql

from bsopt_common.db import ensure_schema

#: Alembic's default version table name (kept in each service's own schema).
VERSION_TABLE = "alembic_version"

#: One difference found by Alembic's autogenerate: ``("add_table", Table)``, ... (see
#: :func:`describe_drift`); per-column ``modify_*`` differences come grouped in a list.
Diff = tuple[Any, ...]


class MigrationEnvironment(Protocol):
    """What :func:`run_env` uses of ``alembic.context`` (the module that proxies the
    running ``EnvironmentContext``; both satisfy this)."""

    @property
    def config(self) -> Config: ...

    def configure(
        self, *, connection: Connection | None = ...,
        target_metadata: MetaData | Sequence[MetaData] | None = ..., **kw: Any,
    ) -> None: ...

    def begin_transaction(self) -> AbstractContextManager[Any]: ...

    def run_migrations(self, **kw: Any) -> None: ...


def alembic_config(
    package: str, engine: Engine, schema: str, target_metadata: MetaData | Sequence[MetaData] | None = None,
) -> Config:
    """Config for ``package``'s migrations on ``engine``. ``target_metadata`` is only
    needed for autogenerate commands (``command.check``, ``command.revision(autogenerate=True)``)."""
    script_location = str(resources.files(package) / "migrations")
    cfg = Config()
    cfg.set_main_option("script_location", script_location)
    cfg.attributes["engine"] = engine
    cfg.attributes["schema"] = schema
    if target_metadata is not None:
        cfg.attributes["target_metadata"] = target_metadata
    return cfg


def upgrade(package: str, engine: Engine, schema: str, revision: str = "head") -> None:
    """Create ``schema`` and upgrade it to ``revision``. Idempotent."""
    ensure_schema(engine, schema)
    command.upgrade(alembic_config(package, engine, schema), revision)


def only_schema(schema: str) -> Callable[[str | None, str, dict[str, Any]], bool]:
    """Alembic ``include_name`` hook: reflect only ``schema`` (every other schema of the
    shared database belongs to another service)."""

    def include_name(name: str | None, type_: str, parent_names: dict[str, Any]) -> bool:
        if type_ == "schema":
            return name == schema
        return True

    return include_name


def autogenerate_options(schema: str) -> dict[str, Any]:
    """``MigrationContext`` options for comparing one service's schema with its models:
    the same for :func:`schema_drift` and for ``env.py`` (``alembic check``)."""
    return {
        "include_schemas": True,
        "include_name": only_schema(schema),
        "version_table": VERSION_TABLE,
        "version_table_schema": schema,
        "compare_type": True,
        # On PostgreSQL Alembic first compares the rendered texts (``now()`` reflects as
        # ``now()``, so no query is needed and nothing flaps) and otherwise asks the
        # server ``SELECT <reflected default> = <model default>``, which treats e.g.
        # ``''::character varying`` and ``''`` as equal. See tests/test_migrations_drift.py.
        "compare_server_default": True,
    }


def run_env(context: MigrationEnvironment) -> None:
    """Body of every service's ``migrations/env.py``: online mode, version table in the
    service's schema, using the engine handed over in ``config.attributes`` (and, for
    autogenerate commands such as ``command.check``, ``config.attributes["target_metadata"]``)."""
    cfg = context.config
    engine: Engine = cfg.attributes["engine"]
    schema: str = cfg.attributes["schema"]
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=cfg.attributes.get("target_metadata"),
            **autogenerate_options(schema),
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


def schema_drift(
    package: str, engine: Engine, schema: str, target_metadata: MetaData | Sequence[MetaData],
) -> list[Diff | list[Diff]]:
    """Differences between the database's ``schema`` and ``target_metadata``, as
    Alembic's autogenerate sees them (``compare_metadata``); ``[]`` when a migrated
    database matches the models. Other schemas and the version table are ignored.

    Raises ``RuntimeError`` unless ``schema`` is at ``package``'s head revision, since
    a comparison against a half-migrated database says nothing about the revisions.
    """
    heads = set(ScriptDirectory.from_config(alembic_config(package, engine, schema)).get_heads())
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts=autogenerate_options(schema))
        current = set(context.get_current_heads())
        if current != heads:
            raise RuntimeError(
                f"schema {schema!r} is at {sorted(current) or 'base'}, "
                f"not at {package}'s head {sorted(heads)}"
            )
        # Alembic annotates ``metadata: MetaData`` but hands it to AutogenContext, which
        # takes a sequence of MetaData as well (as ``target_metadata`` in env.py does).
        return list(compare_metadata(context, target_metadata))  # type: ignore[arg-type]


def flatten_drift(diffs: Sequence[Diff | list[Diff]]) -> list[Diff]:
    """:func:`schema_drift`'s result with the per-column ``modify_*`` groups unpacked:
    one tuple per difference."""
    out: list[Diff] = []
    for d in diffs:
        out.extend(d if isinstance(d, list) else [d])
    return out


def _sql(obj: Any) -> str:
    """Readable SQL for a type or a server default."""
    if obj is None:
        return "(none)"
    arg = getattr(obj, "arg", obj)  # DefaultClause -> its text/expression
    if isinstance(arg, str):
        return repr(arg)
    try:
        # SQLAlchemy's psycopg2 dialect (postgresql.dialect) has an unannotated __init__.
        return str(arg.compile(dialect=postgresql.dialect()))  # type: ignore[no-untyped-call]
    except Exception:
        return repr(arg)


def _table_name(table: sa.Table) -> str:
    return f"{table.schema}.{table.name}" if table.schema else table.name


def _columns(obj: Any) -> str:
    return ", ".join(c.name for c in obj.columns) if hasattr(obj, "columns") else "?"


_ONLY_IN = {True: "models, not in the database", False: "database, not in the models"}


def describe_drift(diffs: Sequence[Diff | list[Diff]]) -> list[str]:
    """One line per difference from :func:`schema_drift`: which table, what differs, and
    which side (database = what the revisions produce, models = the target metadata)."""
    lines = []
    for d in flatten_drift(diffs):
        kind = d[0]
        if kind in ("add_table", "remove_table"):
            where = _ONLY_IN[kind.startswith("add")]
            lines.append(f"{_table_name(d[1])}: table only in the {where} ({kind})")
        elif kind in ("add_column", "remove_column"):
            schema, table, col = d[1], d[2], d[3]
            where = _ONLY_IN[kind.startswith("add")]
            lines.append(f"{schema}.{table}: column {col.name} {_sql(col.type)} only in the {where} ({kind})")
        elif kind.startswith("modify_"):
            schema, table, column, _kw, db_value, model_value = d[1:7]
            what = kind.removeprefix("modify_")
            if what in ("type", "default"):
                db_value, model_value = _sql(db_value), _sql(model_value)
            elif what == "nullable":
                db_value, model_value = (("NULL" if v else "NOT NULL") for v in (db_value, model_value))
            lines.append(
                f"{schema}.{table}.{column}: {what} differs: "
                f"database {db_value}, models {model_value} ({kind})"
            )
        elif kind in ("add_index", "remove_index"):
            idx = d[1]
            where = _ONLY_IN[kind.startswith("add")]
            unique = "unique " if idx.unique else ""
            lines.append(
                f"{_table_name(idx.table)}: {unique}index {idx.name} ({_columns(idx)}) "
                f"only in the {where} ({kind})"
            )
        elif kind in ("add_constraint", "remove_constraint", "add_fk", "remove_fk"):
            cons = d[1]
            where = _ONLY_IN[kind.startswith("add")]
            extra = ""
            if isinstance(cons, sa.ForeignKeyConstraint):
                extra = " -> " + ", ".join(e.target_fullname for e in cons.elements)
            lines.append(
                f"{_table_name(cons.table)}: {type(cons).__name__} {cons.name} ({_columns(cons)}{extra}) "
                f"only in the {where} ({kind})"
            )
        else:
            lines.append(f"{kind}: {d[1:]!r}")
    return lines


# --- frozen DDL shared by the services' first revisions -------------------------------
#
# ``processed_events`` and ``outbox`` as ``bsopt_common.events.event_tables`` defined them
# when every service's revision 0001 was written. Never edit these two functions: a
# database migrated with them must stay what it is. If ``event_tables`` changes, each
# service adds a revision with the ``op.alter_*`` / ``op.create_index`` calls it takes.


def create_event_tables_op(schema: str) -> None:
    """Create ``<schema>.processed_events`` and ``<schema>.outbox`` (revision 0001 form)."""
    op.create_table(
        "processed_events",
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("topic", sa.String(length=200), nullable=False),
        sa.Column(
            "processed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False,
        ),
        sa.PrimaryKeyConstraint("event_id", name="processed_events_pkey"),
        schema=schema,
    )
    op.create_table(
        "outbox",
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("topic", sa.String(length=200), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("event_type", sa.String(length=200), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("event_id", name="outbox_pkey"),
        schema=schema,
    )
    op.create_index(f"ix_{schema}_outbox_created_at", "outbox", ["created_at"], unique=False, schema=schema)
    op.create_index(
        f"ix_{schema}_outbox_published_at", "outbox", ["published_at"], unique=False, schema=schema,
    )


def drop_event_tables_op(schema: str) -> None:
    """Inverse of :func:`create_event_tables_op`."""
    op.drop_index(f"ix_{schema}_outbox_published_at", table_name="outbox", schema=schema)
    op.drop_index(f"ix_{schema}_outbox_created_at", table_name="outbox", schema=schema)
    op.drop_table("outbox", schema=schema)
    op.drop_table("processed_events", schema=schema)


def usd_float_to_amount_op(schema: str, table: str, old: str, new: str, *, add_currency: bool) -> None:
    """Money as a type (revision 0002 of broker, scorer, digest, trainer): the float
    column ``old`` (USD) becomes the exact amount ``new`` ``NUMERIC(28, 9)``, and, with
    ``add_currency``, the table gains ``currency VARCHAR(3) NOT NULL`` filled with
    ``'USD'`` for existing rows (the only currency those rows could hold). Frozen: never
    edit."""
    op.alter_column(table, old, type_=sa.Numeric(28, 9), postgresql_using=f'"{old}"::numeric(28, 9)',
                    schema=schema)
    op.alter_column(table, old, new_column_name=new, schema=schema)
    if add_currency:
        op.add_column(table, sa.Column("currency", sa.String(length=3), nullable=False, server_default="USD"),
                      schema=schema)
        op.alter_column(table, "currency", server_default=None, schema=schema)


def amount_to_usd_float_op(schema: str, table: str, new: str, old: str, *, drop_currency: bool) -> None:
    """Downgrade of :func:`usd_float_to_amount_op` (amounts are assumed to be USD). Frozen."""
    if drop_currency:
        op.drop_column(table, "currency", schema=schema)
    op.alter_column(table, new, new_column_name=old, schema=schema)
    op.alter_column(table, old, type_=sa.Float(), postgresql_using=f'"{old}"::double precision', schema=schema)
