"""bsopt_common.db against a real Postgres (``postgres_url``), plus the embedded Postgres.

Nothing here is mocked: URL policy is read back from what the engine would hand to
psycopg, pool accounting from the real pool, retries from real refused connections.
"""

from __future__ import annotations

import logging
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy.exc
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from bsopt_common.db import (
    RetryPolicy,
    create_db_engine,
    ensure_schema,
    make_session_factory,
    normalise_url,
    session_scope,
)
from bsopt_common.embedded.postgres import EmbeddedPostgres
from bsopt_common.testing import pytest_plugin

NEON_POOLED = "postgresql://app:secret@ep-x-123-pooler.us-east-2.aws.neon.tech/bsopt"
NEON_DIRECT = "postgres://app:secret@ep-x-123.us-east-2.aws.neon.tech/bsopt"


class _Captured(Exception):
    pass


def _connect_params(engine: Engine) -> dict[str, object]:
    """The keyword arguments the engine hands to ``psycopg.connect`` (URL query plus
    ``connect_args``), captured at the first connect attempt without touching the network."""
    seen: dict[str, object] = {}

    def _capture(*cargs, **cparams):
        seen.update(cparams)
        raise _Captured

    engine.dialect.connect = _capture  # type: ignore[method-assign]
    try:
        with pytest.raises(_Captured):
            engine.connect()
    finally:
        del engine.dialect.connect
    return seen


# ----------------------------------------------------------------- (a) URL policy


def test_pooled_neon_url_disables_prepared_statements_and_requires_tls() -> None:
    engine = create_db_engine(NEON_POOLED)
    assert engine.url.drivername == "postgresql+psycopg"
    _, url_params = engine.dialect.create_connect_args(engine.url)
    assert url_params["sslmode"] == "require"
    assert url_params["connect_timeout"] == "5"
    params = _connect_params(engine)
    assert "prepare_threshold" in params and params["prepare_threshold"] is None
    assert params["sslmode"] == "require"
    assert params["host"] == "ep-x-123-pooler.us-east-2.aws.neon.tech"


def test_direct_neon_url_keeps_prepared_statements() -> None:
    engine = create_db_engine(NEON_DIRECT, application_name="bsopt-test")
    params = _connect_params(engine)
    assert "prepare_threshold" not in params
    assert params["sslmode"] == "require"
    assert params["application_name"] == "bsopt-test"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres@localhost/postgres",
        "postgresql://postgres@127.0.0.1:5432/postgres",
        "postgresql+psycopg://postgres@/postgres?host=/tmp/bsopt-pg-x/pgdata",  # unix socket (pgserver)
    ],
)
def test_local_urls_get_no_sslmode_but_a_connect_timeout(url: str) -> None:
    u = normalise_url(url)
    assert "sslmode" not in u.query
    assert u.query["connect_timeout"] == "5"
    engine = create_db_engine(url)
    _, params = engine.dialect.create_connect_args(engine.url)
    assert "sslmode" not in params
    assert params["connect_timeout"] == "5"
    assert "prepare_threshold" not in _connect_params(engine)


def test_normalise_url_keeps_explicit_settings_and_rejects_other_backends() -> None:
    u = normalise_url(NEON_POOLED + "?sslmode=verify-full&connect_timeout=10")
    assert (u.query["sslmode"], u.query["connect_timeout"]) == ("verify-full", "10")
    assert normalise_url(NEON_DIRECT).drivername == "postgresql+psycopg"
    with pytest.raises(ValueError):
        normalise_url("mysql://root@localhost/db")


# -------------------------------------------------- (b) connections return to the pool


@pytest.fixture(scope="module")
def small_engine(postgres_url: str) -> Iterator[Engine]:
    engine = create_db_engine(postgres_url, pool_size=2, max_overflow=0)
    ensure_schema(engine, "pooltest")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS pooltest.t (id int PRIMARY KEY)"))
    yield engine
    engine.dispose()


class _Abort(BaseException):
    """Not an Exception: like KeyboardInterrupt or CancelledError."""


def _sql_error(s) -> None:
    s.execute(text("SELECT * FROM pooltest.no_such_table"))


def _python_error(s) -> None:
    s.execute(text("INSERT INTO pooltest.t VALUES (1)"))
    raise RuntimeError("boom after a write")


def _constraint_error(s) -> None:
    s.execute(text("INSERT INTO pooltest.t VALUES (2), (2)"))


def _base_exception(s) -> None:
    s.execute(text("SELECT 1"))
    raise _Abort


def _server_kills_connection(s) -> None:
    s.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))


FAILURES = [_sql_error, _python_error, _constraint_error, _base_exception, _server_kills_connection]


def test_every_error_path_returns_the_connection(small_engine: Engine) -> None:
    factory = make_session_factory(small_engine)
    for i in range(20):
        fail = FAILURES[i % len(FAILURES)]
        with pytest.raises((sqlalchemy.exc.DBAPIError, RuntimeError, _Abort)):
            with session_scope(factory) as s:
                fail(s)
        assert small_engine.pool.checkedout() == 0, f"iteration {i} ({fail.__name__}) leaked a connection"
    # Both pooled connections (max_overflow=0) are usable at once: nothing leaked, no
    # pool timeout, and the rolled-back writes are gone.
    with session_scope(factory) as a, session_scope(factory) as b:
        assert a.execute(text("SELECT count(*) FROM pooltest.t WHERE id IN (1, 2)")).scalar_one() == 0
        assert b.execute(text("SELECT 1")).scalar_one() == 1
        assert small_engine.pool.checkedout() == 2
    assert small_engine.pool.checkedout() == 0


def test_success_commits_and_returns_the_connection(small_engine: Engine) -> None:
    factory = make_session_factory(small_engine)
    with session_scope(factory) as s:
        s.execute(text("INSERT INTO pooltest.t VALUES (42) ON CONFLICT DO NOTHING"))
    assert small_engine.pool.checkedout() == 0
    with small_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM pooltest.t WHERE id = 42")).scalar_one() == 1


# ------------------------------------------------------------------- (c) connect retry


def _count_connects(engine: Engine, after_failure=None) -> list[int]:
    """Wrap the dialect's DBAPI connect (what the retry loop calls) to count attempts;
    ``after_failure(n)`` runs after the n-th attempt fails."""
    calls: list[int] = []
    real = engine.dialect.connect

    def _connect(*cargs, **cparams):
        calls.append(len(calls) + 1)
        try:
            return real(*cargs, **cparams)
        except psycopg.OperationalError:
            if after_failure is not None:
                after_failure(len(calls))
            raise

    engine.dialect.connect = _connect  # type: ignore[method-assign]
    return calls


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound (so nobody else takes it) but not listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def test_retry_gives_up_after_the_configured_attempts(
    refused_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    engine = create_db_engine(
        f"postgresql://postgres@127.0.0.1:{refused_port}/postgres",
        retry=RetryPolicy(attempts=3, base_seconds=0.01),
    )
    calls = _count_connects(engine)
    with caplog.at_level(logging.WARNING, logger="bsopt_common.db"):
        with pytest.raises(sqlalchemy.exc.OperationalError) as err:
            engine.connect()
    assert isinstance(err.value.orig, psycopg.OperationalError)
    assert calls == [1, 2, 3]
    retries = [r.getMessage() for r in caplog.records if r.name == "bsopt_common.db"]
    assert len(retries) == 2
    assert "attempt 1/3" in retries[0] and "attempt 2/3" in retries[1]
    engine.dispose()


class _LateProxy:
    """A loopback TCP port that refuses connections until :meth:`open`, then forwards
    each connection to ``target`` (TCP address or unix socket path). Bounded: at most
    ``max_conns`` connections, daemon threads, everything closed by :meth:`close`."""

    def __init__(self, target: tuple[str, int] | str, max_conns: int = 8) -> None:
        self._target = target
        self._max = max_conns
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._socks: list[socket.socket] = []
        self._stop = threading.Event()
        self.accepted = 0

    def open(self) -> None:
        self._listener.listen(self._max)
        self._listener.settimeout(0.2)
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set() and self.accepted < self._max:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            if isinstance(self._target, str):
                upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                upstream.connect(self._target)
            else:
                upstream = socket.create_connection(self._target, timeout=5)
            upstream.settimeout(None)
            client.settimeout(None)
            self._socks += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        for s in self._socks:
            s.close()


def _target_of(url: str) -> tuple[str, int] | str:
    u = make_url(url)
    host = u.host or u.query.get("host") or "/tmp"
    port = u.port or 5432
    return f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port)


def test_retry_reaches_a_server_that_comes_up_between_attempts(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = _LateProxy(_target_of(postgres_url))
    u = make_url(postgres_url)
    via_proxy = u.set(
        host="127.0.0.1", port=proxy.port, query={k: v for k, v in u.query.items() if k != "host"}
    )
    engine = create_db_engine(via_proxy, retry=RetryPolicy(attempts=3, base_seconds=0.01))
    calls = _count_connects(engine, after_failure=lambda n: proxy.open() if n == 1 else None)
    try:
        with caplog.at_level(logging.WARNING, logger="bsopt_common.db"):
            with engine.connect() as conn:
                assert conn.execute(text("SELECT current_database()")).scalar_one() == u.database
        assert calls == [1, 2]
        assert proxy.accepted == 1
        assert sum("attempt 1/3" in r.getMessage() for r in caplog.records) == 1
    finally:
        engine.dispose()
        proxy.close()


# ------------------------------------------------------------- embedded Postgres


@pytest.fixture
def scratch_dir() -> Iterator[Path]:
    # Not tmp_path: as root, pgserver opens up every ancestor of the data directory.
    d = Path(tempfile.mkdtemp(prefix="bsopt-pgtest-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_embedded_postgres_persists_data_across_restarts(scratch_dir: Path) -> None:
    data_dir = scratch_dir / "state" / "postgres"
    pg = EmbeddedPostgres.start(data_dir)
    try:
        assert make_url(pg.url).drivername == "postgresql+psycopg"
        assert pg.socket_dir is not None and (pg.socket_dir / ".s.PGSQL.5432").is_socket()
        engine = create_db_engine(pg.url)
        ensure_schema(engine, "persist")
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE persist.t (v text)"))
            conn.execute(text("INSERT INTO persist.t VALUES ('kept')"))
        engine.dispose()
    finally:
        pg.stop()
    assert not (data_dir / "postmaster.pid").exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg.dsn, connect_timeout=2).close()

    with EmbeddedPostgres.start(data_dir) as again:
        engine = create_db_engine(again.url)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT v FROM persist.t")).scalars().all() == ["kept"]
        engine.dispose()
        with psycopg.connect(again.dsn) as conn:  # libpq URI for non-SQLAlchemy clients
            assert conn.execute("SELECT 1").fetchone() == (1,)
    assert (data_dir / "PG_VERSION").exists()


def test_plugin_falls_back_to_pgserver(monkeypatch: pytest.MonkeyPatch) -> None:
    """Drive the plugin's own fixture code with every earlier option switched off."""
    monkeypatch.delenv("TEST_DATABASE_URL", raising=False)
    monkeypatch.setattr(pytest_plugin, "_answers", lambda url: False)
    monkeypatch.setattr(pytest_plugin, "docker_available", lambda: False)
    server_gen = pytest_plugin.postgres_server_url.__wrapped__()
    server_url = next(server_gen)
    try:
        assert make_url(server_url).query.get("host", "").startswith("/")  # the pgserver socket
        db_gen = pytest_plugin.postgres_url.__wrapped__(server_url)
        db_url = next(db_gen)
        try:
            engine = create_db_engine(db_url, pool_size=1, max_overflow=0)
            assert engine.url.query.get("sslmode") is None
            ensure_schema(engine, "svc")
            with engine.begin() as conn:
                conn.execute(text("CREATE TABLE svc.t (id int)"))
                conn.execute(text("INSERT INTO svc.t VALUES (1)"))
                assert conn.execute(text("SELECT current_database()")).scalar_one().startswith("bsopt_test_")
            engine.dispose()
        finally:
            next(db_gen, None)  # drops the database
        data_dir = Path(make_url(server_url).query["host"])
    finally:
        next(server_gen, None)  # stops the server, deletes its directory
    assert not data_dir.exists()
