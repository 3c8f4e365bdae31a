"""Client authentication at the token endpoint (RFC 6749 §2.3, OAuth 2.1 §2.4).

Methods (RFC 7591 names): ``client_secret_basic`` (HTTP Basic, form-urlencoded id and
secret), ``client_secret_post`` (``client_id`` + ``client_secret`` in the body),
``private_key_jwt`` (RFC 7523 §2.2: ``client_assertion_type`` + ``client_assertion``, a
JWT signed with a key registered for the client; :mod:`bsopt_auth.rfc7523`) and ``none``
(public clients: ``client_id`` only). A client registered for a secret method may use
either secret method and nothing else; a ``private_key_jwt`` client only an assertion
(it has no secret). Using two methods at once is ``invalid_request``; any failure is
``invalid_client``. Unknown clients cost one dummy argon2 verification.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote_plus

from sqlalchemy.orm import Session

from bsopt_auth.models import Client
from bsopt_auth.passwords import verify_secret
from bsopt_auth.rfc6749.errors import InvalidClientError, InvalidRequestError
from bsopt_auth.rfc7523 import AssertionPolicy, check_assertion_parameters, verify_client_assertion
from bsopt_auth.rfc7591 import PRIVATE_KEY_JWT

AUTH_METHODS = ("client_secret_basic", "client_secret_post", PRIVATE_KEY_JWT, "none")
SECRET_METHODS = ("client_secret_basic", "client_secret_post")


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

    client = session.get(Client, client_id)
    if method == "none":
        if client is None or not client.is_public:
            raise InvalidClientError("client authentication failed")
        return AuthenticatedClient(client, method)

    stored = client.client_secret_hash if client is not None and not client.is_public else None
    ok = verify_secret(stored, secret or "")  # dummy verification when unknown or public
    if not ok or client is None or client.token_endpoint_auth_method not in SECRET_METHODS:
        raise InvalidClientError("client authentication failed")
    return AuthenticatedClient(client, method)


__all__ = ["AUTH_METHODS", "SECRET_METHODS", "AuthenticatedClient", "authenticate_client",
           "parse_basic_authorization"]
