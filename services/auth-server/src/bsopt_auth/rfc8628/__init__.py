"""OAuth 2.0 Device Authorization Grant (RFC 8628), HTTP-agnostic.

Device authorization request (§3.1-3.2): the client (the CLI's public client with its
``client_id``; a confidential client authenticates as at the token endpoint) asks for a
``scope`` and ``resource`` (RFC 8707), validated as the authorization endpoint does. It
gets a ``device_code`` (256 random bits, stored as its SHA-256 only) and a ``user_code``:
8 letters from :data:`USER_CODE_ALPHABET` (no vowels, so no words; no look-alikes),
shown as ``XXXX-XXXX`` (§6.1), stored as the SHA-256 of its normalised form. 20^8 ≈ 2^34.6
codes for a 600 s lifetime; guessing is throttled on the verification page (§5.1).

User interaction (§3.3): :mod:`bsopt_auth.routes.device` finds a pending code with
:func:`find_pending`, signs the user in and calls :func:`decide`.

Device access token request (§3.4-3.5), :func:`device_code_grant`: each poll locks the
row. Pending: ``authorization_pending``, or ``slow_down`` when it came sooner than the
current interval after the previous poll, which also raises the interval by 5 s for
this and every later poll. Denied: ``access_denied``. Expired: ``expired_token``.
Approved: the row is consumed (single use; a second redemption is ``invalid_grant``)
and the same token response as the authorization code grant is issued (access token
for the resources, ID token with ``openid``, a refresh token in a new token family when
:func:`~bsopt_auth.rfc6749.refresh.may_receive_refresh_token` allows).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from bsopt_auth.config import AuthSettings
from bsopt_auth.models import Client, DeviceAuthorization
from bsopt_auth.rfc6749.client_auth import authenticate_client
from bsopt_auth.rfc6749.errors import (
    InvalidGrantError,
    InvalidRequestError,
    OAuth2Error,
    UnauthorizedClientError,
)
from bsopt_auth.rfc6749.parameters import check_parameters
from bsopt_auth.rfc6749.refresh import add_refresh_token, create_family, may_receive_refresh_token
from bsopt_auth.rfc6749.response import narrow_resources, user_token_response
from bsopt_auth.rfc6749.scope import parse_scope, resolve_scope, to_scope_string
from bsopt_auth.rfc7517 import get_active_key
from bsopt_auth.rfc7523 import AssertionPolicy
from bsopt_auth.rfc8707 import resolve_resources
from bsopt_common.db import session_scope

#: RFC 8628 §3.4 ``grant_type``.
DEVICE_CODE_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"
#: RFC 8628 §6.1: base-20, consonants only (no vowels: no accidental words; no look-alikes).
USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
USER_CODE_LENGTH = 8
#: §3.5: each ``slow_down`` adds this to the interval, seconds.
SLOW_DOWN_INCREMENT_SECONDS = 5
#: A poll this much early still counts as on time (network and scheduling jitter), seconds.
POLL_GRACE_SECONDS = 0.5
#: Expired requests are kept this long (so a late poll gets ``expired_token``), then deleted.
RETENTION = timedelta(days=1)


class AuthorizationPendingError(OAuth2Error):
    """The authorization request is still pending as the end user hasn't yet completed
    the user-interaction steps (Section 3.3). The client SHOULD repeat the access token
    request to the token endpoint (a process known as polling). (RFC 8628 §3.5)"""

    error = "authorization_pending"


class SlowDownError(OAuth2Error):
    """A variant of "authorization_pending", the authorization request is still pending
    and polling should continue, but the interval MUST be increased by 5 seconds for
    this and all subsequent requests. (RFC 8628 §3.5)"""

    error = "slow_down"


class DeviceAccessDeniedError(OAuth2Error):
    """The authorization request was denied. (RFC 8628 §3.5; a §5.2 error: HTTP 400)"""

    error = "access_denied"


class ExpiredTokenError(OAuth2Error):
    """The "device_code" has expired, and the device authorization session has concluded.
    The client MAY commence a new device authorization request but SHOULD wait for user
    interaction before restarting to avoid unnecessary polling. (RFC 8628 §3.5)"""

    error = "expired_token"


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def generate_user_code() -> str:
    """A fresh user code, normalised (8 letters, no dash)."""
    return "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(USER_CODE_LENGTH))


def format_user_code(code: str) -> str:
    """``XXXX-XXXX`` (§6.1: easier to read and type)."""
    return f"{code[:4]}-{code[4:]}"


def normalize_user_code(value: str | None) -> str | None:
    """What the user typed, upper-cased, without dashes and spaces (§6.1); None when it
    cannot be a user code (wrong length or characters)."""
    if not value or len(value) > 64:
        return None
    code = "".join(c for c in value.upper() if c not in "- \t")
    if len(code) != USER_CODE_LENGTH or any(c not in USER_CODE_ALPHABET for c in code):
        return None
    return code


def hash_user_code(normalized: str) -> str:
    return _sha256(normalized)


def hash_device_code(code: str) -> str:
    return _sha256(code)


def _parse(items: Iterable[tuple[str, str]]) -> tuple[dict[str, str], list[str]]:
    params: dict[str, str] = {}
    resources: list[str] = []
    for name, value in items:
        if name == "resource":
            resources.append(value)
        elif name in params:
            raise InvalidRequestError(f"parameter {name!r} must not repeat")
        else:
            params[name] = value
    return params, resources


def device_authorization_request(
    session_factory: sessionmaker[Session],
    settings: AuthSettings,
    authorization: str | None,
    items: Iterable[tuple[str, str]],
) -> dict[str, Any]:
    """Process a device authorization request (§3.1); returns the §3.2 response body."""
    items = list(items)
    check_parameters(items)
    params, resources = _parse(items)
    with session_scope(session_factory) as session:
        client = authenticate_client(session, authorization, params, AssertionPolicy.from_settings(settings)).client
        if DEVICE_CODE_GRANT_TYPE not in client.grant_types:
            raise UnauthorizedClientError("client may not use the device authorization grant")
        scope = resolve_scope(params.get("scope"), client.allowed_scopes)
        audiences = resolve_resources(resources, client.allowed_resources, settings.default_code_flow_resource)
        client_id = client.client_id

    device_code = secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    for attempt in range(5):  # a user code collision with a live one is ~2^-34; retry
        user_code = generate_user_code()
        try:
            with session_scope(session_factory) as session:
                if attempt == 0:
                    session.execute(delete(DeviceAuthorization).where(DeviceAuthorization.expires_at < now - RETENTION))
                session.add(DeviceAuthorization(
                    device_code_hash=hash_device_code(device_code), user_code_hash=hash_user_code(user_code),
                    client_id=client_id, scope=to_scope_string(scope), resource=audiences, status="pending",
                    interval=settings.device_code_interval_seconds,
                    expires_at=now + timedelta(seconds=settings.device_code_ttl_seconds),
                ))
            break
        except IntegrityError:
            if attempt == 4:
                raise
    shown = format_user_code(user_code)
    return {
        "device_code": device_code,
        "user_code": shown,
        "verification_uri": settings.device_verification_url,
        "verification_uri_complete": f"{settings.device_verification_url}?user_code={shown}",
        "expires_in": settings.device_code_ttl_seconds,
        "interval": settings.device_code_interval_seconds,
    }


@dataclass(frozen=True)
class PendingDevice:
    """What the verification page shows about a pending request."""

    user_code: str  # normalised
    client_id: str
    scope: list[str]
    resource: list[str]


def find_pending(session: Session, normalized_user_code: str) -> PendingDevice | None:
    """The pending, unexpired request with this user code, else None."""
    row = session.scalars(
        select(DeviceAuthorization).where(
            DeviceAuthorization.user_code_hash == hash_user_code(normalized_user_code),
            DeviceAuthorization.status == "pending",
            DeviceAuthorization.expires_at > datetime.now(UTC),
        )
    ).one_or_none()
    if row is None:
        return None
    return PendingDevice(normalized_user_code, row.client_id, parse_scope(row.scope), list(row.resource))


def decide(session: Session, normalized_user_code: str, *, approve: bool, user_id: uuid.UUID | None) -> bool:
    """Approve (for ``user_id``) or deny the pending request; False when it is no longer
    pending (expired, decided meanwhile, unknown)."""
    row = session.scalars(
        select(DeviceAuthorization).where(
            DeviceAuthorization.user_code_hash == hash_user_code(normalized_user_code),
            DeviceAuthorization.status == "pending",
            DeviceAuthorization.expires_at > datetime.now(UTC),
        ).with_for_update()
    ).one_or_none()
    if row is None:
        return False
    if approve:
        assert user_id is not None
        row.status, row.user_id, row.auth_time = "approved", user_id, datetime.now(UTC)
    else:
        row.status = "denied"
    return True


def device_code_grant(
    session_factory: sessionmaker[Session],
    settings: AuthSettings,
    client: Client,
    params: Mapping[str, str],
    resources: Sequence[str],
    *,
    dpop_jkt: str | None = None,
) -> dict[str, Any]:
    """The device access token request (§3.4) of the authenticated ``client``; returns
    the RFC 6749 §5.1 response body or raises the §3.5 error (state changes committed)."""
    assert settings.issuer is not None
    device_code = params.get("device_code")
    if not device_code:
        raise InvalidRequestError("device_code is required")
    now = datetime.now(UTC)
    error: OAuth2Error | None = None
    with session_scope(session_factory) as session:
        row = session.scalars(
            select(DeviceAuthorization)
            .where(DeviceAuthorization.device_code_hash == hash_device_code(device_code))
            .with_for_update()
        ).one_or_none()
        if row is None or row.client_id != client.client_id:
            raise InvalidGrantError("invalid device code")
        if row.consumed_at is not None:
            raise InvalidGrantError("device code already used")
        if row.expires_at <= now:
            raise ExpiredTokenError("the device code expired; start a new device authorization")
        if row.status == "denied":
            raise DeviceAccessDeniedError("the user denied the authorization request")
        if row.status == "pending":
            too_soon = (row.last_polled_at is not None
                        and (now - row.last_polled_at).total_seconds() < row.interval - POLL_GRACE_SECONDS)
            row.last_polled_at = now
            if too_soon:
                row.interval += SLOW_DOWN_INCREMENT_SECONDS
                error = SlowDownError(f"polling too fast; wait at least {row.interval} seconds between requests")
            else:
                error = AuthorizationPendingError("the user has not completed the authorization yet")
        else:  # approved: redeem once
            granted_resources = list(row.resource)
            audiences = narrow_resources(granted_resources, resources)
            row.consumed_at = now
            assert row.user_id is not None and row.auth_time is not None
            scope_string, scope = row.scope, parse_scope(row.scope)
            subject, auth_time = str(row.user_id), int(row.auth_time.timestamp())
            family = create_family(
                session, settings, client_id=client.client_id, user_id=row.user_id, scope=row.scope,
                resource=granted_resources, auth_time=row.auth_time, code_hash=None,
                dpop_jkt=dpop_jkt if client.is_public else None,  # RFC 9449 §5
            )
            sid = str(family.id)
            refresh_token = (add_refresh_token(session, settings, family.id, family.expires_at)
                             if may_receive_refresh_token(client, scope) else None)
            key = get_active_key(session, settings.signing_alg)
    if error is not None:
        raise error

    return user_token_response(key, settings, client, subject=subject, audiences=audiences, scope=scope_string,
                               auth_time=auth_time, sid=sid, dpop_jkt=dpop_jkt, refresh_token=refresh_token)


__all__ = [
    "DEVICE_CODE_GRANT_TYPE",
    "USER_CODE_ALPHABET",
    "AuthorizationPendingError",
    "DeviceAccessDeniedError",
    "ExpiredTokenError",
    "PendingDevice",
    "SlowDownError",
    "decide",
    "device_authorization_request",
    "device_code_grant",
    "find_pending",
    "format_user_code",
    "generate_user_code",
    "hash_device_code",
    "normalize_user_code",
]
