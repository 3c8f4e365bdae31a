"""Administration of clients, users and signing keys: the one service layer under both
the command line (``python -m bsopt_auth clients|users|keys ...``) and the HTTP API
(``/admin/...``, :mod:`bsopt_auth.routes.admin`), so both do exactly the same thing.

Every change is audited (:mod:`bsopt_auth.audit`) in the transaction that makes it.

Clients (RFC 7591 §2 metadata): ``client_type`` public (``token_endpoint_auth_method``
``none``) or confidential (``client_secret_basic``, ``client_secret_post``, or
``private_key_jwt`` with a JWKS of public keys, RFC 7523). A generated client secret is
``secrets.token_urlsafe(32)`` (256 bits), returned once and stored only as its
``sha256$`` digest (:func:`bsopt_auth.passwords.hash_client_secret`).

Users: passwords are argon2id (:func:`bsopt_auth.passwords.hash_secret`). Disabling a
user (``disabled_at``) revokes every refresh-token family of theirs (RFC 9700 §4.14:
their refresh and access tokens stop working) and makes login, device approval and
token exchange fail; resetting the password revokes the families too.

Errors: :class:`NotFoundError`, :class:`ConflictError`, :class:`InvalidInputError`
(messages never quote a secret).
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from bsopt_auth import audit
from bsopt_auth.config import AuthSettings
from bsopt_auth.models import Client, TokenFamily, User
from bsopt_auth.passwords import hash_client_secret, hash_secret
from bsopt_auth.rfc6749.refresh import REFRESH_TOKEN_GRANT_TYPE
from bsopt_auth.rfc7517 import KeyInfo, list_keys, revoke_signing_key, rotate_signing_key
from bsopt_auth.rfc7591 import PRIVATE_KEY_JWT, InvalidClientMetadataError, normalize_client_jwks
from bsopt_auth.rfc8628 import DEVICE_CODE_GRANT_TYPE
from bsopt_auth.rfc8693 import TOKEN_EXCHANGE_GRANT_TYPE
from bsopt_auth.rfc8707 import is_valid_resource
from bsopt_common.db import session_scope

#: Scope an access token needs for ``/admin`` (audience :data:`ADMIN_AUDIENCE`).
ADMIN_SCOPE = "admin"
#: RFC 8707 resource identifier of this server's admin API.
ADMIN_AUDIENCE = "urn:bsopt:auth-server"

GRANT_TYPES = ("authorization_code", REFRESH_TOKEN_GRANT_TYPE, "client_credentials", DEVICE_CODE_GRANT_TYPE,
               TOKEN_EXCHANGE_GRANT_TYPE)
#: Grants that need a confidential client.
CONFIDENTIAL_ONLY_GRANTS = ("client_credentials", TOKEN_EXCHANGE_GRANT_TYPE)
AUTH_METHODS = ("none", "client_secret_basic", "client_secret_post", PRIVATE_KEY_JWT)
_CLIENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,254}$")
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5B\x5D-\x7E]+$")  # RFC 6749 §3.3 scope-token
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024


class AdminError(Exception):
    """A refused administrative request; ``str()`` is safe to show."""


class NotFoundError(AdminError):
    pass


class ConflictError(AdminError):
    pass


class InvalidInputError(AdminError):
    pass


@dataclass(frozen=True)
class ClientView:
    """A client as administrators see it: never its secret or its hash."""

    client_id: str
    client_type: str
    token_endpoint_auth_method: str
    grant_types: list[str]
    redirect_uris: list[str]
    scopes: list[str]
    resources: list[str]
    jwks_kids: list[str]
    created_at: str

    @classmethod
    def of(cls, c: Client) -> ClientView:
        return cls(c.client_id, c.client_type, c.token_endpoint_auth_method, list(c.grant_types),
                   list(c.redirect_uris), list(c.allowed_scopes), list(c.allowed_resources),
                   [str(k.get("kid", "")) for k in (c.jwks or {}).get("keys", [])], _iso(c.created_at))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ClientCreated:
    client: ClientView
    #: The generated secret (client_secret_*), shown once; None otherwise.
    client_secret: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class UserView:
    id: str
    username: str
    created_at: str
    disabled_at: str | None

    @classmethod
    def of(cls, u: User) -> UserView:
        return cls(str(u.id), u.username, _iso(u.created_at), _iso(u.disabled_at) if u.disabled_at else None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def key_view(k: KeyInfo) -> dict[str, Any]:
    return {"kid": k.kid, "alg": k.alg, "status": k.status, "created_at": _iso(k.created_at),
            "deactivated_at": _iso(k.deactivated_at) if k.deactivated_at else None,
            "retired_at": _iso(k.retired_at) if k.retired_at else None}


def _iso(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value else ""


def generate_client_secret() -> str:
    """A new client secret: 256 random bits, URL-safe base64."""
    return secrets.token_urlsafe(32)


# --------------------------------------------------------------------------- clients


def _list(values: Iterable[str] | None) -> list[str]:
    return list(dict.fromkeys(v.strip() for v in (values or ()) if v and v.strip()))


def _check_client_metadata(client_type: str, method: str, grant_types: Sequence[str], redirect_uris: Sequence[str],
                           scopes: Sequence[str], resources: Sequence[str]) -> None:
    if client_type not in ("public", "confidential"):
        raise InvalidInputError("client_type must be public or confidential")
    if method not in AUTH_METHODS:
        raise InvalidInputError(f"token_endpoint_auth_method must be one of {', '.join(AUTH_METHODS)}")
    if (client_type == "public") != (method == "none"):
        raise InvalidInputError("a public client uses token_endpoint_auth_method none; a confidential one never")
    if not grant_types:
        raise InvalidInputError("at least one grant type is required")
    for g in grant_types:
        if g not in GRANT_TYPES:
            raise InvalidInputError(f"unsupported grant type {g[:100]!r}")
        if client_type == "public" and g in CONFIDENTIAL_ONLY_GRANTS:
            raise InvalidInputError(f"grant type {g} needs a confidential client")
    if "authorization_code" in grant_types and not redirect_uris:
        raise InvalidInputError("the authorization_code grant needs at least one redirect URI")
    for uri in redirect_uris:
        if not is_valid_resource(uri) or "://" not in uri:  # absolute, no fragment (RFC 6749 §3.1.2)
            raise InvalidInputError(f"redirect URI {uri[:200]!r} must be absolute and without a fragment")
    for s in scopes:
        if not _SCOPE_TOKEN.match(s):
            raise InvalidInputError(f"invalid scope token {s[:100]!r} (RFC 6749 §3.3)")
    for r in resources:
        if not is_valid_resource(r):
            raise InvalidInputError(f"resource {r[:200]!r} must be an absolute URI without a fragment (RFC 8707)")


def create_client(
    session_factory: sessionmaker[Session], settings: AuthSettings, client_id: str, *, client_type: str,
    grant_types: Iterable[str], redirect_uris: Iterable[str] = (), scopes: Iterable[str] = (),
    resources: Iterable[str] = (), auth_method: str | None = None, jwks: object | None = None,
    actor: str = "cli",
) -> ClientCreated:
    """Register a client. A ``client_secret_*`` client gets a generated secret, returned
    once. Raises InvalidInputError, ConflictError (the id exists)."""
    if not _CLIENT_ID.match(client_id or ""):
        raise InvalidInputError("client_id: 1-255 of A-Z a-z 0-9 . _ : - (starting with a letter or digit)")
    method = auth_method or ("none" if client_type == "public" else "client_secret_basic")
    grants, uris, scope_list, resource_list = (_list(grant_types), _list(redirect_uris), _list(scopes),
                                               _list(resources))
    _check_client_metadata(client_type, method, grants, uris, scope_list, resource_list)
    stored_jwks = None
    if method == PRIVATE_KEY_JWT:
        if jwks is None:
            raise InvalidInputError("private_key_jwt needs the client's public keys (a JWK Set)")
        try:
            stored_jwks = normalize_client_jwks(jwks)
        except InvalidClientMetadataError as exc:
            raise InvalidInputError(f"jwks: {exc.description}") from None
    elif jwks is not None:
        raise InvalidInputError("jwks is only for token_endpoint_auth_method private_key_jwt")
    secret = generate_client_secret() if method.startswith("client_secret_") else None
    with session_scope(session_factory) as session:
        if session.get(Client, client_id) is not None:
            raise ConflictError(f"client {client_id!r} already exists")
        client = Client(client_id=client_id, client_type=client_type, token_endpoint_auth_method=method,
                        grant_types=grants, redirect_uris=uris, allowed_scopes=scope_list,
                        allowed_resources=resource_list, jwks=stored_jwks,
                        client_secret_hash=hash_client_secret(secret) if secret else None)
        session.add(client)
        session.flush()
        session.refresh(client)
        audit.record(session, settings, audit.CLIENT_CREATED, outcome="success", client_id=client_id,
                     details={"actor": actor, "client_type": client_type, "auth_method": method,
                              "grant_types": " ".join(grants)})
        view = ClientView.of(client)
    return ClientCreated(view, secret)


def list_clients(session_factory: sessionmaker[Session]) -> list[ClientView]:
    with session_scope(session_factory) as session:
        return [ClientView.of(c) for c in session.scalars(select(Client).order_by(Client.client_id))]


def get_client(session_factory: sessionmaker[Session], client_id: str) -> ClientView:
    with session_scope(session_factory) as session:
        client = session.get(Client, client_id)
        if client is None:
            raise NotFoundError(f"no client {client_id[:255]!r}")
        return ClientView.of(client)


def delete_client(session_factory: sessionmaker[Session], settings: AuthSettings, client_id: str, *,
                  actor: str = "cli") -> None:
    """Delete a client and (FK cascade) its codes, token families and device codes."""
    if client_id == audit.AUTH_SERVER_CLIENT_ID:
        raise InvalidInputError("the auth-server's own client is managed by the server")
    with session_scope(session_factory) as session:
        client = session.get(Client, client_id)
        if client is None:
            raise NotFoundError(f"no client {client_id[:255]!r}")
        session.delete(client)
        session.flush()
        audit.record(session, settings, audit.CLIENT_DELETED, outcome="success", client_id=client_id,
                     details={"actor": actor})


def rotate_client_secret(session_factory: sessionmaker[Session], settings: AuthSettings, client_id: str, *,
                         actor: str = "cli") -> str:
    """Replace a ``client_secret_*`` client's secret; the old one stops working at once
    (within ``client_cache_seconds`` on a serving worker). Returns the new secret."""
    secret = generate_client_secret()
    with session_scope(session_factory) as session:
        client = session.get(Client, client_id)
        if client is None:
            raise NotFoundError(f"no client {client_id[:255]!r}")
        if not client.token_endpoint_auth_method.startswith("client_secret_"):
            raise InvalidInputError(f"client {client_id!r} does not authenticate with a secret "
                                    f"(token_endpoint_auth_method={client.token_endpoint_auth_method})")
        client.client_secret_hash = hash_client_secret(secret)
        audit.record(session, settings, audit.CLIENT_SECRET_ROTATED, outcome="success", client_id=client_id,
                     details={"actor": actor})
    return secret


def set_client_jwks(session_factory: sessionmaker[Session], settings: AuthSettings, client_id: str,
                    jwks: object, *, actor: str = "cli") -> dict[str, Any]:
    """Register public keys and switch the client to private_key_jwt (audited)."""
    from bsopt_auth.rfc7591 import register_client_jwks

    with session_scope(session_factory) as session:
        try:
            stored = register_client_jwks(session, client_id, jwks)
        except KeyError:
            raise NotFoundError(f"no client {client_id[:255]!r}") from None
        except InvalidClientMetadataError as exc:
            raise InvalidInputError(exc.description or exc.error) from None
        audit.record(session, settings, audit.CLIENT_CHANGED, outcome="success", client_id=client_id,
                     details={"actor": actor, "auth_method": PRIVATE_KEY_JWT})
    return stored


# --------------------------------------------------------------------------- users


def _check_password(password: str) -> None:
    if not (MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH):
        raise InvalidInputError(f"the password must have {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters")


def _user(session: Session, ref: str) -> User:
    """A user by id (UUID) or username."""
    user = None
    try:
        user = session.get(User, uuid.UUID(ref))
    except ValueError:
        pass
    if user is None:
        user = session.scalars(select(User).where(User.username == ref[:255])).one_or_none()
    if user is None:
        raise NotFoundError(f"no user {ref[:255]!r}")
    return user


def _revoke_families(session: Session, user_id: uuid.UUID) -> int:
    result = session.execute(
        update(TokenFamily).where(TokenFamily.user_id == user_id, TokenFamily.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
    )
    return int(getattr(result, "rowcount", 0) or 0)


def create_user(session_factory: sessionmaker[Session], settings: AuthSettings, username: str, password: str, *,
                actor: str = "cli") -> UserView:
    username = (username or "").strip()
    if not username or len(username) > 255 or any(c.isspace() or ord(c) < 32 for c in username):
        raise InvalidInputError("username: 1-255 characters, no whitespace or control characters")
    _check_password(password)
    password_hash = hash_secret(password)
    with session_scope(session_factory) as session:
        if session.scalars(select(User.id).where(User.username == username)).first() is not None:
            raise ConflictError(f"user {username!r} already exists")
        user = User(id=uuid.uuid4(), username=username, password_hash=password_hash)
        session.add(user)
        session.flush()
        session.refresh(user)
        audit.record(session, settings, audit.USER_CREATED, outcome="success", user_id=user.id,
                     details={"actor": actor})
        return UserView.of(user)


def list_users(session_factory: sessionmaker[Session]) -> list[UserView]:
    with session_scope(session_factory) as session:
        return [UserView.of(u) for u in session.scalars(select(User).order_by(User.username))]


def get_user(session_factory: sessionmaker[Session], ref: str) -> UserView:
    with session_scope(session_factory) as session:
        return UserView.of(_user(session, ref))


def set_user_disabled(session_factory: sessionmaker[Session], settings: AuthSettings, ref: str, disabled: bool, *,
                      actor: str = "cli") -> UserView:
    """Disable (revoking every token family of the user) or enable a user. Idempotent."""
    with session_scope(session_factory) as session:
        user = _user(session, ref)
        details: dict[str, str] = {"actor": actor}
        if disabled:
            if user.disabled_at is None:
                user.disabled_at = datetime.now(UTC)
            details["revoked_families"] = str(_revoke_families(session, user.id))
        else:
            user.disabled_at = None
        audit.record(session, settings, audit.USER_DISABLED if disabled else audit.USER_ENABLED, outcome="success",
                     user_id=user.id, details=details)
        session.flush()
        return UserView.of(user)


def reset_password(session_factory: sessionmaker[Session], settings: AuthSettings, ref: str, password: str, *,
                   actor: str = "cli") -> UserView:
    """Set a new password and revoke the user's refresh-token families."""
    _check_password(password)
    password_hash = hash_secret(password)
    with session_scope(session_factory) as session:
        user = _user(session, ref)
        user.password_hash = password_hash
        revoked = _revoke_families(session, user.id)
        audit.record(session, settings, audit.USER_PASSWORD_RESET, outcome="success", user_id=user.id,
                     details={"actor": actor, "revoked_families": str(revoked)})
        return UserView.of(user)


# --------------------------------------------------------------------------- keys


def keys(session_factory: sessionmaker[Session]) -> list[dict[str, Any]]:
    with session_scope(session_factory) as session:
        return [key_view(k) for k in list_keys(session)]


def rotate_key(session_factory: sessionmaker[Session], settings: AuthSettings, *, actor: str = "cli") -> str:
    kid = rotate_signing_key(session_factory, settings.signing_alg)
    audit.emit(settings, session_factory, audit.KEY_ROTATED, outcome="success", details={"actor": actor, "kid": kid})
    return kid


def revoke_key(session_factory: sessionmaker[Session], settings: AuthSettings, kid: str, *,
               actor: str = "cli") -> str | None:
    """Revoke ``kid`` (rotating first when it is the active key); the new kid or None."""
    try:
        new_kid = revoke_signing_key(session_factory, kid, settings.signing_alg)
    except KeyError:
        raise NotFoundError(f"no signing key kid={kid[:100]}") from None
    details = {"actor": actor, "kid": kid, **({"new_kid": new_kid} if new_kid else {})}
    audit.emit(settings, session_factory, audit.KEY_REVOKED, outcome="success", details=details)
    return new_kid


def ensure_self_client(session_factory: sessionmaker[Session], public: Mapping[str, Any]) -> None:
    """Register (or refresh) the client row ``auth-server``: confidential,
    ``private_key_jwt`` with ``public`` (the server's event-signing public keys), no
    grants; consumers verify its ``auth.audit.v1`` events against its JWKS like anyone's."""
    jwks = normalize_client_jwks(public)
    with session_scope(session_factory) as session:
        client = session.get(Client, audit.AUTH_SERVER_CLIENT_ID)
        if client is None:
            client = Client(client_id=audit.AUTH_SERVER_CLIENT_ID)
            session.add(client)
        client.client_type = "confidential"
        client.token_endpoint_auth_method = PRIVATE_KEY_JWT
        client.client_secret_hash = None
        client.jwks = jwks
        client.grant_types = []
        client.redirect_uris = []
        client.allowed_scopes = []
        client.allowed_resources = []


__all__ = [
    "ADMIN_AUDIENCE", "ADMIN_SCOPE", "AUTH_METHODS", "GRANT_TYPES", "AdminError", "ClientCreated", "ClientView",
    "ConflictError", "InvalidInputError", "NotFoundError", "UserView", "create_client", "create_user",
    "delete_client", "ensure_self_client", "generate_client_secret", "get_client", "get_user", "keys",
    "list_clients", "list_users", "reset_password", "revoke_key", "rotate_client_secret", "rotate_key",
    "set_client_jwks", "set_user_disabled",
]
