"""Command line: ``python -m bsopt_auth`` / ``bsopt-auth-server``.

Commands: ``serve`` (migrate, then run uvicorn on host/port), ``migrate``, ``seed-dev
[--client-keys-dir DIR]``, ``keys list`` / ``keys rotate`` / ``keys revoke KID``
(``rotate-keys`` is an alias of ``keys rotate``), ``clients set-jwks CLIENT_ID --file
PATH`` / ``clients show-jwks CLIENT_ID`` (a client's registered public keys, RFC 7591
``jwks``, for ``private_key_jwt``); ``clients create|list|show|delete|rotate-secret`` and
``users create|list|show|disable|enable|reset-password`` (:mod:`bsopt_auth.admin`, the
layer the ``/admin`` API uses too; every change audited).
Configuration comes from the environment (``BSOPT_AUTH_*``, see
:class:`bsopt_auth.config.AuthSettings`; ``DATABASE_URL`` also works unprefixed).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from bsopt_auth.config import AuthSettings
from bsopt_common.db import create_db_engine, make_session_factory, session_scope, wait_for_database
from bsopt_common.runtime import load_settings, run_serve
from bsopt_common.telemetry import setup_logging

cli = typer.Typer(add_completion=False, no_args_is_help=True, help="bsopt authorization server")


def _settings() -> AuthSettings:
    settings = load_settings(AuthSettings)
    setup_logging(settings.service_name, environment=settings.environment)
    return settings


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

    settings = _settings()
    engine = _engine(settings)
    try:
        wait_for_database(engine)
        run_migrations(engine)
    finally:
        engine.dispose()
    typer.echo("auth schema is up to date")


@cli.command("seed-dev")
def seed_dev_command(
    client_keys_dir: Path | None = typer.Option(
        None, "--client-keys-dir", file_okay=False,
        help="Folder of <client_id>.jwks.json PUBLIC keys: each service client with a file there is "
             "registered for private_key_jwt with them (no secret). Default: BSOPT_AUTH_SEED_CLIENT_KEYS_DIR.",
    ),
) -> None:
    """Create the demo user and the suite's dev clients (idempotent; dev/test only)."""
    from bsopt_auth.db import migrate as run_migrations
    from bsopt_auth.seed import read_client_keys_dir, seed_dev

    settings = _settings()
    _refuse_outside_dev(settings)
    keys_dir = client_keys_dir if client_keys_dir is not None else settings.seed_client_keys_dir
    try:
        client_jwks = read_client_keys_dir(keys_dir) if keys_dir is not None else None
    except ValueError as exc:
        typer.echo(f"seed-dev: {exc}", err=True)
        raise typer.Exit(2) from None
    engine = _engine(settings)
    try:
        wait_for_database(engine)
        run_migrations(engine)
        created = seed_dev(make_session_factory(engine), client_jwks)
    finally:
        engine.dispose()
    typer.echo(f"seeded: users={created['users']} clients={created['clients']} "
               f"private_key_jwt={sorted(client_jwks or {})}")


keys_cli = typer.Typer(no_args_is_help=True, help="Signing keys: list, rotate, revoke.")
cli.add_typer(keys_cli, name="keys")


def _key_session_factory(settings: AuthSettings) -> tuple[Engine, sessionmaker[Session]]:
    from bsopt_auth.bootstrap import configure_keys
    from bsopt_auth.db import migrate as run_migrations

    try:
        configure_keys(settings)
    except ValueError as exc:
        typer.echo(f"key-encryption key: {exc}", err=True)
        raise typer.Exit(2) from None
    engine = _engine(settings)
    wait_for_database(engine)
    run_migrations(engine)
    return engine, make_session_factory(engine)


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value else "-"


@keys_cli.command("list")
def keys_list() -> None:
    """Every signing key: kid, alg, status, created / deactivated / retired times."""
    from bsopt_auth.rfc7517 import list_keys

    settings = _settings()
    engine = _engine(settings)
    try:
        wait_for_database(engine)
        with session_scope(make_session_factory(engine)) as session:
            keys = list_keys(session)
    finally:
        engine.dispose()
    typer.echo(f"{'kid':<45} {'alg':<6} {'status':<9} {'created':<21} {'deactivated':<21} retired")
    for k in keys:
        typer.echo(f"{k.kid:<45} {k.alg:<6} {k.status:<9} {_when(k.created_at):<21} "
                   f"{_when(k.deactivated_at):<21} {_when(k.retired_at)}")


@keys_cli.command("rotate")
def keys_rotate() -> None:
    """Make a new active signing key; the old one stays published as ``previous`` for the
    verification window (longest token lifetime + leeway), without its private part."""
    from bsopt_auth.admin import rotate_key

    settings = _settings()
    engine, factory = _key_session_factory(settings)
    try:
        kid = rotate_key(factory, settings)
    finally:
        engine.dispose()
    typer.echo(f"new active signing key kid={kid}")


@keys_cli.command("revoke")
def keys_revoke(kid: str = typer.Argument(..., help="The kid to withdraw.")) -> None:
    """Withdraw a key now: removed from the JWKS (verifiers drop it within the JWKS
    max-age); revoking the active key rotates first."""
    from bsopt_auth.admin import NotFoundError, revoke_key

    settings = _settings()
    engine, factory = _key_session_factory(settings)
    try:
        new_kid = revoke_key(factory, settings, kid)
    except NotFoundError:
        typer.echo(f"no signing key kid={kid}", err=True)
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    typer.echo(f"revoked signing key kid={kid}")
    if new_kid:
        typer.echo(f"new active signing key kid={new_kid}")
    typer.echo(f"verifiers stop accepting it within the JWKS max-age ({settings.jwks_max_age_seconds} s)")


@cli.command("rotate-keys")
def rotate_keys() -> None:
    """Alias of ``keys rotate``."""
    keys_rotate()


clients_cli = typer.Typer(no_args_is_help=True,
                          help="OAuth clients: create, list, show, delete, rotate-secret, set-jwks, show-jwks.")
cli.add_typer(clients_cli, name="clients")
users_cli = typer.Typer(no_args_is_help=True, help="Users: create, list, show, disable, enable, reset-password.")
cli.add_typer(users_cli, name="users")


@contextlib.contextmanager
def _admin_session() -> Iterator[tuple[AuthSettings, sessionmaker[Session]]]:
    """Settings and a session factory over the migrated database; an AdminError becomes
    exit 1 (not found) or 2 (refused), its message on stderr."""
    from bsopt_auth import admin
    from bsopt_auth.db import migrate as run_migrations

    settings = _settings()
    engine = _engine(settings)
    try:
        wait_for_database(engine)
        run_migrations(engine)
        yield settings, make_session_factory(engine)
    except admin.AdminError as exc:
        typer.echo(f"refused: {exc}", err=True)
        raise typer.Exit(1 if isinstance(exc, admin.NotFoundError) else 2) from None
    finally:
        engine.dispose()


def _echo_client(view: Any) -> None:
    d = view.to_dict()
    for name in ("client_id", "client_type", "token_endpoint_auth_method", "grant_types", "redirect_uris",
                 "scopes", "resources", "jwks_kids", "created_at"):
        value = d[name]
        typer.echo(f"{name}: {' '.join(value) if isinstance(value, list) else value}")


def _split(values: list[str] | None) -> list[str]:
    return [v for item in values or [] for v in item.replace(",", " ").split()]


@clients_cli.command("create")
def clients_create(
    client_id: str = typer.Argument(..., help="The new client's id."),
    client_type: str = typer.Option("confidential", "--type", help="public or confidential."),
    grant_types: list[str] = typer.Option([], "--grant-type", help="Repeatable (or comma-separated): "
                                          "authorization_code, refresh_token, client_credentials, device_code "
                                          "URN, token-exchange URN."),
    redirect_uris: list[str] = typer.Option([], "--redirect-uri", help="Repeatable."),
    scopes: list[str] = typer.Option([], "--scope", help="Allowed scopes; repeatable or space-separated."),
    resources: list[str] = typer.Option([], "--resource", help="Allowed resources (RFC 8707); repeatable."),
    auth_method: str | None = typer.Option(None, "--auth-method",
                                           help="client_secret_basic (default for confidential), "
                                                "client_secret_post, private_key_jwt (with --jwks-file), none."),
    jwks_file: Path | None = typer.Option(None, "--jwks-file", exists=True, dir_okay=False, readable=True,
                                          help="PUBLIC keys for private_key_jwt (a JWK Set or one JWK)."),
) -> None:
    """Register a client (RFC 7591 metadata). A secret client's generated secret is
    printed ONCE; only its digest is stored."""
    from bsopt_auth import admin

    jwks = None
    if jwks_file is not None:
        try:
            jwks = json.loads(jwks_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            typer.echo(f"cannot read {jwks_file}: {type(exc).__name__}", err=True)
            raise typer.Exit(2) from None
        auth_method = auth_method or "private_key_jwt"
    with _admin_session() as (settings, factory):
        created = admin.create_client(
            factory, settings, client_id, client_type=client_type, grant_types=_split(grant_types),
            redirect_uris=_split(redirect_uris), scopes=_split(scopes), resources=_split(resources),
            auth_method=auth_method, jwks=jwks)
    _echo_client(created.client)
    if created.client_secret is not None:
        typer.echo(f"client_secret: {created.client_secret}")
        typer.echo("(shown once: store it now; only its digest is kept)", err=True)


@clients_cli.command("list")
def clients_list() -> None:
    """Every client: id, type, auth method, grant types (never a secret)."""
    from bsopt_auth import admin

    with _admin_session() as (_, factory):
        views = admin.list_clients(factory)
    typer.echo(f"{'client_id':<32} {'type':<13} {'auth_method':<20} grant_types")
    for v in views:
        typer.echo(f"{v.client_id:<32} {v.client_type:<13} {v.token_endpoint_auth_method:<20} "
                   f"{' '.join(v.grant_types)}")


@clients_cli.command("show")
def clients_show(client_id: str = typer.Argument(...)) -> None:
    """A client's registration (never its secret)."""
    from bsopt_auth import admin

    with _admin_session() as (_, factory):
        view = admin.get_client(factory, client_id)
    _echo_client(view)


@clients_cli.command("delete")
def clients_delete(client_id: str = typer.Argument(...)) -> None:
    """Delete a client with its codes and tokens."""
    from bsopt_auth import admin

    with _admin_session() as (settings, factory):
        admin.delete_client(factory, settings, client_id)
    typer.echo(f"deleted client {client_id}")


@clients_cli.command("rotate-secret")
def clients_rotate_secret(client_id: str = typer.Argument(...)) -> None:
    """Generate a new secret (printed ONCE); the old one stops working."""
    from bsopt_auth import admin

    with _admin_session() as (settings, factory):
        secret = admin.rotate_client_secret(factory, settings, client_id)
    typer.echo(f"client_secret: {secret}")
    typer.echo("(shown once: store it now; the previous secret no longer works)", err=True)


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    value: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return value


def _echo_user(view: Any) -> None:
    typer.echo(f"{view.id}  {view.username}  created={view.created_at}  "
               f"disabled={view.disabled_at or '-'}")


@users_cli.command("create")
def users_create(
    username: str = typer.Argument(...),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from stdin."),
) -> None:
    """Create a user; the password is prompted for (never echoed) or read from stdin."""
    from bsopt_auth import admin

    password = _read_password(password_stdin)
    with _admin_session() as (settings, factory):
        view = admin.create_user(factory, settings, username, password)
    _echo_user(view)


@users_cli.command("list")
def users_list() -> None:
    """Every user: id, username, created, disabled."""
    from bsopt_auth import admin

    with _admin_session() as (_, factory):
        for view in admin.list_users(factory):
            _echo_user(view)


@users_cli.command("show")
def users_show(user: str = typer.Argument(..., help="User id or username.")) -> None:
    from bsopt_auth import admin

    with _admin_session() as (_, factory):
        _echo_user(admin.get_user(factory, user))


@users_cli.command("disable")
def users_disable(user: str = typer.Argument(..., help="User id or username.")) -> None:
    """No login, refresh, device approval or token exchange; revokes their refresh tokens."""
    from bsopt_auth import admin

    with _admin_session() as (settings, factory):
        _echo_user(admin.set_user_disabled(factory, settings, user, True))


@users_cli.command("enable")
def users_enable(user: str = typer.Argument(..., help="User id or username.")) -> None:
    from bsopt_auth import admin

    with _admin_session() as (settings, factory):
        _echo_user(admin.set_user_disabled(factory, settings, user, False))


@users_cli.command("reset-password")
def users_reset_password(
    user: str = typer.Argument(..., help="User id or username."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from stdin."),
) -> None:
    """Set a new password (prompted, never echoed); revokes the user's refresh tokens."""
    from bsopt_auth import admin

    password = _read_password(password_stdin)
    with _admin_session() as (settings, factory):
        _echo_user(admin.reset_password(factory, settings, user, password))


@clients_cli.command("set-jwks")
def clients_set_jwks(
    client_id: str = typer.Argument(..., help="The confidential client to register keys for."),
    file: Path = typer.Option(..., "--file", exists=True, dir_okay=False, readable=True,
                              help="A JWK Set or a single JWK holding PUBLIC keys only."),
) -> None:
    """Register the client's public keys (replacing any before) and switch it to
    private_key_jwt: its client secret stops working. A file holding a private key is
    refused: the private key stays with the service."""
    from bsopt_auth.admin import InvalidInputError, NotFoundError, set_client_jwks
    from bsopt_auth.db import migrate as run_migrations
    from bsopt_auth.rfc7591 import InvalidClientMetadataError, load_client_jwks

    try:
        jwks = load_client_jwks(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        typer.echo(f"cannot read {file}: {type(exc).__name__}", err=True)
        raise typer.Exit(2) from None
    except InvalidClientMetadataError as exc:
        typer.echo(f"refused {file}: {exc}", err=True)
        raise typer.Exit(2) from None
    settings = _settings()
    engine = _engine(settings)
    try:
        wait_for_database(engine)
        run_migrations(engine)
        set_client_jwks(make_session_factory(engine), settings, client_id, jwks)
    except NotFoundError:
        typer.echo(f"no client {client_id!r}", err=True)
        raise typer.Exit(1) from None
    except InvalidInputError as exc:
        typer.echo(f"refused: {exc}", err=True)
        raise typer.Exit(2) from None
    finally:
        engine.dispose()
    kids = ", ".join(k["kid"] for k in jwks["keys"])
    typer.echo(f"client {client_id}: registered {len(jwks['keys'])} public key(s) kid={kids}; "
               "token_endpoint_auth_method=private_key_jwt (its client secret no longer works)")
    typer.echo(f"published at {settings.client_jwks_endpoint_url(client_id)}")


@clients_cli.command("show-jwks")
def clients_show_jwks(client_id: str = typer.Argument(..., help="The client whose keys to show.")) -> None:
    """Print the client's registered public keys (a JWK Set, public members only)."""
    from bsopt_auth.models import Client
    from bsopt_auth.rfc7591 import public_jwks

    settings = _settings()
    engine = _engine(settings)
    try:
        wait_for_database(engine)
        with session_scope(make_session_factory(engine)) as session:
            client = session.get(Client, client_id)
            found = (client.token_endpoint_auth_method, client.jwks) if client is not None else None
    finally:
        engine.dispose()
    if found is None:
        typer.echo(f"no client {client_id!r}", err=True)
        raise typer.Exit(1)
    method, stored = found
    if not stored:
        typer.echo(f"client {client_id} has no registered keys (token_endpoint_auth_method={method})", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps(public_jwks(stored), indent=2))


@cli.command()
def serve(
    host: str | None = typer.Option(None, help="Override BSOPT_AUTH_HOST."),
    port: int | None = typer.Option(None, help="Override BSOPT_AUTH_PORT."),
    seed_dev: bool | None = typer.Option(None, "--seed-dev/--no-seed-dev",
                                         help="Override BSOPT_AUTH_SEED_DEV_ON_START."),
) -> None:
    """Migrate, make sure a signing key exists, then serve HTTP until SIGINT/SIGTERM."""
    from bsopt_auth.bootstrap import serve as serve_auth
    from bsopt_auth.bootstrap import tune_interpreter

    settings = load_settings(AuthSettings)
    overrides = {k: v for k, v in (("host", host), ("port", port), ("seed_dev_on_start", seed_dev)) if v is not None}
    settings = settings.model_copy(update=overrides)
    if settings.seed_dev_on_start:
        _refuse_outside_dev(settings)
    tune_interpreter(settings)
    run_serve(settings, serve_auth)


def main() -> None:
    """Console script entry point (``bsopt-auth-server``)."""
    cli()


if __name__ == "__main__":
    main()
