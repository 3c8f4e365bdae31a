"""Seen DPoP proof ``jti`` s in Postgres, shared by every replica of a resource server.

:class:`~bsopt_common.security.dpop.MemoryJtiStore` remembers the proofs one process saw:
behind a load balancer a proof replayed to another replica within its ``iat`` window
(RFC 9449 §11.1) would pass. :class:`DatabaseJtiStore` keeps them in one table of the
service's own schema instead (:func:`dpop_jti_table`; the service's migration creates it
with explicit DDL; its models hold the table), so a replay is refused whichever replica it reaches.

``use`` is one ``INSERT ... ON CONFLICT`` round trip: a key is new, or it was remembered
but has expired (then it is taken over), else the proof is a replay. One call in
``purge_one_in`` also deletes expired rows. Blocking: :mod:`.fastapi` runs it in a worker
thread (``blocking = True``).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

from sqlalchemy import Column, DateTime, Index, MetaData, String, Table, delete, func
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session, sessionmaker

from bsopt_common.db import session_scope

TABLE_NAME = "dpop_proof_jtis"


def dpop_jti_table(metadata: MetaData) -> Table:
    """``dpop_proof_jtis`` in ``metadata`` (its schema): ``key`` (hex SHA-256 of thumbprint
    and jti, 64 chars) and ``expires_at`` (when the proof's ``iat`` can no longer be
    accepted). Defined once per metadata; a second call returns the same table."""
    existing = metadata.tables.get(f"{metadata.schema}.{TABLE_NAME}" if metadata.schema else TABLE_NAME)
    if existing is not None:
        return existing
    return Table(
        TABLE_NAME, metadata,
        Column("key", String(64), primary_key=True),
        Column("expires_at", DateTime(timezone=True), nullable=False),
        Index(f"{TABLE_NAME}_expires_at_idx", "expires_at"),
    )


class DatabaseJtiStore:
    """A :class:`~bsopt_common.security.dpop.JtiStore` over :func:`dpop_jti_table`."""

    blocking = True

    def __init__(self, session_factory: sessionmaker[Session], table: Table, *, purge_one_in: int = 200) -> None:
        self.session_factory = session_factory
        self.table = table
        self.purge_one_in = max(1, purge_one_in)

    def use(self, key: str, remember_until: float) -> bool:
        """Record ``key`` until ``remember_until`` (epoch seconds); False when another
        request (on any replica) recorded it and it has not expired."""
        t = self.table
        until = datetime.fromtimestamp(remember_until, UTC)
        statement = (pg_insert(t).values(key=key, expires_at=until)
                     .on_conflict_do_update(index_elements=[t.c.key], set_={"expires_at": until},
                                            where=t.c.expires_at < func.now())
                     .returning(t.c.key))
        with session_scope(self.session_factory) as session:
            fresh = session.execute(statement).first() is not None
            if random.randrange(self.purge_one_in) == 0:  # not security: when to sweep
                session.execute(delete(t).where(t.c.expires_at < func.now()))
        return fresh


__all__ = ["TABLE_NAME", "DatabaseJtiStore", "dpop_jti_table"]
