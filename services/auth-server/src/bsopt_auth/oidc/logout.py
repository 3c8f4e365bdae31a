"""OpenID Connect RP-Initiated Logout 1.0, HTTP-agnostic: the logout request (§2) and
its ``id_token_hint`` and ``post_logout_redirect_uri`` checks (§3).

- ``id_token_hint`` must be an ID token this server issued: signed by one of our keys
  (any but a revoked one: an old token signed by a since retired key is still ours),
  ``iss`` this issuer, ``typ`` not ``at+jwt`` (an access token is no hint). Expiry is
  not checked (§2: the hint may have expired).
- The client is ``client_id`` or the hint's ``azp`` / single ``aud``; both given must
  agree. ``post_logout_redirect_uri`` must equal one registered for it
  (``clients.post_logout_redirect_uris``, exact string match, §3.1); anything else is an
  error shown to the user, never a redirect.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import select
from sqlalchemy.orm import Session

from bsopt_auth.config import AuthSettings
from bsopt_auth.models import Client, SigningKey
from bsopt_auth.rfc7517 import REVOKED, SUPPORTED_ALGS

#: Parameters of the logout request (§2) carried by the confirmation page.
LOGOUT_PARAMS = ("id_token_hint", "client_id", "post_logout_redirect_uri", "state", "logout_hint",
                 "ui_locales")


class LogoutRequestError(Exception):
    """A logout request that cannot be honoured: tell the user, do not redirect."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


@dataclass(frozen=True)
class IdTokenHint:
    subject: str
    audiences: tuple[str, ...]
    azp: str | None


@dataclass(frozen=True)
class LogoutRequest:
    client_id: str | None
    hint: IdTokenHint | None
    post_logout_redirect_uri: str | None
    state: str | None
    #: The request's parameters (:data:`LOGOUT_PARAMS` only), re-sent by the confirmation page.
    params: dict[str, str] = field(default_factory=dict)


def verify_id_token_hint(session: Session, settings: AuthSettings, token: str) -> IdTokenHint | None:
    """The hint's subject and audience when it is an ID token we issued (even expired)."""
    rows = session.execute(select(SigningKey.kid, SigningKey.alg, SigningKey.public_jwk)
                           .where(SigningKey.status != REVOKED)).all()
    if not rows:
        return None
    try:
        keys = KeySet.import_key_set({"keys": [{**jwk, "kid": kid, "alg": alg} for kid, alg, jwk in rows]})
        decoded = jwt.decode(token, keys, algorithms=list(SUPPORTED_ALGS))
    except (JoseError, ValueError, TypeError, KeyError, UnicodeError):
        return None
    claims: dict[str, Any] = decoded.claims
    if str(decoded.header.get("typ", "JWT")).lower() in ("at+jwt", "application/at+jwt"):
        return None
    aud = claims.get("aud")
    audiences = (aud,) if isinstance(aud, str) else tuple(a for a in aud if isinstance(a, str)) if isinstance(
        aud, list) else ()
    sub, azp = claims.get("sub"), claims.get("azp")
    if claims.get("iss") != settings.issuer or not isinstance(sub, str) or not sub or not audiences:
        return None
    return IdTokenHint(sub, audiences, azp if isinstance(azp, str) else None)


def validate_logout_request(session: Session, settings: AuthSettings,
                            items: list[tuple[str, str]]) -> LogoutRequest:
    """Raises :class:`LogoutRequestError`."""
    params: dict[str, str] = {}
    for name, value in items:
        if name in LOGOUT_PARAMS and name in params:
            raise LogoutRequestError(f"The parameter {name} must not repeat.")
        params.setdefault(name, value)
    hint = None
    if params.get("id_token_hint"):
        hint = verify_id_token_hint(session, settings, params["id_token_hint"])
        if hint is None:
            raise LogoutRequestError("The id_token_hint is not an ID token issued by this server.")
    client_id = params.get("client_id") or None
    if hint is not None:
        if client_id is not None and client_id not in hint.audiences:
            raise LogoutRequestError("The client_id does not match the id_token_hint.")
        if client_id is None:
            client_id = hint.azp or (hint.audiences[0] if len(hint.audiences) == 1 else None)
    redirect_uri = params.get("post_logout_redirect_uri") or None
    if client_id is not None:
        client = session.get(Client, client_id)
        if client is None:
            raise LogoutRequestError("Unknown client.")
        registered = list(client.post_logout_redirect_uris)
    else:
        registered = []
    if redirect_uri is not None and redirect_uri not in registered:
        raise LogoutRequestError("The post_logout_redirect_uri is not registered for this client.")
    return LogoutRequest(
        client_id=client_id, hint=hint, post_logout_redirect_uri=redirect_uri, state=params.get("state"),
        params={k: v for k, v in params.items() if k in LOGOUT_PARAMS},
    )


__all__ = ["LOGOUT_PARAMS", "IdTokenHint", "LogoutRequest", "LogoutRequestError", "validate_logout_request",
           "verify_id_token_hint"]
