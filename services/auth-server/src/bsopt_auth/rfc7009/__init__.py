"""RFC 7009: OAuth 2.0 Token Revocation (``POST /oauth2/revoke``), HTTP-agnostic.

§2.1 request: ``token`` and an optional ``token_type_hint`` (``refresh_token`` or
``access_token``; any other hint is ``unsupported_token_type``, §2.2.1), with the
client's authentication as at the token endpoint (a public client sends ``client_id``).
The hint only orders the lookup: the other kind is tried too (§2.1).

- A refresh token revokes its whole family (§2.1: the grant it belongs to): every
  refresh token of the login, and the family's access tokens (``sid``) introspect
  inactive (:mod:`bsopt_auth.rfc6749.refresh`).
- An access token (an RFC 9068 JWT this server signed, unexpired) has its ``jti``
  recorded as revoked until its ``exp`` (``auth.revoked_access_tokens``); introspection
  reports it inactive. Resource servers that verify JWTs locally keep accepting it until
  ``exp`` (the access-token lifetime bounds that).

§2.2: the answer is 200 with an empty body whether or not the token was known, valid
or already revoked. A token issued to another client is left alone, with the same
200 answer (the request learns nothing about other clients' tokens).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, sessionmaker

from bsopt_auth.config import AuthSettings
from bsopt_auth.models import Client, RevokedAccessToken
from bsopt_auth.rfc6749.errors import InvalidRequestError, UnsupportedTokenTypeError
from bsopt_auth.rfc6749.refresh import find_refresh_token, revoke_family
from bsopt_auth.rfc7517 import jwks_document
from bsopt_auth.rfc9068 import decode_access_token
from bsopt_common.db import session_scope

ACCESS_TOKEN_HINT = "access_token"
REFRESH_TOKEN_HINT = "refresh_token"
TOKEN_TYPE_HINTS = (ACCESS_TOKEN_HINT, REFRESH_TOKEN_HINT)


def lookup_order(hint: str | None) -> tuple[str, ...]:
    """The token kinds to try, the hinted one first (RFC 7009 §2.1, RFC 7662 §2.1)."""
    if hint is None:
        return (REFRESH_TOKEN_HINT, ACCESS_TOKEN_HINT)
    if hint not in TOKEN_TYPE_HINTS:
        raise UnsupportedTokenTypeError(f"token_type_hint {hint!r} is not supported")
    return (hint, *(h for h in TOKEN_TYPE_HINTS if h != hint))


def _revoke_refresh(session: Session, client: Client, token: str) -> bool:
    found = find_refresh_token(session, token)
    if found is None:
        return False
    if found[1].client_id == client.client_id:
        revoke_family(session, found[1].id)
    return True


def _revoke_access(session: Session, settings: AuthSettings, client: Client, token: str) -> bool:
    assert settings.issuer is not None
    claims = decode_access_token(token, jwks_document(session), issuer=settings.issuer)
    if claims is None:
        return False
    if claims.get("client_id") == client.client_id:
        session.execute(
            insert(RevokedAccessToken)
            .values(jti=claims["jti"], expires_at=datetime.fromtimestamp(claims["exp"], UTC))
            .on_conflict_do_nothing(index_elements=["jti"])
        )
    return True


def revoke_token(
    session_factory: sessionmaker[Session], settings: AuthSettings, client: Client, params: Mapping[str, str]
) -> None:
    """Revoke ``params["token"]`` for the authenticated ``client`` (see the module docstring)."""
    token = params.get("token")
    if not token:
        raise InvalidRequestError("token is required")
    order = lookup_order(params.get("token_type_hint"))
    with session_scope(session_factory) as session:
        for kind in order:
            done = (_revoke_refresh(session, client, token) if kind == REFRESH_TOKEN_HINT
                    else _revoke_access(session, settings, client, token))
            if done:
                return


__all__ = ["ACCESS_TOKEN_HINT", "REFRESH_TOKEN_HINT", "TOKEN_TYPE_HINTS", "lookup_order", "revoke_token"]
