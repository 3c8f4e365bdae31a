"""RFC 7517 signing keys: generation, rotation and the published JWK Set.

Keys live in ``auth.signing_keys`` with a status:

* ``active``   -- signs every new token; exactly one (a partial unique index enforces it);
* ``previous`` -- the key active before the last rotation; still published, so tokens it
  signed keep verifying until they expire;
* ``retired``  -- no longer published; tokens it signed stop verifying.

The ``kid`` is the RFC 7638 JWK thumbprint of the public key. Generation and rotation
take a transaction-scoped advisory lock, so concurrent starts do not race.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from joserfc.jwk import ECKey, RSAKey
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session, sessionmaker

from bsopt_auth.models import SigningKey
from bsopt_common.db import session_scope

log = logging.getLogger(__name__)

SUPPORTED_ALGS = ("RS256", "ES256")
ACTIVE, PREVIOUS, RETIRED = "active", "previous", "retired"
#: Arbitrary constant identifying this table's advisory lock.
_LOCK_ID = 0x6273_6F70_7461_7531 & 0x7FFF_FFFF_FFFF_FFFF

Key = RSAKey | ECKey


@dataclass(frozen=True)
class LoadedKey:
    kid: str
    alg: str
    status: str
    key: Key

    def public_jwk(self) -> dict[str, Any]:
        """The public JWK as published in the JWKS: kid, alg and use included."""
        return {**self.key.as_dict(private=False), "kid": self.kid, "alg": self.alg, "use": "sig"}


def generate_key(alg: str) -> tuple[str, Key]:
    """A fresh private key for ``alg`` and its RFC 7638 thumbprint (the kid)."""
    if alg == "RS256":
        key: Key = RSAKey.generate_key(2048, private=True)
    elif alg == "ES256":
        key = ECKey.generate_key("P-256", private=True)
    else:
        raise ValueError(f"unsupported signing algorithm {alg!r}; expected one of {SUPPORTED_ALGS}")
    return key.thumbprint(), key


def _import(row: SigningKey) -> LoadedKey:
    jwk = dict(row.private_jwk)
    key: Key = RSAKey.import_key(jwk) if jwk.get("kty") == "RSA" else ECKey.import_key(jwk)
    return LoadedKey(kid=row.kid, alg=row.alg, status=row.status, key=key)


def _lock(session: Session) -> None:
    session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})


def _insert_active(session: Session, alg: str) -> SigningKey:
    kid, key = generate_key(alg)
    row = SigningKey(kid=kid, private_jwk=key.as_dict(private=True), alg=alg, status=ACTIVE)
    session.add(row)
    session.flush()
    log.info("generated signing key kid=%s alg=%s", kid, alg)
    return row


def _active_row(session: Session) -> SigningKey | None:
    return session.scalars(select(SigningKey).where(SigningKey.status == ACTIVE)).one_or_none()


def get_active_key(session: Session, alg: str = "RS256") -> LoadedKey:
    """The active signing key; generates one (with ``alg``) if there is none."""
    row = _active_row(session)
    if row is None:
        _lock(session)
        row = _active_row(session) or _insert_active(session, alg)
    return _import(row)


def ensure_active_key(session_factory: sessionmaker[Session], alg: str = "RS256") -> str:
    """Make sure an active key exists (first start); returns its kid."""
    with session_scope(session_factory) as session:
        return get_active_key(session, alg).kid


def rotate_signing_key_in(session: Session, alg: str = "RS256") -> str:
    """Rotation inside the caller's transaction; see :func:`rotate_signing_key`."""
    _lock(session)
    session.execute(update(SigningKey).where(SigningKey.status == PREVIOUS).values(status=RETIRED))
    session.execute(update(SigningKey).where(SigningKey.status == ACTIVE).values(status=PREVIOUS))
    session.flush()
    return _insert_active(session, alg).kid


def rotate_signing_key(session_factory: sessionmaker[Session], alg: str = "RS256") -> str:
    """Create a new active key; the old active one becomes ``previous`` (still published
    and verifying) and any older ``previous`` key becomes ``retired`` (unpublished).
    Returns the new kid. Rotate no more often than the access token lifetime, or tokens
    signed two keys ago stop verifying before they expire."""
    with session_scope(session_factory) as session:
        return rotate_signing_key_in(session, alg)


def published_keys(session: Session) -> list[LoadedKey]:
    """Active and previous keys, active first."""
    rows = session.scalars(
        select(SigningKey)
        .where(SigningKey.status.in_((ACTIVE, PREVIOUS)))
        .order_by(SigningKey.status.asc(), SigningKey.created_at.desc())
    ).all()
    return [_import(r) for r in rows]


def jwks_document(session: Session) -> dict[str, list[dict[str, Any]]]:
    """The JWK Set (RFC 7517 §5): public parts of active and previous keys only."""
    return {"keys": [k.public_jwk() for k in published_keys(session)]}


__all__ = [
    "ACTIVE",
    "PREVIOUS",
    "RETIRED",
    "SUPPORTED_ALGS",
    "LoadedKey",
    "ensure_active_key",
    "generate_key",
    "get_active_key",
    "jwks_document",
    "published_keys",
    "rotate_signing_key",
    "rotate_signing_key_in",
]
