"""RFC 8693: OAuth 2.0 Token Exchange, for delegation between services.

Implemented: §2.1 (the request: ``subject_token`` with ``subject_token_type``
``urn:ietf:params:oauth:token-type:access_token``, ``resource`` / ``audience``, ``scope``,
``requested_token_type``), §2.2.1 (the response: ``access_token``, ``issued_token_type``,
``token_type``, ``expires_in``, ``scope``; no refresh token), §2.2.2 (errors:
``invalid_request``, ``invalid_target``; plus RFC 6749 §5.2 ``invalid_grant``,
``unauthorized_client``, ``invalid_scope``) and §4.1 (the ``act`` claim, nested for each
further exchange). ``actor_token`` (§2.1) is refused: the actor is always the
authenticated client.

Policy. A confidential client registered for this grant exchanges a user's access token
that was issued to be presented to *it* (``aud`` contains its own resource identifier
``urn:bsopt:<client_id>``) for a token for one callee it may reach (RFC 8707
``resource``, or ``audience``). The subject token is verified with this server's
published keys by the shared RFC 9068 verifier, as every resource server verifies it
(``typ`` at+jwt, signature, ``iss``, ``aud``, ``exp``/``nbf``), and must name a user:
client-credentials tokens (``sub`` is the client) are refused. The new token keeps the
user as ``sub``, names the acting client in ``client_id`` and ``act`` (the subject
token's own ``act`` nested inside), carries only scopes the acting client is allowed
*for that callee* (:data:`RESOURCE_SCOPES`; narrowing only) *and* that the subject
token's own scopes allow (:data:`DELEGATED_SCOPES`), and lives at most
``token_exchange_ttl_seconds`` and never past the subject token's ``exp``.

Scopes. Granted = requested (or, when none is requested, every scope below) ∩ the acting
client's allowed scopes for the callee ∩ the backend scopes the subject token's scopes
allow by :data:`DELEGATED_SCOPES`. A requested scope the client is never allowed for the
callee is refused (``invalid_scope``); a requested scope the client may have but the
user's token does not allow is left out (RFC 6749 §3.3: the response's ``scope`` says
what was granted); an empty result is ``invalid_scope``. The table is what the user
consented to, expressed as the backend methods resource-api calls for each user-facing
scope (``bsopt_api.api.routes``; the callees' ``METHOD_SCOPES``):

=====================  ================================================================
subject token scope    backend scopes an exchange may grant
=====================  ================================================================
``trades:read``        ``broker:accounts`` (GET /v1/accounts/{id}: GetAccount),
                       ``scorer:read`` (GET /v1/trades: ListScoredTrades),
                       ``broker:connections.read`` (GET /v1/broker-connections)
``trades:write``       ``broker:accounts`` (POST /v1/accounts: CreateAccount),
                       ``broker:import`` (POST /v1/accounts/{id}/imports: ImportTrades),
                       ``broker:connections`` (POST /v1/brokers/alpaca/connect, pause,
                       revoke: Start/ConnectWithKeys/Pause/RevokeBrokerConnection),
                       ``broker:sells`` (PUT /v1/accounts/{id}/sell-rules,
                       POST /v1/accounts/{id}:close-all-positions and its status:
                       SetSellRules, CloseAllPositions, GetCloseAllRequest; the sell
                       module only sells what the account holds, never buys)
``training:read``      ``trainer:jobs.read`` (GET /v1/training-jobs/{id})
``training:write``     ``trainer:jobs.write`` (submit, cancel, paper trading)
``trainer:jobs.write`` ``broker:accounts broker:orders`` (rl-trainer re-exchanging the
                       delegated token for RunPaperTrading: GetAccount, PlaceOrder)
=====================  ================================================================

Every other scope (``openid``, ``profile``, ``trainer:jobs.read``, the broker's and the
scorer's own) allows nothing further. ``broker:connections.complete``
(CompleteBrokerConnection, reached from resource-api's OAuth callback, which has no user
token: the user is the one the OAuth ``state`` was bound to) is never exchanged: only
resource-api's own client-credentials token carries it. A re-exchange (the subject token has ``act``) is
thus bounded by the delegated token's scopes, which were bounded by the user's.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from joserfc.jwk import KeySet
from sqlalchemy.orm import Session, sessionmaker

from bsopt_auth.config import AuthSettings
from bsopt_auth.models import Client, User
from bsopt_auth.rfc6749.errors import (
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    UnauthorizedClientError,
)
from bsopt_auth.rfc6749.scope import resolve_scope, to_scope_string
from bsopt_auth.rfc7517 import get_active_key, jwks_document
from bsopt_auth.rfc8707 import InvalidTargetError, resolve_resources
from bsopt_auth.rfc9068 import issue_access_token
from bsopt_common.db import session_scope
from bsopt_common.security.jwt import AccessTokenClaims, AccessTokenVerifier, InvalidTokenError, JWKSCache
from bsopt_common.settings import BROKER_GATEWAY_AUDIENCE, ML_SCORER_AUDIENCE, RL_TRAINER_AUDIENCE

TOKEN_EXCHANGE_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"

#: The scopes each callee understands: an exchanged token for a callee carries only these
#: (intersected with the acting client's allowed scopes). A resource not listed here
#: (the event bus, resource-api itself) gets no user-bound tokens.
RESOURCE_SCOPES: Mapping[str, frozenset[str]] = {
    BROKER_GATEWAY_AUDIENCE: frozenset({"broker:accounts", "broker:orders", "broker:import", "broker:connections",
                                        "broker:connections.read", "broker:sells"}),
    ML_SCORER_AUDIENCE: frozenset({"scorer:read"}),
    RL_TRAINER_AUDIENCE: frozenset({"trainer:jobs.read", "trainer:jobs.write"}),
}

#: What a subject token's scope lets an exchange grant (see the module docstring): the
#: user's consent, carried down every delegation hop. Scopes not listed allow nothing.
DELEGATED_SCOPES: Mapping[str, frozenset[str]] = {
    "trades:read": frozenset({"broker:accounts", "scorer:read", "broker:connections.read"}),
    "trades:write": frozenset({"broker:accounts", "broker:import", "broker:connections", "broker:sells"}),
    "training:read": frozenset({"trainer:jobs.read"}),
    "training:write": frozenset({"trainer:jobs.write"}),
    "trainer:jobs.write": frozenset({"broker:accounts", "broker:orders"}),
}

#: Longest delegation chain (``act`` nesting) a token may carry.
MAX_ACTOR_DEPTH = 4


def resource_of(client_id: str) -> str:
    """The resource identifier (RFC 8707) tokens meant for ``client_id`` carry in ``aud``
    (``bsopt_common.settings``: ``urn:bsopt:<client_id>``)."""
    return f"urn:bsopt:{client_id}"


class _PublishedKeys(JWKSCache):
    """The JWKS this server publishes, read from its own database (no HTTP)."""

    def __init__(self, keys: KeySet) -> None:
        super().__init__("urn:bsopt:auth-server:jwks")
        self._published = keys

    async def get_key_set(self, kid: str) -> KeySet | None:
        return self._published


def _verify_subject_token(
    session_factory: sessionmaker[Session], settings: AuthSettings, token: str, audience: str
) -> AccessTokenClaims:
    assert settings.issuer is not None
    with session_scope(session_factory) as session:
        keys = KeySet.import_key_set(jwks_document(session))  # type: ignore[arg-type]
    verifier = AccessTokenVerifier(
        settings.issuer, audience, _PublishedKeys(keys), leeway_seconds=settings.token_leeway_seconds
    )
    try:
        # The token endpoint runs in a worker thread, which has no event loop of its own.
        return asyncio.run(verifier.verify(token))
    except InvalidTokenError as exc:
        raise InvalidGrantError(f"subject_token: {exc}") from None


def _previous_actor(claims: AccessTokenClaims) -> dict[str, Any] | None:
    """The subject token's ``act`` (already exchanged once), checked for consistency."""
    act = claims.raw.get("act")
    if act is None:
        return None
    if not isinstance(act, dict) or act.get("sub") != claims.client_id:
        raise InvalidGrantError("subject_token has an inconsistent act claim")
    if len(claims.actor) >= MAX_ACTOR_DEPTH:
        raise InvalidGrantError("subject_token has too long a delegation chain")
    return act


def delegable_scopes(subject_scopes: Iterable[str]) -> frozenset[str]:
    """The backend scopes a token with ``subject_scopes`` allows by :data:`DELEGATED_SCOPES`."""
    return frozenset().union(*(DELEGATED_SCOPES.get(s, frozenset()) for s in subject_scopes))


def _granted_scope(requested: str | None, client_allowed: Sequence[str], subject: AccessTokenClaims) -> list[str]:
    """Requested (or default) ∩ the client's scopes for the callee ∩ what the subject allows."""
    wanted = resolve_scope(requested, client_allowed)  # invalid_scope beyond the client's scopes
    permitted = delegable_scopes(subject.scopes)
    granted = [s for s in wanted if s in permitted]
    if not granted:
        raise InvalidScopeError("the subject_token's scope allows none of: " + to_scope_string(wanted))
    return granted


def _target(params: Mapping[str, str], resources: Sequence[str], client: Client) -> str:
    audience = params.get("audience")
    requested = list(dict.fromkeys(resources))
    if audience is not None:
        if requested and requested != [audience]:
            raise InvalidRequestError("resource and audience name different targets")
        requested = [audience]
    if len(requested) > 1:
        raise InvalidTargetError("an exchanged token is for exactly one resource")
    reachable = [r for r in client.allowed_resources if r in RESOURCE_SCOPES]
    if requested and requested[0] in client.allowed_resources and requested[0] not in RESOURCE_SCOPES:
        raise InvalidTargetError("no user-bound tokens are issued for this resource")
    return resolve_resources(requested, reachable)[0]


def token_exchange(
    session_factory: sessionmaker[Session],
    settings: AuthSettings,
    client: Client,
    params: Mapping[str, str],
    resources: Sequence[str],
) -> dict[str, Any]:
    """Process an RFC 8693 token exchange for the authenticated ``client``; returns the
    §2.2.1 response body or raises an ``OAuth2Error``."""
    assert settings.issuer is not None  # required by the settings
    if client.is_public:
        raise UnauthorizedClientError("public clients may not exchange tokens")
    subject_token = params.get("subject_token")
    if not subject_token:
        raise InvalidRequestError("subject_token is required")
    subject_token_type = params.get("subject_token_type")
    if not subject_token_type:
        raise InvalidRequestError("subject_token_type is required")
    if subject_token_type != ACCESS_TOKEN_TYPE:
        raise InvalidRequestError(f"subject_token_type must be {ACCESS_TOKEN_TYPE}")
    if "actor_token" in params or "actor_token_type" in params:
        raise InvalidRequestError("actor_token is not accepted: the actor is the authenticated client")
    requested_type = params.get("requested_token_type")
    if requested_type is not None and requested_type != ACCESS_TOKEN_TYPE:
        raise InvalidRequestError(f"requested_token_type must be {ACCESS_TOKEN_TYPE}")

    target = _target(params, resources, client)
    allowed = [s for s in client.allowed_scopes if s in RESOURCE_SCOPES[target]]
    resolve_scope(params.get("scope"), allowed)  # scopes the client may never have: refused early

    own_resource = resource_of(client.client_id)
    subject = _verify_subject_token(session_factory, settings, subject_token, own_resource)
    previous_act = _previous_actor(subject)
    if previous_act is not None and subject.audience != (own_resource,):
        raise InvalidGrantError("a delegated subject_token must be meant for this client only")
    try:
        user_id = uuid.UUID(subject.subject)
    except ValueError:
        raise InvalidGrantError("subject_token does not identify a user") from None
    if subject.subject == subject.client_id:
        raise InvalidGrantError("subject_token does not identify a user")

    now = int(time.time())
    remaining = subject.expires_at - now
    if remaining <= 0:
        raise InvalidGrantError("subject_token has expired")
    ttl = min(settings.token_exchange_ttl_seconds, remaining)

    actor: dict[str, Any] = {"sub": client.client_id}
    if previous_act is not None:
        actor["act"] = previous_act
    auth_time = subject.raw.get("auth_time")
    with session_scope(session_factory) as session:
        if (user := session.get(User, user_id)) is None or user.disabled_at is not None:
            raise InvalidGrantError("subject_token names an unknown or disabled user")
        scope = _granted_scope(params.get("scope"), allowed, subject)
        key = get_active_key(session, settings.signing_alg)
    token = issue_access_token(
        key,
        issuer=settings.issuer,
        subject=subject.subject,
        audiences=[target],
        client_id=client.client_id,
        scope=to_scope_string(scope),
        ttl_seconds=ttl,
        auth_time=auth_time if isinstance(auth_time, int) else None,
        actor=actor,
        now=now,
    )
    return {
        "access_token": token.token,
        "issued_token_type": ACCESS_TOKEN_TYPE,
        "token_type": "Bearer",
        "expires_in": token.expires_in,
        "scope": to_scope_string(scope),
    }


__all__ = [
    "ACCESS_TOKEN_TYPE",
    "DELEGATED_SCOPES",
    "MAX_ACTOR_DEPTH",
    "RESOURCE_SCOPES",
    "TOKEN_EXCHANGE_GRANT_TYPE",
    "delegable_scopes",
    "resource_of",
    "token_exchange",
]
