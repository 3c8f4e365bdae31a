"""Retention: delete what has expired and can no longer matter.

Rows of single-use or time-boxed things stay after they stop being usable, and without
a sweep the tables only grow. :func:`purge_expired` deletes, per table, the rows whose
``expires_at`` lies before the cut-off:

======================================  ==========================================================
table                                   cut-off
======================================  ==========================================================
``client_assertion_jtis``               ``now``: the assertion's own ``exp`` refuses it anyway
                                        (RFC 7523 §3, the replay window is its lifetime)
``dpop_proof_jtis``                     ``now``: the proof's ``iat`` window refuses it (RFC 9449 §11.1)
``revoked_access_tokens``               ``now``: the token is past ``exp`` and refused for that
``authorization_codes``                 ``now - grace``: a replayed code must still be recognised
                                        as used (and revoke its tokens, RFC 6749 §4.1.2) a while
``device_authorizations``               ``now - grace``
``token_families`` (+ refresh tokens,   ``now - grace``: the absolute refresh lifetime is over; the
cascade)                                grace outlives the last access token issued from the family,
                                        whose ``sid`` introspection looks up (RFC 7662)
``sessions``                            ``now - grace`` (codes and families keep ``NULL``)
======================================  ==========================================================

``grace`` is ``retention_grace_seconds`` (a day by default; at least the access-token
lifetime). Deletes run in batches of ``batch`` rows, each its own short transaction, so
a large backlog never holds locks for long. ``serve`` runs a pass with every key
maintenance pass (``key_maintenance_interval_seconds``).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from bsopt_auth.models import (
    AuthorizationCode,
    AuthSession,
    ClientAssertionJti,
    DeviceAuthorization,
    DPoPProofJti,
    RevokedAccessToken,
    TokenFamily,
)
from bsopt_common.db import session_scope

log = logging.getLogger(__name__)

_AT_EXPIRY = (ClientAssertionJti, DPoPProofJti, RevokedAccessToken)
_AFTER_GRACE = (AuthorizationCode, DeviceAuthorization, TokenFamily, AuthSession)


def purge_expired(factory: sessionmaker[Session], *, grace_seconds: float, now: datetime | None = None,
                  batch: int = 5000) -> dict[str, int]:
    """Delete expired rows (see the module docstring); return ``{table name: rows deleted}``
    for the tables that had any. ``grace_seconds`` must be >= 0 (ValueError otherwise)."""
    if grace_seconds < 0:
        raise ValueError("grace_seconds must be >= 0")
    now = now or datetime.now(UTC)
    deleted: dict[str, int] = {}
    for models, cutoff in ((_AT_EXPIRY, now), (_AFTER_GRACE, now - timedelta(seconds=grace_seconds))):
        for model in models:
            total = _delete_in_batches(factory, model, cutoff, batch)
            if total:
                deleted[model.__tablename__] = total
    if deleted:
        log.info("retention: deleted expired rows %s", deleted)
    return deleted


def _delete_in_batches(factory: sessionmaker[Session], model: type, cutoff: datetime, batch: int) -> int:
    """Rows are addressed by ``ctid`` (any primary key, composite ones too)."""
    table = model.__table__.fullname  # type: ignore[attr-defined]
    statement = text(f"DELETE FROM {table} WHERE ctid = ANY(ARRAY("  # our own table names
                     f"SELECT ctid FROM {table} WHERE expires_at < :cutoff LIMIT :batch))")
    total = 0
    while True:
        with session_scope(factory) as session:
            count = session.execute(statement, {"cutoff": cutoff, "batch": batch}).rowcount or 0  # type: ignore[attr-defined]
        total += count
        if count < batch:
            return total


__all__ = ["purge_expired"]
