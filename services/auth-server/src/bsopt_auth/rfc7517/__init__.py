"""RFC 7517 signing keys: generation, encryption at rest, rotation, revocation and the
published JWK Set.

Keys live in ``auth.signing_keys`` with a status:

* ``active``   -- signs every new token; exactly one (a partial unique index enforces it).
  The only status with private material, and that only encrypted (envelope AES-256-GCM
  under the key-encryption key, :mod:`bsopt_auth.rfc7517.encryption`);
* ``previous`` -- stopped signing (rotation); its private part is gone, its public JWK
  is still published so tokens it signed keep verifying for the verification window
  (longest token lifetime + leeway), after which :func:`retire_expired_keys` retires it;
* ``retired``  -- past the window: no longer published;
* ``revoked``  -- withdrawn at once (``keys revoke``): no longer published, whatever
  tokens it signed. Verifiers drop it within the JWKS ``max-age``.

The ``kid`` is the RFC 7638 JWK thumbprint of the public key. Generation, rotation and
revocation take a transaction-scoped advisory lock, so concurrent starts do not race.

The decrypted active key is cached in memory (:func:`get_active_key`): per database, for
at most ``active_key_cache_seconds`` (:func:`configure_active_key_cache`, 1 s by default)
before the active kid is read again (one indexed query; the key is decrypted again only
when the kid changed); rotation, revocation and maintenance in this process drop the cache
at once and bump :func:`key_generation` (the discovery and JWKS caches follow it).
Another process's rotation reaches this one within that TTL; the key it replaced stays
published meanwhile, so what it signs keeps verifying.

The KEK used by the functions below is the ``kek`` argument, else the process-wide one
set by :func:`configure_key_encryption` at start-up (``bootstrap``, the CLI), else the
one :class:`~bsopt_auth.config.AuthSettings` builds from the environment.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from joserfc.jwk import ECKey, RSAKey
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from bsopt_auth.models import SigningKey
from bsopt_auth.rfc7517.encryption import (
    KeyDecryptionError,
    KeyEncryptionKey,
    SealedKey,
    open_private_jwk,
    seal_private_jwk,
)
from bsopt_common.db import database_key, session_scope

log = logging.getLogger(__name__)

SUPPORTED_ALGS = ("RS256", "ES256")
ACTIVE, PREVIOUS, RETIRED, REVOKED = "active", "previous", "retired", "revoked"
#: Arbitrary constant identifying this table's advisory lock.
_LOCK_ID = 0x6273_6F70_7461_7531 & 0x7FFF_FFFF_FFFF_FFFF

Key = RSAKey | ECKey

_kek: KeyEncryptionKey | None = None


def configure_key_encryption(kek: KeyEncryptionKey | None) -> None:
    """Set the process-wide key-encryption key (``None``: back to the environment's)."""
    global _kek
    _kek = kek
    invalidate_key_cache()


# --- the active key cache ---------------------------------------------------------------

_cache_lock = threading.Lock()
#: database URL -> (kek id, loaded active key, monotonic time its kid was last confirmed)
_active_cache: dict[str, tuple[str, LoadedKey, float]] = {}
_active_cache_seconds = 1.0
_generation = 0


def configure_active_key_cache(seconds: float) -> None:
    """How long the cached active key is used before its kid is checked again (0: every
    call reads the active kid)."""
    global _active_cache_seconds
    _active_cache_seconds = max(0.0, seconds)
    invalidate_key_cache()


def key_generation() -> int:
    """A counter bumped whenever this process changes the key set (rotation, revocation,
    retirement, first key) or drops the cache: caches of derived documents compare it."""
    return _generation


def invalidate_key_cache() -> None:
    """Forget the cached active keys and bump :func:`key_generation`."""
    global _generation
    with _cache_lock:
        _active_cache.clear()
        _generation += 1


def _cache_key(session: Session) -> str:
    return database_key(session.get_bind())


def current_key_encryption_key() -> KeyEncryptionKey:
    """The configured KEK, or the one the environment's settings give."""
    global _kek
    if _kek is None:
        from bsopt_auth.config import AuthSettings

        _kek = AuthSettings().key_encryption_key_provider()
        log.info("signing keys: key-encryption key %s (from the environment)", _kek.key_id)
    return _kek


@dataclass(frozen=True)
class LoadedKey:
    """The active key with its (decrypted, in-memory only) private part."""

    kid: str
    alg: str
    status: str
    key: Key

    def public_jwk(self) -> dict[str, Any]:
        """The public JWK as published in the JWKS: kid, alg and use included."""
        return {**self.key.as_dict(private=False), "kid": self.kid, "alg": self.alg, "use": "sig"}


@dataclass(frozen=True)
class KeyInfo:
    """What ``keys list`` shows of a key: never private material."""

    kid: str
    alg: str
    status: str
    created_at: datetime
    deactivated_at: datetime | None
    retired_at: datetime | None
    kek_id: str | None


def generate_key(alg: str) -> tuple[str, Key]:
    """A fresh private key for ``alg`` and its RFC 7638 thumbprint (the kid)."""
    if alg == "RS256":
        key: Key = RSAKey.generate_key(2048, private=True)
    elif alg == "ES256":
        key = ECKey.generate_key("P-256", private=True)
    else:
        raise ValueError(f"unsupported signing algorithm {alg!r}; expected one of {SUPPORTED_ALGS}")
    return key.thumbprint(), key


def _import_private(row: SigningKey, kek: KeyEncryptionKey) -> LoadedKey:
    if row.private_ciphertext is None or row.private_nonce is None or row.wrapped_dek is None or not row.kek_id:
        raise KeyDecryptionError(f"signing key {row.kid} has no private part")
    sealed = SealedKey(row.private_ciphertext, row.private_nonce, row.wrapped_dek, row.kek_id)
    jwk = open_private_jwk(sealed, kid=row.kid, alg=row.alg, kek=kek)
    key: Key = RSAKey.import_key(jwk) if jwk.get("kty") == "RSA" else ECKey.import_key(jwk)  # type: ignore[arg-type]
    if key.thumbprint() != row.kid:
        raise KeyDecryptionError(f"signing key {row.kid} decrypts to another key")
    return LoadedKey(kid=row.kid, alg=row.alg, status=row.status, key=key)


def _lock(session: Session) -> None:
    session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})


def _now() -> datetime:
    return datetime.now(UTC)


def _insert_active(session: Session, alg: str, kek: KeyEncryptionKey) -> SigningKey:
    kid, key = generate_key(alg)
    sealed = seal_private_jwk(key.as_dict(private=True), kid=kid, alg=alg, kek=kek)
    row = SigningKey(
        kid=kid, public_jwk=key.as_dict(private=False), alg=alg, status=ACTIVE,
        private_ciphertext=sealed.ciphertext, private_nonce=sealed.nonce,
        wrapped_dek=sealed.wrapped_dek, kek_id=sealed.kek_id,
    )
    session.add(row)
    session.flush()
    log.info("generated signing key kid=%s alg=%s kek=%s", kid, alg, sealed.kek_id)
    return row


#: Values that strip a key of its private part.
_NO_PRIVATE: dict[str, Any] = {"private_ciphertext": None, "private_nonce": None, "wrapped_dek": None,
                               "kek_id": None}


def _active_row(session: Session) -> SigningKey | None:
    return session.scalars(select(SigningKey).where(SigningKey.status == ACTIVE)).one_or_none()


def load_active_key(session: Session, alg: str = "RS256", kek: KeyEncryptionKey | None = None) -> LoadedKey:
    """The active signing key read and decrypted now (no cache); generates one (with
    ``alg``) if there is none."""
    kek = kek or current_key_encryption_key()
    row = _active_row(session)
    if row is None:
        _lock(session)
        row = _active_row(session)
        if row is None:
            row = _insert_active(session, alg, kek)
            invalidate_key_cache()
    return _import_private(row, kek)


def fresh_active_key(session_factory: sessionmaker[Session], kek: KeyEncryptionKey | None = None) -> LoadedKey | None:
    """The cached active key while it is fresh (no session, no connection), else None:
    then :func:`get_active_key` reads it."""
    kek = kek or current_key_encryption_key()
    cached = _active_cache.get(database_key(session_factory.kw.get("bind")))
    if cached is not None and cached[0] == kek.key_id and time.monotonic() - cached[2] < _active_cache_seconds:
        return cached[1]
    return None


def get_active_key(session: Session, alg: str = "RS256", kek: KeyEncryptionKey | None = None) -> LoadedKey:
    """The active signing key, decrypted, from the cache (see the module docstring): within
    the TTL without touching ``session`` (no connection); then one query for the active
    kid, and a fresh decryption only when it changed. Generates a key if there is none."""
    kek = kek or current_key_encryption_key()
    where = _cache_key(session)
    now = time.monotonic()
    generation = _generation
    cached = _active_cache.get(where)
    if cached is not None and cached[0] == kek.key_id:
        if now - cached[2] < _active_cache_seconds:
            return cached[1]
        kid = session.scalar(select(SigningKey.kid).where(SigningKey.status == ACTIVE))
        if kid == cached[1].kid:
            with _cache_lock:
                if generation == _generation:
                    _active_cache[where] = (cached[0], cached[1], now)
            return cached[1]
    loaded = load_active_key(session, alg, kek)
    with _cache_lock:
        if generation == _generation:  # not invalidated while loading
            _active_cache[where] = (kek.key_id, loaded, now)
    return loaded


def ensure_active_key(
    session_factory: sessionmaker[Session], alg: str = "RS256", kek: KeyEncryptionKey | None = None
) -> str:
    """Make sure an active key exists (first start) and decrypts (now, not from the cache);
    returns its kid."""
    with session_scope(session_factory) as session:
        return load_active_key(session, alg, kek).kid


def _deactivate_active(session: Session, now: datetime) -> None:
    session.execute(
        update(SigningKey).where(SigningKey.status == ACTIVE)
        .values(status=PREVIOUS, deactivated_at=now, **_NO_PRIVATE)
    )
    session.flush()


def rotate_signing_key_in(session: Session, alg: str = "RS256", kek: KeyEncryptionKey | None = None) -> str:
    """Rotation inside the caller's transaction; see :func:`rotate_signing_key`."""
    kek = kek or current_key_encryption_key()
    _lock(session)
    _deactivate_active(session, _now())
    kid = _insert_active(session, alg, kek).kid
    invalidate_key_cache()
    return kid


def rotate_signing_key(
    session_factory: sessionmaker[Session], alg: str = "RS256", kek: KeyEncryptionKey | None = None
) -> str:
    """Create a new active key; the old active one becomes ``previous``: its private part
    is deleted, its public key stays published until :func:`retire_expired_keys` finds
    it past the verification window. Returns the new kid."""
    with session_scope(session_factory) as session:
        kid = rotate_signing_key_in(session, alg, kek)
    invalidate_key_cache()  # again once committed: a load in between saw the old key
    return kid


def revoke_signing_key(
    session_factory: sessionmaker[Session], kid: str, alg: str = "RS256", kek: KeyEncryptionKey | None = None
) -> str | None:
    """Withdraw ``kid`` at once: status ``revoked``, private part deleted, gone from the
    JWKS. Revoking the active key rotates first (a fresh active key). Returns the new
    active kid when one was made, else None. Raises KeyError for an unknown kid."""
    with session_scope(session_factory) as session:
        _lock(session)
        row = session.get(SigningKey, kid)
        if row is None:
            raise KeyError(kid)
        new_kid = None
        now = _now()
        if row.status == ACTIVE:
            _deactivate_active(session, now)
            new_kid = _insert_active(session, alg, kek or current_key_encryption_key()).kid
        session.execute(
            update(SigningKey).where(SigningKey.kid == kid)
            .values(status=REVOKED, retired_at=now, deactivated_at=func.coalesce(SigningKey.deactivated_at, now),
                    **_NO_PRIVATE)
            .execution_options(synchronize_session=False)
        )
        session.expire_all()
    invalidate_key_cache()
    log.warning("revoked signing key kid=%s", kid)
    return new_kid


def retire_expired_keys(session: Session, window_seconds: float, now: datetime | None = None) -> list[str]:
    """``previous`` keys that stopped signing more than ``window_seconds`` ago leave the
    JWKS (status ``retired``). Returns their kids."""
    now = now or _now()
    rows = session.scalars(
        select(SigningKey).where(
            SigningKey.status == PREVIOUS,
            SigningKey.deactivated_at < now - timedelta(seconds=window_seconds),
        )
    ).all()
    for row in rows:
        row.status, row.retired_at = RETIRED, now
    session.flush()
    for row in rows:
        log.info("retired signing key kid=%s", row.kid)
    if rows:
        invalidate_key_cache()
    return [r.kid for r in rows]


def maintain_keys(
    session_factory: sessionmaker[Session],
    *,
    alg: str,
    rotation_days: float,
    window_seconds: float,
    kek: KeyEncryptionKey | None = None,
    now: datetime | None = None,
) -> str | None:
    """The scheduled job: retire previous keys past the window; rotate when the active key
    is older than ``rotation_days`` (0 = never). Returns the new kid if it rotated."""
    now = now or _now()
    with session_scope(session_factory) as session:
        _lock(session)
        retire_expired_keys(session, window_seconds, now)
        active = _active_row(session)
        if active is None:
            kid = load_active_key(session, alg, kek).kid
        elif rotation_days > 0 and active.created_at <= now - timedelta(days=rotation_days):
            kid = rotate_signing_key_in(session, alg, kek)
            log.info("scheduled rotation: kid=%s replaces kid=%s", kid, active.kid)
        else:
            return None
    invalidate_key_cache()  # committed: drop what was loaded meanwhile
    return kid


def list_keys(session: Session) -> list[KeyInfo]:
    """Every key, newest first (no private material)."""
    rows = session.scalars(select(SigningKey).order_by(SigningKey.created_at.desc())).all()
    return [KeyInfo(r.kid, r.alg, r.status, r.created_at, r.deactivated_at, r.retired_at, r.kek_id)
            for r in rows]


def published_keys(session: Session) -> list[dict[str, Any]]:
    """Public JWKs of the active and previous keys, active first."""
    rows = session.scalars(
        select(SigningKey)
        .where(SigningKey.status.in_((ACTIVE, PREVIOUS)))
        .order_by(SigningKey.status.asc(), SigningKey.created_at.desc())
    ).all()
    return [{**r.public_jwk, "kid": r.kid, "alg": r.alg, "use": "sig"} for r in rows]


def jwks_document(session: Session) -> dict[str, list[dict[str, Any]]]:
    """The JWK Set (RFC 7517 §5): public parts of active and previous keys only."""
    return {"keys": published_keys(session)}


__all__ = [
    "ACTIVE",
    "PREVIOUS",
    "RETIRED",
    "REVOKED",
    "SUPPORTED_ALGS",
    "KeyDecryptionError",
    "KeyInfo",
    "LoadedKey",
    "configure_active_key_cache",
    "configure_key_encryption",
    "current_key_encryption_key",
    "ensure_active_key",
    "fresh_active_key",
    "generate_key",
    "get_active_key",
    "invalidate_key_cache",
    "jwks_document",
    "key_generation",
    "list_keys",
    "load_active_key",
    "maintain_keys",
    "published_keys",
    "retire_expired_keys",
    "revoke_signing_key",
    "rotate_signing_key",
    "rotate_signing_key_in",
]
