"""Refresh tokens (RFC 6749 §1.5, §6; OAuth 2.1 §4.3; RFC 9700 §4.14), HTTP-agnostic.

Policy (who gets one). A refresh token is issued with the authorization code grant only
(never for ``client_credentials`` or token exchange), to a client whose registered
``grant_types`` contain ``refresh_token``; a *public* client (the CLI) gets one only when
the user granted ``offline_access`` (OIDC Core §11), which it must request explicitly
(:data:`~bsopt_auth.rfc6749.scope.EXPLICIT_ONLY_SCOPES`). The same registration lets the
client use the ``refresh_token`` grant; a public client presents ``client_id`` only, a
confidential client must authenticate as at every token request.

Tokens. Opaque, 256 random bits (``secrets.token_urlsafe(32)``), stored only as their hex
SHA-256. Every token belongs to a *family* (:class:`~bsopt_auth.models.TokenFamily`): one
per redeemed authorization code, holding the granted scope and resources, created when
the code is consumed. Access tokens from that code and its refreshes carry the family id
as ``sid``.

Rotation (RFC 9700 §4.14.2). A refresh marks the presented token used with one
conditional ``UPDATE ... WHERE used_at IS NULL ... RETURNING`` and inserts its successor
in the same transaction, so of N concurrent refreshes with one token exactly one wins.
Presenting a used token is reuse: the whole family is revoked (its refresh tokens fail,
its access tokens introspect inactive), then ``invalid_grant``. A replayed authorization
code revokes its family the same way (RFC 6749 §4.1.2).

Lifetimes. Each refresh token expires ``refresh_token_idle_ttl_seconds`` after it was
issued (sliding: the successor starts a new period), never later than the family's
absolute ``expires_at`` (``refresh_token_absolute_ttl_seconds`` after the code exchange).

Scope (RFC 6749 §6). The new access token has the family's scope, or a subset when
``scope`` is given (``invalid_scope`` beyond it), and its resources, or a subset when
``resource`` is given (RFC 8707 §2.2, ``invalid_target``). The refresh token itself keeps
the family's scope.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from bsopt_auth import audit
from bsopt_auth.config import AuthSettings
from bsopt_auth.models import Client, RefreshToken, TokenFamily
from bsopt_auth.rfc6749.errors import InvalidGrantError, InvalidRequestError, InvalidScopeError
from bsopt_auth.rfc6749.response import narrow_resources, user_token_response
from bsopt_auth.rfc6749.scope import parse_scope, to_scope_string
from bsopt_auth.rfc7517 import get_active_key
from bsopt_auth.rfc9449 import check_family_binding
from bsopt_common.db import session_scope

REFRESH_TOKEN_GRANT_TYPE = "refresh_token"
OFFLINE_ACCESS_SCOPE = "offline_access"


def hash_refresh_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def may_receive_refresh_token(client: Client, scope: Sequence[str]) -> bool:
    """The issuing policy (module docstring)."""
    if REFRESH_TOKEN_GRANT_TYPE not in client.grant_types:
        return False
    return not client.is_public or OFFLINE_ACCESS_SCOPE in scope


def create_family(
    session: Session, settings: AuthSettings, *, client_id: str, user_id: uuid.UUID, scope: str,
    resource: Sequence[str], auth_time: datetime, code_hash: str | None, session_id: str | None = None,
    dpop_jkt: str | None = None,
) -> TokenFamily:
    now = datetime.now(UTC)
    family = TokenFamily(
        id=uuid.uuid4(), client_id=client_id, user_id=user_id, scope=scope, resource=list(resource),
        auth_time=auth_time, code_hash=code_hash, session_id=session_id, dpop_jkt=dpop_jkt,
        expires_at=now + timedelta(seconds=settings.refresh_token_absolute_ttl_seconds),
    )
    session.add(family)
    session.flush()
    return family


def add_refresh_token(session: Session, settings: AuthSettings, family_id: uuid.UUID,
                      family_expires_at: datetime) -> str:
    """Store a new refresh token of the family (its SHA-256 only); return the token."""
    token = secrets.token_urlsafe(32)
    idle_expiry = datetime.now(UTC) + timedelta(seconds=settings.refresh_token_idle_ttl_seconds)
    session.add(RefreshToken(token_hash=hash_refresh_token(token), family_id=family_id,
                             expires_at=min(idle_expiry, family_expires_at)))
    session.flush()
    return token


def revoke_family(session: Session, family_id: uuid.UUID) -> None:
    """Revoke every token of the family (idempotent)."""
    session.execute(
        update(TokenFamily)
        .where(TokenFamily.id == family_id, TokenFamily.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
    )


def revoke_family_of_code(session: Session, code_hash: str) -> None:
    """RFC 6749 §4.1.2: a replayed code revokes the tokens issued from it."""
    session.execute(
        update(TokenFamily)
        .where(TokenFamily.code_hash == code_hash, TokenFamily.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
    )


def family_revoked(session: Session, sid: str) -> bool:
    """True when ``sid`` names a revoked family (or is not a family id we know)."""
    try:
        family_id = uuid.UUID(sid)
    except ValueError:
        return True
    row = session.execute(select(TokenFamily.revoked_at).where(TokenFamily.id == family_id)).one_or_none()
    return row is None or row[0] is not None


def find_refresh_token(session: Session, token: str) -> tuple[RefreshToken, TokenFamily] | None:
    row = session.execute(
        select(RefreshToken, TokenFamily)
        .join(TokenFamily, TokenFamily.id == RefreshToken.family_id)
        .where(RefreshToken.token_hash == hash_refresh_token(token))
    ).one_or_none()
    return None if row is None else (row[0], row[1])


def refresh_token_active(refresh: RefreshToken, family: TokenFamily, now: datetime | None = None) -> bool:
    now = now or datetime.now(UTC)
    return (refresh.used_at is None and family.revoked_at is None
            and refresh.expires_at > now and family.expires_at > now)


def _narrow(params: Mapping[str, str], resources: Sequence[str], family: TokenFamily) -> tuple[list[str], list[str]]:
    granted = parse_scope(family.scope)
    scope = granted
    requested = parse_scope(params.get("scope"))
    if requested:
        beyond = [s for s in requested if s not in granted]
        if beyond:
            raise InvalidScopeError("scope exceeds the original grant: " + " ".join(beyond))
        scope = requested
    return scope, narrow_resources(family.resource, resources)


def refresh_token_grant(
    session_factory: sessionmaker[Session],
    settings: AuthSettings,
    client: Client,
    params: Mapping[str, str],
    resources: Sequence[str],
    *,
    dpop_jkt: str | None = None,
) -> dict[str, Any]:
    """The ``refresh_token`` grant (RFC 6749 §6) for the authenticated ``client``: rotate
    the token and issue a new access token; returns the §5.1 response body. A family
    bound to a DPoP key (RFC 9449 §5) needs ``dpop_jkt`` of that key, else
    ``invalid_dpop_proof`` and nothing rotates."""
    assert settings.issuer is not None
    presented = params.get("refresh_token")
    if not presented:
        raise InvalidRequestError("refresh_token is required")
    token_hash = hash_refresh_token(presented)
    now = datetime.now(UTC)
    reused = False
    with session_scope(session_factory) as session:
        live_family = (
            select(TokenFamily.id)
            .where(TokenFamily.client_id == client.client_id, TokenFamily.revoked_at.is_(None),
                   TokenFamily.expires_at > now)
        )
        # Row lock + recheck: of concurrent refreshes with one token, one matches.
        family_id = session.scalar(
            update(RefreshToken)
            .where(RefreshToken.token_hash == token_hash, RefreshToken.used_at.is_(None),
                   RefreshToken.expires_at > now, RefreshToken.family_id.in_(live_family))
            .values(used_at=now)
            .returning(RefreshToken.family_id)
        )
        if family_id is None:
            found = session.execute(
                select(RefreshToken.used_at, TokenFamily.id, TokenFamily.client_id)
                .join(TokenFamily, TokenFamily.id == RefreshToken.family_id)
                .where(RefreshToken.token_hash == token_hash)
            ).one_or_none()
            if found is not None and found.used_at is not None:
                # RFC 9700 §4.14.2: a rotated token came back; one of the two holders is
                # an attacker. Revoke the family (committed before the error below).
                revoke_family(session, found.id)
                reused = True
                audit.record(session, settings, audit.REFRESH_REUSE_DETECTED, outcome="failure", client_id=client.client_id, reason="refresh_token_reuse", details={"family_id": str(found.id)})  # noqa: E501
            elif found is not None and found.client_id != client.client_id:
                raise InvalidGrantError("refresh token was issued to another client")
        else:
            family = session.get_one(TokenFamily, family_id)
            check_family_binding(family.dpop_jkt, dpop_jkt)  # raises: the rotation rolls back
            scope, audiences = _narrow(params, resources, family)
            new_refresh = add_refresh_token(session, settings, family.id, family.expires_at)
            key = get_active_key(session, settings.signing_alg)
            subject, auth_time = str(family.user_id), int(family.auth_time.timestamp())
            sid, session_id = str(family.id), family.session_id
    if family_id is None:
        raise InvalidGrantError("refresh token already used; its tokens are revoked" if reused
                                else "invalid, expired or revoked refresh token")

    return user_token_response(key, settings, client, subject=subject, audiences=audiences,
                               scope=to_scope_string(scope), auth_time=auth_time, sid=sid, dpop_jkt=dpop_jkt,
                               refresh_token=new_refresh, session_id=session_id)


__all__ = [
    "OFFLINE_ACCESS_SCOPE",
    "REFRESH_TOKEN_GRANT_TYPE",
    "add_refresh_token",
    "create_family",
    "family_revoked",
    "find_refresh_token",
    "hash_refresh_token",
    "may_receive_refresh_token",
    "refresh_token_active",
    "refresh_token_grant",
    "revoke_family",
    "revoke_family_of_code",
]
