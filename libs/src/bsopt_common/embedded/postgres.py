"""Embedded PostgreSQL: a real server from the ``pgserver`` wheel (PostgreSQL 16 binaries).

Install with the ``embedded`` extra (``bsopt-libs[embedded]``). The server:

* keeps its data in a directory you choose (:meth:`EmbeddedPostgres.start`) or in a
  temporary one removed afterwards (:meth:`EmbeddedPostgres.temporary`);
* listens on a **unix socket only** (no TCP port) inside the data directory (or, if
  that path is too long for a socket, under the user runtime dir), on POSIX;
  pgserver uses 127.0.0.1 and a free port on Windows;
* trusts local connections: user ``postgres``, no password, database ``postgres``.

URLs look like ``postgresql+psycopg://postgres@/postgres?host=/path/to/socket-dir``;
SQLAlchemy hands ``host`` to psycopg/libpq, which treats a path as a socket directory,
and :func:`bsopt_common.db.normalise_url` treats the empty URL host as local (no
``sslmode=require``).

Running as root: PostgreSQL refuses to run as root, so pgserver then runs initdb,
pg_ctl and the server as a system user ``pgserver`` (created with ``useradd`` if
missing), chowns the data directory to it and adds ``g+rx,o+rx`` to every ancestor
directory of the data directory and to pgserver's own binaries. As a normal user
none of that happens.

Lifecycle: the server is a separate ``postgres`` process. :meth:`EmbeddedPostgres.stop`
(and pgserver's ``atexit`` hook) stop it when this process holds the last pgserver
handle on the data directory; a server left running by a killed process is reused
by the next :meth:`EmbeddedPostgres.start` on the same directory.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING

from sqlalchemy.engine import make_url

if TYPE_CHECKING:
    from pgserver import PostgresServer

log = logging.getLogger(__name__)

PGSERVER_SYSTEM_USER = "pgserver"
"""System user pgserver runs PostgreSQL as when the calling process is root."""


class EmbeddedPostgresError(RuntimeError):
    """pgserver is missing or cannot run here."""


def _import_pgserver() -> ModuleType:
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, root):
            # pgserver then keeps its lock file under /tmp/runtime-$UID, which is fine.
            warnings.simplefilter("ignore")
            import pgserver
    except ImportError as exc:
        raise EmbeddedPostgresError(
            "the embedded Postgres needs the pgserver wheel: pip install 'bsopt-libs[embedded]'"
        ) from exc
    return pgserver


def _check_root_prerequisites() -> None:
    """As root, pgserver needs the ``pgserver`` system user or ``useradd`` to create it."""
    if platform.system() == "Windows" or os.geteuid() != 0:
        return
    import pwd

    try:
        pwd.getpwnam(PGSERVER_SYSTEM_USER)
    except KeyError:
        if shutil.which("useradd") is None:
            raise EmbeddedPostgresError(
                "running as root: PostgreSQL must run as another user, and pgserver creates the "
                f"system user {PGSERVER_SYSTEM_USER!r} with useradd, which is not installed; "
                f"create the user yourself or run as a non-root user"
            ) from None


def _prune_dead_handles(pgdata: Path) -> None:
    """Drop pids of dead processes from pgserver's handle list (``.handle_pids.json``).

    pgserver stops the server only when the exiting process is the last pid in that
    list; a process killed without running its ``atexit`` hook would otherwise keep
    the server from ever being stopped by later handles.
    """
    path = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    import psutil

    alive = [pid for pid in pids if isinstance(pid, int) and psutil.pid_exists(pid)]
    if alive != pids:
        path.write_text(json.dumps(alive))


class EmbeddedPostgres:
    """A pgserver-managed PostgreSQL server; construct with :meth:`start` or :meth:`temporary`."""

    def __init__(self, server: PostgresServer, data_dir: Path, *, temp_root: Path | None = None) -> None:
        self._server: PostgresServer | None = server
        self._data_dir = data_dir
        self._temp_root = temp_root
        libpq = make_url(server.get_uri())
        self._host = libpq.host
        self._port = libpq.port
        socket_dir = libpq.query.get("host")
        if isinstance(socket_dir, tuple):  # ?host=a&host=b: libpq's multi-host list, never pgserver's
            raise EmbeddedPostgresError(f"pgserver reported several socket directories: {socket_dir}")
        self._socket_dir = socket_dir

    @classmethod
    def start(cls, data_dir: Path | str) -> EmbeddedPostgres:
        """Start (or attach to the already running) server whose data live in ``data_dir``.

        ``data_dir`` is the PGDATA directory itself: created (with parents) if missing
        and initialised by ``initdb`` if it has no ``PG_VERSION``; an existing non-empty
        directory without ``PG_VERSION`` makes initdb fail. Data persist across
        :meth:`stop`. A second ``start`` on the same directory in the same process
        shares pgserver's handle: stopping either stops the server. Blocks until the
        server accepts connections (pg_ctl waits up to 10 s). Raises
        :class:`EmbeddedPostgresError` (pgserver missing, root without ``useradd``),
        ``subprocess.CalledProcessError`` / ``subprocess.TimeoutExpired`` from initdb or
        pg_ctl (the server log is in ``data_dir/log``).
        """
        return cls._start(Path(data_dir), cleanup_mode="stop")

    @classmethod
    @contextmanager
    def temporary(cls) -> Iterator[EmbeddedPostgres]:
        """A server in a fresh temporary directory; stopped and deleted on exit."""
        root = Path(tempfile.mkdtemp(prefix="bsopt-pg-"))
        try:
            pg = cls._start(root / "pgdata", cleanup_mode="delete", temp_root=root)
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        try:
            yield pg
        finally:
            pg.stop()

    @classmethod
    def _start(cls, data_dir: Path, *, cleanup_mode: str, temp_root: Path | None = None) -> EmbeddedPostgres:
        pgserver = _import_pgserver()
        _check_root_prerequisites()
        data_dir = data_dir.expanduser().resolve()
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        lock = getattr(pgserver.PostgresServer, "_lock", None)  # pgserver's inter-process lock
        if lock is not None:
            with lock:
                _prune_dead_handles(data_dir)
        else:
            _prune_dead_handles(data_dir)
        server = pgserver.get_server(data_dir, cleanup_mode=cleanup_mode)
        pg = cls(server, data_dir, temp_root=temp_root)
        log.info("embedded Postgres (pgserver) running for %s at %s", data_dir, pg.url)
        return pg

    @property
    def url(self) -> str:
        """SQLAlchemy URL of database ``postgres`` as user ``postgres``
        (``postgresql+psycopg://postgres@/postgres?host=/socket/dir`` on POSIX)."""
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        """SQLAlchemy URL (``postgresql+psycopg://``) of ``database`` on this server."""
        return self._url("postgresql+psycopg", database)

    @property
    def dsn(self) -> str:
        """libpq connection URI (``postgresql://...``) of database ``postgres``, for
        ``psycopg.connect``, ``psql`` and other non-SQLAlchemy clients."""
        return self._url("postgresql", "postgres")

    def _url(self, drivername: str, database: str) -> str:
        from sqlalchemy.engine import URL

        query = {"host": self._socket_dir} if self._socket_dir else {}
        u = URL.create(
            drivername, username="postgres", host=self._host, port=self._port, database=database, query=query
        )
        return u.render_as_string(hide_password=False)

    @property
    def data_dir(self) -> Path:
        """The PGDATA directory (server log: ``data_dir / "log"``)."""
        return self._data_dir

    @property
    def socket_dir(self) -> Path | None:
        """Directory of the unix socket ``.s.PGSQL.5432``; None when on TCP (Windows)."""
        return Path(self._socket_dir) if self._socket_dir else None

    @property
    def running(self) -> bool:
        return self._server is not None

    def stop(self) -> None:
        """Stop the server (``pg_ctl -w stop``) unless another live process also holds a
        pgserver handle on it; a :meth:`temporary` server's directory is deleted.
        Idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.cleanup()
        if self._temp_root is not None:
            shutil.rmtree(self._temp_root, ignore_errors=True)
            self._temp_root = None

    def __enter__(self) -> EmbeddedPostgres:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedPostgres(data_dir={str(self._data_dir)!r}, url={self.url!r}, running={self.running})"
