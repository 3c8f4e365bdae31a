"""Authorization endpoint logic (RFC 6749 §4.1.1-§4.1.2, OAuth 2.1 §4.1), HTTP-agnostic.

Validation order matters: until the client and its redirect URI are known good, errors
are shown to the user (:class:`UnsafeRedirectError`) and never sent to the redirect URI
(RFC 6749 §4.1.2.1). After that, errors go back to the client in the redirect
(:class:`AuthorizationRedirectError`), with ``state`` and ``iss`` (RFC 9207).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sqlalchemy import delete
from sqlalchemy.orm import Session

from bsopt_auth.models import AuthorizationCode, Client
from bsopt_auth.rfc6749.errors import (
    InvalidRequestError,
    OAuth2Error,
    UnauthorizedClientError,
    UnsupportedResponseTypeError,
)
from bsopt_auth.rfc6749.scope import resolve_scope, to_scope_string
from bsopt_auth.rfc7636 import validate_code_challenge
from bsopt_auth.rfc8252 import match_redirect_uri
from bsopt_auth.rfc8707 import resolve_resources

#: Parameters of the authorization request that the login form carries along.
REQUEST_PARAMS = (
    "response_type", "client_id", "redirect_uri", "scope", "state",
    "code_challenge", "code_challenge_method", "nonce",
    # OIDC Core §3.1.2.1 (bsopt_auth.sessions)
    "prompt", "max_age",
)
#: May repeat (RFC 8707 §2); every other parameter must appear at most once.
MULTI_PARAMS = ("resource",)
#: Consumed and expired codes are kept this long (replay detection), then deleted.
CODE_RETENTION = timedelta(days=1)


class UnsafeRedirectError(Exception):
    """The client or redirect URI is invalid: tell the user, do not redirect."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class AuthorizationRedirectError(Exception):
    """An error to report to the client through its (validated) redirect URI."""

    def __init__(self, error: OAuth2Error, redirect_uri: str, state: str | None) -> None:
        super().__init__(error.error)
        self.error = error
        self.redirect_uri = redirect_uri
        self.state = state


@dataclass(frozen=True)
class AuthorizationRequest:
    client: Client
    redirect_uri: str
    state: str | None
    scope: list[str]
    resources: list[str]
    code_challenge: str
    code_challenge_method: str
    nonce: str | None
    #: The raw parameters, re-sent by the login form (hidden fields).
    params: dict[str, str] = field(default_factory=dict)
    requested_resources: list[str] = field(default_factory=list)

    @property
    def scope_string(self) -> str:
        return to_scope_string(self.scope)


def _single_params(items: Iterable[tuple[str, str]]) -> tuple[dict[str, str], list[str], list[str]]:
    """Split request items into single-valued params, resources, and repeated names."""
    params: dict[str, str] = {}
    resources: list[str] = []
    repeated: list[str] = []
    for name, value in items:
        if name in MULTI_PARAMS:
            resources.append(value)
        elif name in params:
            repeated.append(name)
        else:
            params[name] = value
    return params, resources, repeated


def validate_authorization_request(
    session: Session,
    items: Iterable[tuple[str, str]],
    *,
    default_resource: str | None,
) -> AuthorizationRequest:
    """Validate an authorization request (query of GET /authorize, or the login form)."""
    params, resources, repeated = _single_params(items)

    client_id = params.get("client_id")
    if not client_id or "client_id" in repeated:
        raise UnsafeRedirectError("The request has no valid client_id.")
    client = session.get(Client, client_id)
    if client is None:
        raise UnsafeRedirectError("Unknown client.")
    redirect_uri = params.get("redirect_uri")
    if "redirect_uri" in repeated or not match_redirect_uri(redirect_uri, client.redirect_uris):
        raise UnsafeRedirectError("The redirect_uri is missing or not registered for this client.")
    assert redirect_uri is not None
    state = params.get("state")

    def fail(error: OAuth2Error) -> AuthorizationRedirectError:
        return AuthorizationRedirectError(error, redirect_uri, state)

    if repeated:
        raise fail(InvalidRequestError("parameters must not repeat: " + ", ".join(sorted(set(repeated)))))
    if params.get("response_type") != "code":
        raise fail(UnsupportedResponseTypeError("only response_type=code is supported"))
    if "authorization_code" not in client.grant_types:
        raise fail(UnauthorizedClientError("client may not use the authorization code grant"))
    try:
        validate_code_challenge(params.get("code_challenge"), params.get("code_challenge_method"))
        scope = resolve_scope(params.get("scope"), client.allowed_scopes)
        granted_resources = resolve_resources(resources, client.allowed_resources, default_resource)
    except OAuth2Error as exc:
        raise fail(exc) from None

    return AuthorizationRequest(
        client=client,
        redirect_uri=redirect_uri,
        state=state,
        scope=scope,
        resources=granted_resources,
        code_challenge=params["code_challenge"],
        code_challenge_method="S256",
        nonce=params.get("nonce") or None,
        params={k: v for k, v in params.items() if k in REQUEST_PARAMS},
        requested_resources=resources,
    )


def hash_code(code: str) -> str:
    return hashlib.sha256(code.encode("utf-8")).hexdigest()


def issue_authorization_code(
    session: Session,
    request: AuthorizationRequest,
    user_id: uuid.UUID,
    *,
    ttl_seconds: int,
    auth_time: datetime | None = None,
    session_id: str | None = None,
) -> str:
    """Store a fresh code (its SHA-256 only) bound to the request; return the code."""
    now = datetime.now(UTC)
    session.execute(delete(AuthorizationCode).where(AuthorizationCode.expires_at < now - CODE_RETENTION))
    code = secrets.token_urlsafe(32)
    session.add(
        AuthorizationCode(
            code_hash=hash_code(code),
            client_id=request.client.client_id,
            user_id=user_id,
            redirect_uri=request.redirect_uri,
            code_challenge=request.code_challenge,
            code_challenge_method=request.code_challenge_method,
            scope=request.scope_string,
            resource=list(request.resources),
            nonce=request.nonce,
            auth_time=auth_time or now,
            expires_at=now + timedelta(seconds=ttl_seconds),
            session_id=session_id,
        )
    )
    session.flush()
    return code


def add_query(uri: str, params: Sequence[tuple[str, str | None]]) -> str:
    """Append parameters to ``uri``, keeping its own query (RFC 6749 §3.1.2)."""
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query += [(k, v) for k, v in params if v is not None]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


def success_redirect(request: AuthorizationRequest, code: str, issuer: str) -> str:
    return add_query(request.redirect_uri, [("code", code), ("state", request.state), ("iss", issuer)])


def error_redirect(exc: AuthorizationRedirectError, issuer: str) -> str:
    return add_query(
        exc.redirect_uri,
        [
            ("error", exc.error.error),
            ("error_description", exc.error.description),
            ("state", exc.state),
            ("iss", issuer),
        ],
    )


__all__ = [
    "REQUEST_PARAMS",
    "AuthorizationRedirectError",
    "AuthorizationRequest",
    "UnsafeRedirectError",
    "add_query",
    "error_redirect",
    "hash_code",
    "issue_authorization_code",
    "success_redirect",
    "validate_authorization_request",
]
