"""The audit trail: structured, secret-free facts about authentication and administration.

Every fact is one row of ``auth.audit_events`` (:class:`bsopt_auth.models.AuditEvent`)
and one event on ``auth.audit.v1`` (:data:`bsopt_common.topics.AUTH_AUDIT`, payload
``bsopt.auth_server.v1.AuditEvent``) staged in the transactional outbox **in the same
transaction** (:func:`record`); :func:`emit` opens its own transaction for facts that
have none (a refused login, a token response). The outbox relay
(:mod:`bsopt_auth.bootstrap`) publishes them, signed with the auth-server's own key pair
(client ``auth-server``), only when Kafka is configured; otherwise the rows wait.

Fields: event type (:data:`EVENT_TYPES`), time, user id, client id, ``ip_hash`` (hex
HMAC-SHA256 of the normalised address with the throttle key secret, the 16-character
prefix :meth:`bsopt_auth.throttle.Limiter.ip_hash` logs), outcome (``success`` /
``failure``), reason (an RFC 6749 §5.2 error code, ``invalid_credentials``,
``disabled``...), and ``details`` (non-secret strings: ``grant_type``, ``kid``,
``actor``...). Never a secret, password, code or token: :func:`record` refuses detail
names that suggest one.

Each fact is also logged on the ``bsopt_auth.audit`` logger (as ``throttle`` did first).

Batching (``audit_batch_seconds``, on while ``serve`` runs): :func:`emit`'s facts (those
with no transaction of their own: token responses, refused logins) are queued and written
by one background thread every ``audit_batch_seconds`` (0.1 s by default), up to 1,000 per
transaction, instead of one transaction and disk flush per token response. Shutdown
flushes the queue; a crash loses at most one interval of them (their log lines are
written at once). :func:`record` (facts joining a change's transaction) is never batched.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from sqlalchemy import insert
from sqlalchemy.orm import Session, sessionmaker

from bsopt.auth_server.v1 import events_pb2
from bsopt_auth.config import SCHEMA, AuthSettings
from bsopt_auth.models import AuditEvent
from bsopt_common.codec import timestamp
from bsopt_common.db import session_scope
from bsopt_common.events import Outbox
from bsopt_common.topics import AUTH_AUDIT

log = logging.getLogger("bsopt_auth.audit")

#: The OAuth client the auth-server publishes its events as (its own key pair).
AUTH_SERVER_CLIENT_ID = "auth-server"

LOGIN_SUCCEEDED = "auth.login_succeeded"
LOGIN_FAILED = "auth.login_failed"
TOKEN_ISSUED = "auth.token_issued"
TOKEN_REFUSED = "auth.token_refused"
REFRESH_REUSE_DETECTED = "auth.refresh_reuse_detected"
ACCOUNT_LOCKED = "auth.account_locked"
CLIENT_CREATED = "auth.client_created"
CLIENT_CHANGED = "auth.client_changed"
CLIENT_DELETED = "auth.client_deleted"
CLIENT_SECRET_ROTATED = "auth.client_secret_rotated"
USER_CREATED = "auth.user_created"
USER_DISABLED = "auth.user_disabled"
USER_ENABLED = "auth.user_enabled"
USER_PASSWORD_RESET = "auth.user_password_reset"
KEY_ROTATED = "auth.key_rotated"
KEY_REVOKED = "auth.key_revoked"

EVENT_TYPES = frozenset({
    LOGIN_SUCCEEDED, LOGIN_FAILED, TOKEN_ISSUED, TOKEN_REFUSED, REFRESH_REUSE_DETECTED, ACCOUNT_LOCKED,
    CLIENT_CREATED, CLIENT_CHANGED, CLIENT_DELETED, CLIENT_SECRET_ROTATED,
    USER_CREATED, USER_DISABLED, USER_ENABLED, USER_PASSWORD_RESET, KEY_ROTATED, KEY_REVOKED,
})

Outcome = Literal["success", "failure"]
#: Detail names never accepted (they would carry credentials).
_FORBIDDEN_DETAIL_WORDS = ("secret", "password", "token", "code", "assertion", "verifier")

#: The auth-server's outbox (``auth.outbox``).
OUTBOX = Outbox(SCHEMA)


def hash_ip(settings: AuthSettings, address: str | None) -> str | None:
    """What is stored for a caller's address: the throttle's HMAC prefix, or None."""
    if not address:
        return None
    return _ip_hash(settings.derived_secret("throttle"), address)


@functools.lru_cache(maxsize=4096)
def _ip_hash(secret: bytes, address: str) -> str:
    """(Parsing the address and the HMAC cost half of a fact; callers repeat.)"""
    from bsopt_auth.throttle import _hmac_hex, normalize_ip

    return _hmac_hex(secret, normalize_ip(address))[:16]


@dataclass(frozen=True)
class _Fact:
    """One audit fact, checked and hashed: its row's values and its event."""

    id: uuid.UUID
    row: dict[str, object]
    event: events_pb2.AuditEvent


def _fact(
    settings: AuthSettings, event_type: str, *, outcome: Outcome, occurred_at: datetime | None = None,
    user_id: uuid.UUID | str | None = None, client_id: str | None = None, ip: str | None = None,
    ip_hash: str | None = None, reason: str | None = None, details: Mapping[str, str] | None = None,
) -> _Fact:
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown audit event type {event_type!r}")
    clean = {str(k): str(v) for k, v in (details or {}).items() if v is not None}
    for name in clean:
        if any(word in name.lower() for word in _FORBIDDEN_DETAIL_WORDS) and name != "grant_type":
            raise ValueError(f"audit detail {name!r} could carry a credential")
    user = None
    if user_id:
        try:
            user = user_id if isinstance(user_id, uuid.UUID) else uuid.UUID(str(user_id))
        except ValueError:
            user = None
    fact_id, when = uuid.uuid4(), occurred_at or datetime.now(UTC)
    client = (client_id or None) and client_id[:255]
    hashed = ip_hash or hash_ip(settings, ip)
    why = (reason or None) and reason[:200]
    row: dict[str, object] = dict(id=fact_id, event_type=event_type, occurred_at=when, user_id=user,
                                  client_id=client, ip_hash=hashed, outcome=outcome, reason=why, details=clean)
    event = events_pb2.AuditEvent(
        audit_id=str(fact_id), event_type=event_type, occurred_at=timestamp(when), user_id=str(user or ""),
        client_id=client or "", ip_hash=hashed or "", outcome=outcome, reason=why or "", details=clean,
    )
    log.info("audit %s outcome=%s user_id=%s client_id=%s ip=%s reason=%s", event_type, outcome, user or "-",
             client or "-", hashed or "-", why or "-",
             extra={"event": event_type, "outcome": outcome, "audit_id": str(fact_id)})
    return _Fact(fact_id, row, event)


def record(
    session: Session, settings: AuthSettings, event_type: str, *, outcome: Outcome,
    user_id: uuid.UUID | str | None = None, client_id: str | None = None, ip: str | None = None,
    ip_hash: str | None = None, reason: str | None = None, details: Mapping[str, str] | None = None,
) -> uuid.UUID:
    """Add one audit row and its ``auth.audit.v1`` outbox event to ``session``'s
    transaction; return the row id. ``ip`` is hashed here (or pass ``ip_hash``).
    ValueError for an unknown event type or a detail name that could carry a credential."""
    fact = _fact(settings, event_type, outcome=outcome, user_id=user_id, client_id=client_id, ip=ip,
                 ip_hash=ip_hash, reason=reason, details=details)
    _insert(session, [fact])
    return fact.id


def _insert(session: Session, facts: Sequence[_Fact]) -> None:
    """The facts' rows and outbox events: one multi-row INSERT each, whatever their number."""
    session.execute(insert(AuditEvent), [f.row for f in facts])
    OUTBOX.add_many(session, AUTH_AUDIT, [(f.event, str(f.id)) for f in facts])


def batching_for(session_factory: sessionmaker[Session]) -> bool:
    """Whether :func:`emit` only queues facts for ``session_factory`` (no blocking write)."""
    writer = _writer
    return writer is not None and writer.session_factory is session_factory


_COPY_COLUMNS = ("id", "event_type", "occurred_at", "user_id", "client_id", "ip_hash", "outcome", "reason", "details")


def _copy(session: Session, facts: Sequence[_Fact]) -> None:
    """:func:`_insert` through ``COPY ... FROM STDIN`` (the batch writer's batches: far
    less Python per row than an INSERT's parameters)."""
    if not facts:
        return
    raw = session.connection().connection.driver_connection
    assert isinstance(raw, psycopg.Connection)
    statement = sql.SQL("COPY {}.{} ({}) FROM STDIN").format(
        sql.Identifier(SCHEMA), sql.Identifier(AuditEvent.__tablename__),
        sql.SQL(", ").join(sql.Identifier(c) for c in _COPY_COLUMNS))
    with raw.cursor() as cursor, cursor.copy(statement) as copy:
        for fact in facts:
            row = fact.row
            copy.write_row([*(row[c] for c in _COPY_COLUMNS[:-1]), Jsonb(row["details"])])
    OUTBOX.copy_many(session, AUTH_AUDIT, [(f.event, str(f.id)) for f in facts])


def emit(settings: AuthSettings, session_factory: sessionmaker[Session], event_type: str, *,
         outcome: Outcome, **fields: object) -> None:
    """:func:`record` in a transaction of its own (facts with no change to join), or queued
    for the batch writer while one runs for ``session_factory``. A failure to write is
    logged, never raised: the response the fact describes is sent."""
    writer = _writer
    if writer is not None and writer.session_factory is session_factory:
        writer.submit(event_type, outcome, fields)
        return
    try:
        with session_scope(session_factory) as session:
            record(session, settings, event_type, outcome=outcome, **fields)  # type: ignore[arg-type]
    except Exception:
        log.exception("audit event %s could not be stored", event_type)


_BATCH_MAX = 1000


class BatchWriter:
    """Writes queued :func:`emit` facts in batches from one daemon thread (see the module
    docstring). :meth:`close` flushes what is queued and stops."""

    def __init__(self, settings: AuthSettings, session_factory: sessionmaker[Session], interval_seconds: float):
        self.settings = settings
        self.session_factory = session_factory
        self.interval_seconds = interval_seconds
        self._queue: queue.SimpleQueue[tuple[str, Outcome, dict[str, object]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    def submit(self, event_type: str, outcome: Outcome, fields: Mapping[str, object]) -> None:
        """Queue a fact, timed now (not when the batch is written)."""
        self._queue.put((event_type, outcome, {**fields, "occurred_at": datetime.now(UTC)}))

    def _write(self, batch: list[tuple[str, Outcome, dict[str, object]]]) -> None:
        facts = []
        for event_type, outcome, fields in batch:
            try:
                facts.append(_fact(self.settings, event_type, outcome=outcome, **fields))  # type: ignore[arg-type]
            except Exception:
                log.exception("audit event %s refused", event_type)
        try:
            with session_scope(self.session_factory) as session:
                _copy(session, facts)
        except Exception:
            log.exception("%d audit events could not be stored", len(facts))

    def _run(self) -> None:
        stopping = False
        while not stopping:
            try:
                first = self._queue.get(timeout=self.interval_seconds)
            except queue.Empty:
                continue
            batch: list[tuple[str, Outcome, dict[str, object]]] = []
            item = first
            while True:
                if item is None:
                    stopping = True
                else:
                    batch.append(item)
                if len(batch) >= _BATCH_MAX:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._write(batch)
            if not stopping:
                threading.Event().wait(self.interval_seconds)

    def close(self, timeout_seconds: float = 10.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout_seconds)


_writer: BatchWriter | None = None
_batch_seconds = 0.0


def configure_batching(seconds: float) -> None:
    """Batch :func:`emit`'s writes every ``seconds`` in apps started from now on in this
    process (0: write each at once). ``serve`` turns it on."""
    global _batch_seconds
    _batch_seconds = max(0.0, seconds)


def start_batch_writer(settings: AuthSettings, session_factory: sessionmaker[Session]) -> BatchWriter | None:
    """The app's lifespan start: a writer for ``session_factory`` when batching is on."""
    global _writer
    if _batch_seconds <= 0:
        return None
    _writer = BatchWriter(settings, session_factory, _batch_seconds)
    return _writer


def stop_batch_writer(writer: BatchWriter | None) -> None:
    """The app's lifespan end: flush and stop ``writer``."""
    global _writer
    if writer is None:
        return
    if _writer is writer:
        _writer = None
    writer.close()


def claimed_client_id(authorization: str | None, items: list[tuple[str, str]]) -> str | None:
    """The client_id a token request claims (HTTP Basic user, else the form's
    ``client_id``); not authenticated, for the audit trail only."""
    if authorization:
        from bsopt_auth.rfc6749.client_auth import parse_basic_authorization
        from bsopt_auth.rfc6749.errors import InvalidClientError

        try:
            return parse_basic_authorization(authorization)[0][:255]
        except InvalidClientError:
            pass
    value = next((v for k, v in items if k == "client_id"), None)
    return value[:255] if value else None


__all__ = [
    "ACCOUNT_LOCKED", "AUTH_SERVER_CLIENT_ID", "CLIENT_CHANGED", "CLIENT_CREATED", "CLIENT_DELETED",
    "CLIENT_SECRET_ROTATED", "EVENT_TYPES", "KEY_REVOKED", "KEY_ROTATED", "LOGIN_FAILED", "LOGIN_SUCCEEDED",
    "OUTBOX", "REFRESH_REUSE_DETECTED", "TOKEN_ISSUED", "TOKEN_REFUSED", "USER_CREATED", "USER_DISABLED",
    "USER_ENABLED", "USER_PASSWORD_RESET", "batching_for", "claimed_client_id", "emit", "hash_ip", "record",
]
