"""RFC 7523 §2.2 / §3: ``private_key_jwt`` client authentication (RFC 7521 §4.2).

The client sends ``client_assertion_type`` =
``urn:ietf:params:oauth:client-assertion-type:jwt-bearer`` and ``client_assertion``: a
JWT it signed with its own private key, whose public half is registered for it
(``auth.clients.jwks``, :mod:`bsopt_auth.rfc7591`). Checked, in order:

1. the JWS header is a JSON object naming an asymmetric ``alg`` of
   :data:`~bsopt_auth.rfc7591.CLIENT_SIGNING_ALGS` (never ``none`` nor ``HS*``; RFC 7515
   §4.1.1) and no ``crit`` (RFC 7515 §4.1.11: nothing here understands an extension);
2. ``sub`` (§3 item 2: the client_id) names a registered ``private_key_jwt`` client; a
   ``client_id`` form parameter, when sent, must be the same (RFC 7521 §4.2);
3. the signature verifies with one of that client's keys: the one whose ``kid`` the
   header names, else each key of the ``alg``'s type; ``alg`` must fit that key;
4. ``iss`` == ``sub`` == the client (§3 items 1, 2);
5. ``aud`` (a string or an array) contains this server's issuer identifier or its token
   endpoint URL (§3 item 3);
6. ``exp`` is present and not past (§3 item 4, with ``token_leeway_seconds``), and at
   most ``client_assertion_max_lifetime_seconds`` (+ leeway) ahead: assertions are short-
   lived; ``nbf`` (item 5) and ``iat`` (item 6), when present, are not in the future;
7. ``jti`` (item 7) is present and used once: ``auth.client_assertion_jtis`` remembers
   (client, jti) until ``exp`` + leeway (an insert that finds the pair already there is
   a replay); expired pairs are purged on the way.

Any failure is ``invalid_client`` (RFC 7521 §4.2.1; RFC 6749 §5.2, HTTP 401); the
description says which check failed only once the signature has verified. A missing
``client_assertion`` or ``client_assertion_type`` is ``invalid_request``, as is
combining the assertion with another method (the caller checks that).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError
from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from bsopt_auth.config import AuthSettings
from bsopt_auth.models import Client, ClientAssertionJti
from bsopt_auth.rfc6749.errors import InvalidClientError, InvalidRequestError
from bsopt_auth.rfc7591 import (
    CLIENT_SIGNING_ALGS,
    PRIVATE_KEY_JWT,
    InvalidClientMetadataError,
    algorithms_for,
    import_client_key,
)

#: RFC 7523 §2.2 ``client_assertion_type``.
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: The longest ``client_id`` / ``jti`` accepted (the columns' length).
MAX_ID_LENGTH = 255
_FAILED = "client authentication failed"


@dataclass(frozen=True)
class AssertionPolicy:
    """What a client assertion is checked against (from :class:`AuthSettings`)."""

    #: Accepted ``aud`` values: the issuer identifier and the token endpoint URL.
    audiences: tuple[str, ...]
    leeway_seconds: int
    max_lifetime_seconds: int

    @classmethod
    def from_settings(cls, settings: AuthSettings) -> AssertionPolicy:
        assert settings.issuer is not None
        return cls(audiences=tuple(dict.fromkeys((settings.issuer, settings.token_endpoint_url))),
                   leeway_seconds=settings.token_leeway_seconds,
                   max_lifetime_seconds=settings.client_assertion_max_lifetime_seconds)


def _b64_json(segment: str) -> Any:
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        return json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidClientError("client assertion is malformed") from None


def _short_id(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH and "\x00" not in value


def _instant(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidClientError(f"client assertion {name} must be a NumericDate")
    return float(value)


def _candidate_keys(client: Client, header: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    keys: Sequence[Mapping[str, Any]] = (client.jwks or {}).get("keys", [])
    alg = header["alg"]
    kid = header.get("kid")
    if kid is not None:
        keys = [k for k in keys if k.get("kid") == kid]
    return [k for k in keys if alg in algorithms_for(k)]


def _verify_signature(assertion: str, client: Client, header: Mapping[str, Any]) -> dict[str, Any]:
    alg = header["alg"]
    for jwk in _candidate_keys(client, header):
        try:
            key = import_client_key(jwk)
            verified = jws.deserialize_compact(assertion, key, algorithms=[alg])
        except (JoseError, InvalidClientMetadataError, ValueError, TypeError, KeyError):
            continue
        claims = json.loads(verified.payload)  # parsed once already: valid JSON
        if isinstance(claims, dict):
            return claims
    raise InvalidClientError(_FAILED)


def verify_client_assertion(
    session: Session,
    policy: AssertionPolicy,
    assertion: str,
    form_client_id: str | None,
    *,
    now: float | None = None,
) -> Client:
    """Authenticate the client of ``assertion`` (see the module docstring); records its
    ``jti`` in ``session``'s transaction. Raises :class:`InvalidClientError`."""
    parts = assertion.split(".")
    if len(parts) != 3 or not all(parts):
        raise InvalidClientError("client assertion is malformed: expected a signed JWT (JWS compact)")
    header, claims = _b64_json(parts[0]), _b64_json(parts[1])
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise InvalidClientError("client assertion is malformed")
    alg = header.get("alg")
    if alg not in CLIENT_SIGNING_ALGS:
        raise InvalidClientError(f"client assertion alg must be one of {', '.join(CLIENT_SIGNING_ALGS)}")
    if "crit" in header:
        raise InvalidClientError("client assertion header has an unsupported crit parameter")
    if "kid" in header and not _short_id(header["kid"]):
        raise InvalidClientError("client assertion is malformed")
    subject = claims.get("sub")
    if not _short_id(subject):
        raise InvalidClientError("client assertion sub must be the client_id")
    assert isinstance(subject, str)
    if form_client_id is not None and form_client_id != subject:
        raise InvalidClientError("client_id does not match the client assertion")

    client = session.get(Client, subject)
    if client is None or client.token_endpoint_auth_method != PRIVATE_KEY_JWT or not client.jwks:
        raise InvalidClientError(_FAILED)
    session.commit()  # no connection held across the signature check (CPU); _use_jti reconnects
    claims = _verify_signature(assertion, client, header)

    # Signed by the client: from here on the description may say what is wrong.
    if claims.get("iss") != client.client_id or claims.get("sub") != client.client_id:
        raise InvalidClientError("client assertion iss and sub must both be the client_id")
    audience = claims.get("aud")
    audiences = [audience] if isinstance(audience, str) else audience
    if not isinstance(audiences, list) or not any(a in policy.audiences for a in audiences if isinstance(a, str)):
        raise InvalidClientError("client assertion aud must contain the issuer or the token endpoint URL")
    now = time.time() if now is None else now
    leeway = policy.leeway_seconds
    exp = _instant(claims, "exp")
    if exp is None:
        raise InvalidClientError("client assertion exp is required")
    if exp <= now - leeway:
        raise InvalidClientError("client assertion expired")
    if exp > now + policy.max_lifetime_seconds + leeway:
        raise InvalidClientError(
            f"client assertion exp is more than {policy.max_lifetime_seconds} s in the future"
        )
    nbf, iat = _instant(claims, "nbf"), _instant(claims, "iat")
    if nbf is not None and nbf > now + leeway:
        raise InvalidClientError("client assertion is not valid yet (nbf)")
    if iat is not None and iat > now + leeway:
        raise InvalidClientError("client assertion iat is in the future")
    jti = claims.get("jti")
    if not _short_id(jti):
        raise InvalidClientError(f"client assertion jti is required (1 to {MAX_ID_LENGTH} characters)")
    _use_jti(session, client.client_id, str(jti), exp + leeway, now)
    return client


def _use_jti(session: Session, client_id: str, jti: str, remember_until: float, now: float) -> None:
    """Record (client, jti) until ``remember_until``; a pair already there is a replay.
    Purges every pair past its time first (one indexed delete)."""
    session.execute(delete(ClientAssertionJti).where(
        ClientAssertionJti.expires_at < datetime.fromtimestamp(now, UTC)))
    inserted = session.execute(
        insert(ClientAssertionJti)
        .values(client_id=client_id, jti=jti, expires_at=datetime.fromtimestamp(remember_until, UTC))
        .on_conflict_do_nothing()
        .returning(ClientAssertionJti.jti)
    ).scalar_one_or_none()
    if inserted is None:
        raise InvalidClientError("client assertion was already used (jti)")


def check_assertion_parameters(assertion_type: str | None, assertion: str | None) -> str:
    """RFC 7521 §4.2: both parameters are required together; the type must be RFC 7523's.
    Returns the assertion."""
    if not assertion_type or not assertion:
        raise InvalidRequestError("client_assertion and client_assertion_type are required together")
    if assertion_type != CLIENT_ASSERTION_TYPE:
        raise InvalidClientError(f"client_assertion_type must be {CLIENT_ASSERTION_TYPE}")
    return assertion


__all__ = [
    "CLIENT_ASSERTION_TYPE",
    "AssertionPolicy",
    "check_assertion_parameters",
    "verify_client_assertion",
]
