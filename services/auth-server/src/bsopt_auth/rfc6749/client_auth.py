"""Client authentication at the token endpoint (RFC 6749 §2.3, OAuth 2.1 §2.4).

Methods (RFC 7591 names): ``client_secret_basic`` (HTTP Basic, form-urlencoded id and
secret), ``client_secret_post`` (``client_id`` + ``client_secret`` in the body),
``private_key_jwt`` (RFC 7523 §2.2: ``client_assertion_type`` + ``client_assertion``, a
JWT signed with a key registered for the client; :mod:`bsopt_auth.rfc7523`) and ``none``
(public clients: ``client_id`` only). A client registered for a secret method may use
either secret method and nothing else; a ``private_key_jwt`` client only an assertion
(it has no secret). Using two methods at once is ``invalid_request``; any failure is
``invalid_client``.

Secrets are checked against their SHA-256 digest in constant time
(:func:`bsopt_auth.passwords.verify_client_secret`); unknown and public clients cost one
compare against a dummy digest. A client still stored with a legacy argon2 hash is
verified with it once, outside any database connection, and its row upgraded to the digest.

A secret client's row may be kept in memory for ``client_cache_seconds``
(:func:`configure_client_cache`; off unless configured, ``serve`` sets it from the
settings): then a token request with a secret needs no database round trip, and a change
to the client (new secret, removal) reaches this process within that time.
"""

from __future__ import annotations

import base64
import binascii
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote_plus

from sqlalchemy import update
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from bsopt_auth.models import Client
from bsopt_auth.passwords import client_secret_needs_upgrade, hash_client_secret, verify_client_secret
from bsopt_auth.rfc6749.errors import InvalidClientError, InvalidRequestError
from bsopt_auth.rfc7523 import AssertionPolicy, check_assertion_parameters, verify_client_assertion
from bsopt_auth.rfc7591 import PRIVATE_KEY_JWT
from bsopt_common.db import database_key

AUTH_METHODS = ("client_secret_basic", "client_secret_post", PRIVATE_KEY_JWT, "none")
SECRET_METHODS = ("client_secret_basic", "client_secret_post")


_client_cache_seconds = 0.0
_client_cache_lock = threading.Lock()
#: (database URL, client_id) -> (detached client row, monotonic time it was read)
_client_cache: dict[tuple[str, str], tuple[Client, float]] = {}


def configure_client_cache(seconds: float) -> None:
    """Keep secret clients' rows in memory for ``seconds`` (0: read every time)."""
    global _client_cache_seconds
    with _client_cache_lock:
        _client_cache_seconds = max(0.0, seconds)
        _client_cache.clear()


def _cached_client(session: Session, client_id: str) -> Client | None:
    """The client, from the cache when fresh (attached to ``session`` without a query),
    else read from the database."""
    if _client_cache_seconds <= 0:
        return session.get(Client, client_id)
    where = (database_key(session.get_bind()), client_id)
    now = time.monotonic()
    cached = _client_cache.get(where)
    if cached is not None and now - cached[1] < _client_cache_seconds:
        return session.merge(cached[0], load=False)
    client = session.get(Client, client_id)
    if client is not None and client.client_secret_hash and not client_secret_needs_upgrade(client.client_secret_hash):
        snapshot = Client(**{c.key: getattr(client, c.key) for c in Client.__mapper__.column_attrs})
        make_transient_to_detached(snapshot)  # a detached copy: merge(load=False) attaches it queryless
        with _client_cache_lock:
            _client_cache[where] = (snapshot, now)
    return client


@dataclass(frozen=True)
class AuthenticatedClient:
    client: Client
    method: str


def parse_basic_authorization(header: str) -> tuple[str, str]:
    """Decode ``Authorization: Basic ...`` into (client_id, client_secret) (RFC 6749 §2.3.1:
    both are application/x-www-form-urlencoded before base64)."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        raise InvalidClientError("unsupported authorization scheme")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidClientError("malformed basic credentials") from None
    client_id, sep, secret = decoded.partition(":")
    if not sep or not client_id:
        raise InvalidClientError("malformed basic credentials")
    client_id, secret = unquote_plus(client_id), unquote_plus(secret)
    if "\x00" in client_id or "\x00" in secret:  # Postgres text cannot hold it; no client has it
        raise InvalidClientError("malformed basic credentials")
    return client_id, secret


def authenticate_client(
    session: Session,
    authorization: str | None,
    form: Mapping[str, str],
    assertion_policy: AssertionPolicy | None = None,
) -> AuthenticatedClient:
    """Identify and authenticate the client of a token request. ``assertion_policy``
    enables ``private_key_jwt`` (without it an assertion is ``invalid_client``)."""
    form_id = form.get("client_id")
    form_secret = form.get("client_secret")
    assertion_type = form.get("client_assertion_type")
    assertion = form.get("client_assertion")
    if assertion_type is not None or assertion is not None:
        if authorization or form_secret is not None:
            raise InvalidRequestError("use only one client authentication method")
        assertion = check_assertion_parameters(assertion_type, assertion)
        if assertion_policy is None:
            raise InvalidClientError("private_key_jwt is not supported here")
        client = verify_client_assertion(session, assertion_policy, assertion, form_id)
        return AuthenticatedClient(client, PRIVATE_KEY_JWT)
    if authorization:
        if form_secret is not None:
            raise InvalidRequestError("use only one client authentication method")
        client_id, secret = parse_basic_authorization(authorization)
        if form_id is not None and form_id != client_id:
            raise InvalidRequestError("client_id does not match the authenticated client")
        method: str = "client_secret_basic"
    elif form_secret is not None:
        if not form_id:
            raise InvalidClientError("client_id is required")
        client_id, secret, method = form_id, form_secret, "client_secret_post"
    elif form_id:
        client_id, secret, method = form_id, None, "none"
    else:
        raise InvalidClientError("client authentication is required")

    client = session.get(Client, client_id) if method == "none" else _cached_client(session, client_id)
    if method == "none":
        if client is None or not client.is_public:
            raise InvalidClientError("client authentication failed")
        return AuthenticatedClient(client, method)

    stored = client.client_secret_hash if client is not None and not client.is_public else None
    legacy = stored is not None and client_secret_needs_upgrade(stored)
    if legacy:
        session.commit()  # return the connection before the slow argon2 verification
    ok = verify_client_secret(stored, secret or "")  # dummy compare when unknown or public
    if not ok or client is None or client.token_endpoint_auth_method not in SECRET_METHODS:
        raise InvalidClientError("client authentication failed")
    if legacy:
        _upgrade_secret(session, client, stored, secret or "")
    return AuthenticatedClient(client, method)


def _upgrade_secret(session: Session, client: Client, old: str | None, secret: str) -> None:
    """Replace a verified legacy (argon2) secret hash with the digest, unless the row
    changed meanwhile."""
    new = hash_client_secret(secret)
    session.execute(
        update(Client).where(Client.client_id == client.client_id, Client.client_secret_hash == old)
        .values(client_secret_hash=new).execution_options(synchronize_session=False)
    )
    session.commit()
    set_committed_value(client, "client_secret_hash", new)  # in line with the row, not dirty


__all__ = ["AUTH_METHODS", "SECRET_METHODS", "AuthenticatedClient", "authenticate_client",
           "configure_client_cache", "parse_basic_authorization"]
