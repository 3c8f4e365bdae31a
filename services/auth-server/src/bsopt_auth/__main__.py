"""Command line: ``python -m bsopt_auth`` / ``bsopt-auth-server``.

Commands: ``serve`` (migrate, then run uvicorn on host/port), ``migrate``, ``seed-dev``,
``rotate-keys``. Configuration comes from the environment (``BSOPT_AUTH_*``, see
:class:`bsopt_auth.config.AuthSettings`; ``DATABASE_URL`` also works unprefixed).
"""

from __future__ import annotations

import logging

import typer
from sqlalchemy import Engine

from bsopt_common.db import create_db_engine, make_session_factory, wait_for_database

from bsopt_auth.config import AuthSettings

cli = typer.Typer(add_completion=False, no_args_is_help=True, help="bsopt authorization server")
log = logging.getLogger("bsopt_auth")


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _engine(settings: AuthSettings) -> Engine:
    return create_db_engine(settings.require_database_url(), application_name="bsopt-auth-server")


def _refuse_outside_dev(settings: AuthSettings) -> None:
    if settings.environment not in ("dev", "test"):
        typer.echo(f"refusing to seed dev credentials in environment={settings.environment!r}", err=True)
        raise typer.Exit(2)


@cli.command()
def migrate() -> None:
    """Create or upgrade the ``auth`` schema."""
    from bsopt_auth.db import migrate as run_migrations

    _setup_logging()
    settings = AuthSettings()
    engine = _engine(settings)
    try:
        wait_for_database(engine)
        run_migrations(engine)
    finally:
        engine.dispose()
    typer.echo("auth schema is up to date")


@cli.command("seed-dev")
def seed_dev_command() -> None:
    """Create the demo user and the suite's dev clients (idempotent; dev/test only)."""
    from bsopt_auth.db import migrate as run_migrations
    from bsopt_auth.seed import seed_dev

    _setup_logging()
    settings = AuthSettings()
    _refuse_outside_dev(settings)
    engine = _engine(settings)
    try:
        wait_for_database(engine)
        run_migrations(engine)
        created = seed_dev(make_session_factory(engine))
    finally:
        engine.dispose()
    typer.echo(f"seeded: users={created['users']} clients={created['clients']}")


@cli.command("rotate-keys")
def rotate_keys() -> None:
    """Make a new active signing key; the old one stays published as ``previous``."""
    from bsopt_auth.rfc7517 import rotate_signing_key

    _setup_logging()
    settings = AuthSettings()
    engine = _engine(settings)
    try:
        kid = rotate_signing_key(make_session_factory(engine), settings.signing_alg)
    finally:
        engine.dispose()
    typer.echo(f"new active signing key kid={kid}")


@cli.command()
def serve(
    host: str | None = typer.Option(None, help="Override BSOPT_AUTH_HOST."),
    port: int | None = typer.Option(None, help="Override BSOPT_AUTH_PORT."),
    seed_dev: bool | None = typer.Option(None, "--seed-dev/--no-seed-dev", help="Override BSOPT_AUTH_SEED_DEV_ON_START."),
) -> None:
    """Migrate, make sure a signing key exists, then serve HTTP with uvicorn."""
    import uvicorn

    from bsopt_auth.app import create_app
    from bsopt_auth.db import migrate as run_migrations
    from bsopt_auth.rfc7517 import ensure_active_key
    from bsopt_auth.seed import seed_dev as run_seed

    _setup_logging()
    settings = AuthSettings()
    if seed_dev is None:
        seed_dev = settings.seed_dev_on_start
    if seed_dev:
        _refuse_outside_dev(settings)
    engine = _engine(settings)
    wait_for_database(engine)
    run_migrations(engine)
    factory = make_session_factory(engine)
    ensure_active_key(factory, settings.signing_alg)
    if seed_dev:
        run_seed(factory)
    app = create_app(settings, engine)
    try:
        uvicorn.run(app, host=host or settings.host, port=port or settings.port, log_level="info",
                    proxy_headers=False)
    finally:
        engine.dispose()


def main() -> None:
    """Console script entry point (``bsopt-auth-server``)."""
    cli()


if __name__ == "__main__":
    main()
