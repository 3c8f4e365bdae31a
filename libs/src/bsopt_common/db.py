"""Neon-aware database layer: SQLAlchemy 2 engines over psycopg 3.

One Postgres, one schema per service. Tables name their schema explicitly
(``MetaData(schema="broker")``) rather than relying on ``search_path``, because
PgBouncer in transaction mode (Neon's ``-pooler`` endpoint) does not keep session
settings between transactions.

Connection policy (see docs/architecture.md, "Data"):

* pooled URL (host contains ``-pooler``): psycopg ``prepare_threshold=None``, since
  server-side prepared statements do not survive transaction pooling;
* non-local hosts default to ``sslmode=require``;
* a short ``connect_timeout`` (seconds);
* connection attempts retry with exponential backoff and full jitter, so a Neon compute
  waking from scale-to-zero costs a retry, not an error;
* a small pool; every checkout returns to the pool on every path (``session_scope``).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine, Numeric, create_engine, event, text
from sqlalchemy.engine import URL, Dialect, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

log = logging.getLogger(__name__)

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", ""})


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter (AWS Architecture Blog, "Exponential
    Backoff And Jitter", 2015): sleep ``uniform(0, min(cap, base * 2**attempt))``."""

    attempts: int = 6
    base_seconds: float = 0.2
    cap_seconds: float = 5.0

    def delay(self, attempt: int) -> float:
        return random.uniform(0.0, min(self.cap_seconds, self.base_seconds * (2**attempt)))


def normalise_url(url: str | URL) -> URL:
    """Return ``url`` with the psycopg 3 driver and Neon-aware query defaults.

    Accepts ``postgres://``, ``postgresql://`` and ``postgresql+psycopg://``.
    Raises ``ValueError`` for a non-Postgres URL.
    """
    u = make_url(str(url).replace("postgres://", "postgresql://", 1)) if isinstance(url, str) else url
    if u.get_backend_name() != "postgresql":
        raise ValueError(f"expected a postgresql:// URL, got {u.drivername!r}")
    u = u.set(drivername="postgresql+psycopg")
    query = dict(u.query)
    host = u.host or ""
    if host not in LOCAL_HOSTS and not host.startswith("/"):
        query.setdefault("sslmode", "require")
    query.setdefault("connect_timeout", "5")
    return u.set(query=query)


def is_pooled(url: URL) -> bool:
    """True for a Neon pooled endpoint (PgBouncer, transaction mode)."""
    return "-pooler" in (url.host or "")


def create_db_engine(
    url: str | URL,
    *,
    pool_size: int = 3,
    max_overflow: int = 2,
    retry: RetryPolicy | None = None,
    application_name: str | None = None,
) -> Engine:
    """Create a pooled engine with the connection policy above. Does not connect."""
    u = normalise_url(url)
    connect_args: dict[str, object] = {}
    if is_pooled(u):
        connect_args["prepare_threshold"] = None
    if application_name:
        connect_args["application_name"] = application_name
    engine = create_engine(
        u,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=True,
        pool_recycle=300,
        connect_args=connect_args,
    )
    policy = retry or RetryPolicy()

    @event.listens_for(engine, "do_connect")
    def _connect_with_retry(
        dialect: Dialect, conn_rec: ConnectionPoolEntry, cargs: list[Any], cparams: dict[str, Any]
    ) -> DBAPIConnection:
        for attempt in range(policy.attempts):
            try:
                return dialect.connect(*cargs, **cparams)
            except psycopg.OperationalError as exc:
                if attempt == policy.attempts - 1:
                    raise
                pause = policy.delay(attempt)
                log.warning(
                    "database connect failed (attempt %d/%d), retrying in %.2fs: %s",
                    attempt + 1, policy.attempts, pause, str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                )
                time.sleep(pause)
        raise AssertionError("unreachable")

    return engine


#: id(URL) -> (the URL, its key): an identity check, since a URL's own hash renders it.
_url_keys: dict[int, tuple[URL, str]] = {}


def database_key(bind: Engine | Connection | None) -> str:
    """The database ``bind`` points at, as a cache key: its URL without the password
    (rendered once per URL object). Not ``id(engine)``, which a later engine may reuse;
    every engine on one database shares the entries. ``""`` for None."""
    if bind is None:
        return ""
    url = bind.engine.url
    entry = _url_keys.get(id(url))
    if entry is None or entry[0] is not url:
        if len(_url_keys) > 256:
            _url_keys.clear()
        entry = _url_keys[id(url)] = (url, url.render_as_string(hide_password=True))
    return entry[1]


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any exception, and always
    return the connection to the pool."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def ensure_schema(engine: Engine, schema: str) -> None:
    """Create ``schema`` if missing (idempotent). A service connecting with its own role
    finds its schema already created (and owned by it) by
    :func:`bsopt_common.db_roles.bootstrap_service_roles`, and needs no CREATE privilege
    on the database: the schema is only created when it does not exist yet."""
    if not schema.isidentifier():
        raise ValueError(f"invalid schema name {schema!r}")
    with engine.begin() as conn:
        exists = conn.execute(text("SELECT 1 FROM pg_namespace WHERE nspname = :s"), {"s": schema}).first()
        if exists is None:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))


def wait_for_database(engine: Engine, timeout_seconds: float = 60.0) -> None:
    """Block until ``SELECT 1`` succeeds or ``timeout_seconds`` pass (then re-raise)."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def amount_type() -> Numeric[Decimal]:
    """Column type of a money amount: ``NUMERIC(28, 9)``, exact to one billionth of a unit
    (see :mod:`bsopt_common.money`); always beside a ``currency`` ``CHAR(3)``-like column."""
    return Numeric(28, 9, asdecimal=True)
