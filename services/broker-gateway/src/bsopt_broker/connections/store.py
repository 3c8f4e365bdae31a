"""Broker connections and started OAuth connections in schema ``broker``
(``broker_connections``, ``broker_oauth_states``; revision 0006).

Every read and write names the owner: another user's connection is not found. Credentials
are sealed by :class:`~.crypto.CredentialsCipher` before they reach a statement and
opened only by :meth:`ConnectionStore.credentials`; a revoked connection keeps its row
(status ``revoked``) with the credentials deleted. Blocking: call from a worker thread.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy import delete, func, select, true, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.orm import Session, sessionmaker

from bsopt_broker import models
from bsopt_broker.connections.crypto import CredentialsCipher, CredentialsDecryptionError
from bsopt_broker.domain.venue import AccountNotFound
from bsopt_common.db import session_scope
from bsopt_common.errors import InvalidArgument

log = logging.getLogger(__name__)


class ConnectionStatus(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    REVOKED = "revoked"


class ConnectionMethod(StrEnum):
    OAUTH = "oauth"
    API_KEY = "api_key"


class ConnectionNotFound(AccountNotFound):
    """No such connection for this user (also: another user's, or revoked)."""


class StateRefused(InvalidArgument):
    """An OAuth ``state`` that is unknown, used already, expired or bound to another user."""


@dataclass(frozen=True, slots=True)
class Connection:
    """A connection as callers see it: never its credentials."""

    connection_id: str
    user_id: str
    broker: str
    method: ConnectionMethod
    status: ConnectionStatus
    account_kind: str
    allow_live: bool
    scope: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class PendingState:
    """A consumed OAuth state: who started it, for what, and the PKCE verifier."""

    user_id: str
    connection_id: str
    broker: str
    account_kind: str
    allow_live: bool
    code_verifier: str
    redirect_uri: str


def state_digest(state: str) -> str:
    """What is stored of a state: its SHA-256 (a database read yields no usable state)."""
    return hashlib.sha256(state.encode()).hexdigest()


def _connection(row: RowMapping) -> Connection:
    return Connection(connection_id=row["connection_id"], user_id=row["user_id"], broker=row["broker"],
                      method=ConnectionMethod(row["method"]), status=ConnectionStatus(row["status"]),
                      account_kind=row["account_kind"], allow_live=row["allow_live"], scope=row["scope"],
                      created_at=row["created_at"], updated_at=row["updated_at"])


_COLUMNS = [c for c in models.broker_connections.c if c.name not in ("credentials", "credentials_key_id")]


class ConnectionStore:
    def __init__(self, session_factory: sessionmaker[Session], cipher: CredentialsCipher):
        self._sf = session_factory
        self._cipher = cipher

    # -- connections ---------------------------------------------------------------------

    def create(self, *, connection_id: str, user_id: str, broker: str, method: ConnectionMethod,
               account_kind: str, allow_live: bool, scope: str, credentials: dict[str, str]) -> Connection:
        sealed = self._cipher.seal(connection_id, credentials)
        now = datetime.now(UTC)
        t = models.broker_connections
        with session_scope(self._sf) as s:
            s.execute(t.insert().values(
                connection_id=connection_id, user_id=user_id, broker=broker, method=method.value,
                status=ConnectionStatus.ACTIVE.value, account_kind=account_kind, allow_live=allow_live,
                scope=scope, credentials=sealed, credentials_key_id=self._cipher.key_id, created_at=now,
                updated_at=now))
        return self.get(connection_id, user_id)

    def get(self, connection_id: str, user_id: str) -> Connection:
        """The user's connection (revoked ones are not found). Raises ConnectionNotFound."""
        found = self.find(connection_id)
        if found is None or found.user_id != user_id or found.status is ConnectionStatus.REVOKED:
            raise ConnectionNotFound(f"no broker connection {connection_id!r} for this user")
        return found

    def find(self, connection_id: str) -> Connection | None:
        """Any connection by id, whoever owns it, revoked ones included (routing)."""
        t = models.broker_connections
        with session_scope(self._sf) as s:
            row = s.execute(select(*_COLUMNS).where(t.c.connection_id == connection_id)).mappings().one_or_none()
        return None if row is None else _connection(row)

    def list(self, user_id: str) -> list[Connection]:
        """The user's connections that are not revoked, oldest first."""
        t = models.broker_connections
        with session_scope(self._sf) as s:
            rows = s.execute(select(*_COLUMNS).where(t.c.user_id == user_id,
                                                     t.c.status != ConnectionStatus.REVOKED.value)
                             .order_by(t.c.created_at, t.c.connection_id)).mappings().all()
        return [_connection(r) for r in rows]

    def credentials(self, connection_id: str) -> dict[str, str]:
        """The opened credentials of a connection. Raises ConnectionNotFound (none stored),
        CredentialsDecryptionError (another key, or a tampered or moved row)."""
        t = models.broker_connections
        with session_scope(self._sf) as s:
            row = s.execute(select(t.c.credentials, t.c.credentials_key_id)
                            .where(t.c.connection_id == connection_id)).one_or_none()
        if row is None or row.credentials is None:
            raise ConnectionNotFound(f"no credentials stored for broker connection {connection_id!r}")
        return self._cipher.open_sealed(connection_id, bytes(row.credentials), row.credentials_key_id)

    def sealed_with_other_keys(self) -> int:
        """How many connections' credentials a key other than the current one sealed."""
        t = models.broker_connections
        with session_scope(self._sf) as s:
            return int(s.scalar(select(func.count()).select_from(t).where(
                t.c.credentials.is_not(None), t.c.credentials_key_id.is_distinct_from(self._cipher.key_id))) or 0)

    def reseal(self, batch_size: int = 100) -> tuple[int, int]:
        """Re-seal, under the current key, every connection's credentials that another key
        sealed (key rotation; see :mod:`bsopt_broker.connections.crypto`). Each row is
        rewritten only if it did not change meanwhile. Returns (resealed, failed): a row
        whose key this process does not have is counted as failed, logged by key id and
        connection id, and left as it was."""
        t = models.broker_connections
        resealed = failed = 0
        skipped: set[str] = set()
        while True:
            with session_scope(self._sf) as s:
                rows = s.execute(
                    select(t.c.connection_id, t.c.credentials, t.c.credentials_key_id)
                    .where(t.c.credentials.is_not(None), t.c.credentials_key_id.is_distinct_from(self._cipher.key_id),
                           t.c.connection_id.not_in(skipped) if skipped else true())
                    .order_by(t.c.connection_id).limit(batch_size)).all()
            if not rows:
                return resealed, failed
            for row in rows:
                try:
                    plain = self._cipher.open_sealed(row.connection_id, bytes(row.credentials),
                                                     row.credentials_key_id)
                except CredentialsDecryptionError as exc:
                    log.error("cannot reseal: %s", exc)
                    skipped.add(row.connection_id)
                    failed += 1
                    continue
                with session_scope(self._sf) as s:
                    done = s.execute(update(t).where(
                        t.c.connection_id == row.connection_id, t.c.credentials == row.credentials,
                    ).values(credentials=self._cipher.seal(row.connection_id, plain),
                             credentials_key_id=self._cipher.key_id)).rowcount
                if done:
                    resealed += 1
                else:
                    skipped.add(row.connection_id)  # changed meanwhile (revoked, re-created): left alone

    def set_status(self, connection_id: str, user_id: str, status: ConnectionStatus) -> Connection:
        """Pause, resume or revoke the user's connection; revoking deletes its credentials.
        Raises ConnectionNotFound (also for a revoked one)."""
        t = models.broker_connections
        values: dict[str, object] = {"status": status.value, "updated_at": datetime.now(UTC)}
        if status is ConnectionStatus.REVOKED:
            values.update(credentials=None, credentials_key_id=None)
        with session_scope(self._sf) as s:
            done = s.execute(update(t).where(t.c.connection_id == connection_id, t.c.user_id == user_id,
                                             t.c.status != ConnectionStatus.REVOKED.value).values(**values)
                             .returning(*_COLUMNS)).mappings().one_or_none()
        if done is None:
            raise ConnectionNotFound(f"no broker connection {connection_id!r} for this user")
        return _connection(done)

    # -- OAuth states ----------------------------------------------------------------------

    def add_state(self, state: str, *, user_id: str, connection_id: str, broker: str, account_kind: str,
                  allow_live: bool, code_verifier: str, redirect_uri: str, ttl_s: int) -> datetime:
        """Remember a started connection until ``ttl_s`` from now (returned); expired
        states are deleted on the way."""
        now = datetime.now(UTC)
        expires = now + timedelta(seconds=ttl_s)
        t = models.broker_oauth_states
        with session_scope(self._sf) as s:
            s.execute(delete(t).where(t.c.expires_at < now - timedelta(days=1)))
            s.execute(t.insert().values(
                state_hash=state_digest(state), user_id=user_id, connection_id=connection_id, broker=broker,
                account_kind=account_kind, allow_live=allow_live,
                code_verifier=self._cipher.seal(connection_id, {"code_verifier": code_verifier}),
                redirect_uri=redirect_uri, expires_at=expires, created_at=now))
        return expires

    def consume_state(self, state: str, user_id: str | None) -> PendingState:
        """Use a state once: the first call wins (one UPDATE .. WHERE used_at IS NULL), any
        later one is refused. ``user_id``: the caller's user when known; a state bound to
        another user is refused (and stays usable by its own). Raises StateRefused (the
        message says which, never the state)."""
        if not state:
            raise StateRefused("state is required")
        now = datetime.now(UTC)
        t = models.broker_oauth_states
        digest = state_digest(state)
        with session_scope(self._sf) as s:
            conditions = [t.c.state_hash == digest, t.c.used_at.is_(None), t.c.expires_at > now]
            if user_id is not None:
                conditions.append(t.c.user_id == user_id)
            row = s.execute(update(t).where(*conditions).values(used_at=now).returning(*t.c)).mappings().one_or_none()
            if row is None:
                known = s.execute(select(t.c.used_at, t.c.expires_at, t.c.user_id)
                                  .where(t.c.state_hash == digest)).mappings().one_or_none()
        if row is None:
            if known is None or (user_id is not None and known["user_id"] != user_id):
                raise StateRefused("unknown state: it was not issued by this server for this user")
            if known["used_at"] is not None:
                raise StateRefused("this state was used already: start the connection again")
            raise StateRefused("this state has expired: start the connection again")
        verifier = self._cipher.open_sealed(row["connection_id"], bytes(row["code_verifier"]),
                                            None)["code_verifier"]
        return PendingState(user_id=row["user_id"], connection_id=row["connection_id"], broker=row["broker"],
                            account_kind=row["account_kind"], allow_live=row["allow_live"], code_verifier=verifier,
                            redirect_uri=row["redirect_uri"])
