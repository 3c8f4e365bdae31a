"""Token endpoint logic (RFC 6749 §3.2, §4.1.3, §4.4; OAuth 2.1 §3.2), HTTP-agnostic.

Grants: ``authorization_code`` (with PKCE, RFC 7636), ``refresh_token`` (RFC 6749 §6,
:mod:`bsopt_auth.rfc6749.refresh`), ``client_credentials`` and token
exchange (RFC 8693, :mod:`bsopt_auth.rfc8693`) and the device code (RFC 8628,
:mod:`bsopt_auth.rfc8628`), each with any client authentication
method the client is registered for (:mod:`bsopt_auth.rfc6749.client_auth`, including
RFC 7523 ``private_key_jwt``). Every
failure raises an :class:`~bsopt_auth.rfc6749.errors.OAuth2Error` subclass; the HTTP
layer renders it as RFC 6749 §5.2 JSON.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from bsopt_auth.config import AuthSettings
from bsopt_auth.models import AuthorizationCode, Client, TokenFamily
from bsopt_auth.oidc import OPENID_SCOPE
from bsopt_auth.rfc6749.authorization import MULTI_PARAMS, hash_code
from bsopt_auth.rfc6749.client_auth import authenticate_client
from bsopt_auth.rfc6749.errors import (
    InvalidGrantError,
    InvalidRequestError,
    UnauthorizedClientError,
    UnsupportedGrantTypeError,
)
from bsopt_auth.rfc6749.parameters import check_parameters
from bsopt_auth.rfc6749.refresh import (
    REFRESH_TOKEN_GRANT_TYPE,
    add_refresh_token,
    create_family,
    may_receive_refresh_token,
    refresh_token_grant,
    revoke_family_of_code,
)
from bsopt_auth.rfc6749.response import narrow_resources, user_token_response
from bsopt_auth.rfc6749.scope import parse_scope, resolve_scope, to_scope_string
from bsopt_auth.rfc7517 import fresh_active_key, get_active_key
from bsopt_auth.rfc7523 import AssertionPolicy
from bsopt_auth.rfc7636 import verify_code_verifier
from bsopt_auth.rfc8628 import DEVICE_CODE_GRANT_TYPE, device_code_grant
from bsopt_auth.rfc8693 import TOKEN_EXCHANGE_GRANT_TYPE, token_exchange
from bsopt_auth.rfc8707 import resolve_resources
from bsopt_auth.rfc9068 import issue_access_token
from bsopt_auth.rfc9449 import token_request_jkt, token_type
from bsopt_common.db import session_scope

GRANT_TYPES_SUPPORTED = ("authorization_code", REFRESH_TOKEN_GRANT_TYPE, "client_credentials",
                         TOKEN_EXCHANGE_GRANT_TYPE, DEVICE_CODE_GRANT_TYPE)


def _parse(items: Iterable[tuple[str, str]]) -> tuple[dict[str, str], list[str]]:
    params: dict[str, str] = {}
    resources: list[str] = []
    for name, value in items:
        if name in MULTI_PARAMS:
            resources.append(value)
        elif name in params:
            raise InvalidRequestError(f"parameter {name!r} must not repeat")
        else:
            params[name] = value
    return params, resources


def _require(params: Mapping[str, str], name: str) -> str:
    value = params.get(name)
    if not value:
        raise InvalidRequestError(f"{name} is required")
    return value


def handle_token_request(
    session_factory: sessionmaker[Session],
    settings: AuthSettings,
    authorization: str | None,
    items: Iterable[tuple[str, str]],
    dpop_proofs: Sequence[str] = (),
) -> dict[str, Any]:
    """Process a token request; returns the RFC 6749 §5.1 response body. ``dpop_proofs``:
    the ``DPoP`` header values (RFC 9449, :mod:`bsopt_auth.rfc9449`)."""
    items = list(items)
    check_parameters(items)
    params, resources = _parse(items)
    grant_type = _require(params, "grant_type")
    if grant_type not in GRANT_TYPES_SUPPORTED:
        raise UnsupportedGrantTypeError(f"grant_type {grant_type!r} is not supported")

    with session_scope(session_factory) as session:
        client = authenticate_client(session, authorization, params, AssertionPolicy.from_settings(settings)).client
        session.expunge(client)
    if grant_type not in client.grant_types:
        raise UnauthorizedClientError(f"client may not use the {grant_type} grant")
    jkt = token_request_jkt(session_factory, settings, client, dpop_proofs)  # RFC 9449: cnf.jkt or None

    if grant_type == "client_credentials":
        return _client_credentials(session_factory, settings, client, params, resources, jkt)
    if grant_type == TOKEN_EXCHANGE_GRANT_TYPE:  # (issues bearer tokens: the actor presents them)
        return token_exchange(session_factory, settings, client, params, resources)
    if grant_type == REFRESH_TOKEN_GRANT_TYPE:
        return refresh_token_grant(session_factory, settings, client, params, resources, dpop_jkt=jkt)
    if grant_type == DEVICE_CODE_GRANT_TYPE:  # RFC 8628 §3.4
        return device_code_grant(session_factory, settings, client, params, resources, dpop_jkt=jkt)
    return _authorization_code(session_factory, settings, client, params, resources, jkt)


def _token_response(access_token: str, expires_in: int, scope: str, jkt: str | None = None,
                    **extra: str) -> dict[str, Any]:
    return {"access_token": access_token, "token_type": token_type(jkt), "expires_in": expires_in,
            "scope": scope, **extra}


def _client_credentials(
    session_factory: sessionmaker[Session],
    settings: AuthSettings,
    client: Client,
    params: Mapping[str, str],
    resources: list[str],
    jkt: str | None = None,
) -> dict[str, Any]:
    if client.is_public:
        raise UnauthorizedClientError("public clients may not use client_credentials")
    scope = resolve_scope(params.get("scope"), client.allowed_scopes)
    if OPENID_SCOPE in scope:
        raise UnauthorizedClientError("openid needs a user; use the authorization code grant")
    audiences = resolve_resources(resources, client.allowed_resources)
    key = fresh_active_key(session_factory)
    if key is None:
        with session_scope(session_factory) as session:
            key = get_active_key(session, settings.signing_alg)
    token = issue_access_token(
        key,
        issuer=settings.issuer,
        subject=client.client_id,
        audiences=audiences,
        client_id=client.client_id,
        scope=to_scope_string(scope),
        ttl_seconds=settings.access_token_ttl_seconds,
        cnf_jkt=jkt,
    )
    return _token_response(token.token, token.expires_in, to_scope_string(scope), jkt)


def _consume_code(
    session_factory: sessionmaker[Session], settings: AuthSettings, code: str, dpop_jkt: str | None = None,
) -> tuple[AuthorizationCode, TokenFamily]:
    """Mark the code consumed in its own committed transaction (so a failed exchange still
    burns it), create the token family of everything issued from it, and return both; a
    missing code is ``invalid_grant``. An already consumed code is ``invalid_grant`` too,
    and revokes its family (RFC 6749 §4.1.2: the refresh tokens, and the access tokens
    through their ``sid``), committed before the error."""
    code_hash = hash_code(code)
    used = None
    with session_scope(session_factory) as session:
        row = session.scalars(
            update(AuthorizationCode)
            .where(AuthorizationCode.code_hash == code_hash, AuthorizationCode.consumed_at.is_(None))
            .values(consumed_at=datetime.now(UTC))
            .returning(AuthorizationCode),
        ).one_or_none()
        if row is None:
            used = session.scalar(
                select(AuthorizationCode.consumed_at).where(AuthorizationCode.code_hash == code_hash)
            )
            if used:
                revoke_family_of_code(session, code_hash)
        else:
            family = create_family(
                session, settings, client_id=row.client_id, user_id=row.user_id, scope=row.scope,
                resource=row.resource, auth_time=row.auth_time, code_hash=code_hash,
                session_id=row.session_id,  # RP-initiated logout revokes it (bsopt_auth.sessions)
                dpop_jkt=dpop_jkt,
            )
            session.expunge(row)
            session.expunge(family)
    if row is None:
        raise InvalidGrantError("authorization code already used" if used else "invalid authorization code")
    return row, family


def _authorization_code(
    session_factory: sessionmaker[Session],
    settings: AuthSettings,
    client: Client,
    params: Mapping[str, str],
    resources: list[str],
    jkt: str | None = None,
) -> dict[str, Any]:
    code = _require(params, "code")
    redirect_uri = _require(params, "redirect_uri")
    code_verifier = _require(params, "code_verifier")
    # RFC 9449 §5: a public client's refresh tokens are bound to its DPoP key.
    grant, family = _consume_code(session_factory, settings, code, jkt if client.is_public else None)

    if grant.client_id != client.client_id:
        raise InvalidGrantError("authorization code was issued to another client")
    if grant.expires_at <= datetime.now(UTC):
        raise InvalidGrantError("authorization code expired")
    if grant.redirect_uri != redirect_uri:
        raise InvalidGrantError("redirect_uri does not match the authorization request")
    verify_code_verifier(code_verifier, grant.code_challenge, grant.code_challenge_method)

    audiences = narrow_resources(grant.resource, resources)
    refresh_token = None
    with session_scope(session_factory) as session:
        key = get_active_key(session, settings.signing_alg)
        if may_receive_refresh_token(client, parse_scope(grant.scope)):
            refresh_token = add_refresh_token(session, settings, family.id, family.expires_at)
    return user_token_response(
        key, settings, client, subject=str(grant.user_id), audiences=audiences, scope=grant.scope,
        auth_time=int(grant.auth_time.timestamp()), sid=str(family.id), dpop_jkt=jkt, refresh_token=refresh_token,
        nonce=grant.nonce, session_id=family.session_id,
    )


__all__ = ["GRANT_TYPES_SUPPORTED", "handle_token_request"]
