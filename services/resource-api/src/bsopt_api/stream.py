"""The coach stream: every event of a user's ``/v1/ws/coach`` stream, persisted in
``api.coach_stream`` and fanned out to every replica through Postgres LISTEN/NOTIFY.

Events (JSON text frames; ``id`` is stable, ``seq`` the same number for clients of the
first version)::

    {"type": "coach.reflect", "id": 42, "seq": 42, "trade_id": ..., "label": ..., ...}
    {"type": "import.progress", "id": 43, "seq": 43, "import_id": ..., "status": "running", ...}
    {"type": "digest.ready", "id": 44, "seq": 44, "digest_id": ..., "period_start": ..., ...}
    {"type": "simulation.ready", "id": 45, "seq": 45, "simulation_id": ..., ...}  (reserved)

Writes (:func:`append`) run inside the caller's transaction (the consumer's idempotent
one). Appends of one user are serialised by a transaction advisory lock, so a user's ids
grow in commit order: a client that saw id N has seen every earlier event of its own,
and ``id > N`` is exactly what it missed. The insert's trigger (revision 0005) NOTIFYs
channel :data:`CHANNEL` at commit; every replica's :class:`StreamListener` hands the event
to its :class:`~bsopt_api.hub.CoachHub`, which pushes it to that replica's sockets of
the user. A rolled-back append notifies nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

import psycopg
from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session, sessionmaker

from bsopt.broker_gateway.v1 import broker_gateway_pb2 as broker_pb
from bsopt.broker_gateway.v1 import events_pb2 as broker_events
from bsopt.digest_worker.v1 import events_pb2 as digest_events
from bsopt_api import encoding
from bsopt_api.models import coach_feedback, coach_messages, coach_notes, coach_stream, digests
from bsopt_common import codec
from bsopt_common.db import is_pooled, session_scope

log = logging.getLogger(__name__)

CHANNEL = "api_coach_stream"

COACH_REFLECT = "coach.reflect"
IMPORT_PROGRESS = "import.progress"
DIGEST_READY = "digest.ready"
#: Reserved: no producer yet (see :func:`record_simulation_ready`).
SIMULATION_READY = "simulation.ready"
EVENT_TYPES = frozenset({COACH_REFLECT, IMPORT_PROGRESS, DIGEST_READY, SIMULATION_READY})


def message(event_id: int, event_type: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The WebSocket message of a stored event."""
    out: dict[str, Any] = {"type": event_type, "id": event_id, "seq": event_id}
    out.update((k, v) for k, v in payload.items() if k not in ("type", "id", "seq"))
    return out


# --- writes ------------------------------------------------------------------------------


def append(session: Session, user_id: str, event_type: str, payload: dict[str, Any], *,
           dedupe_key: str | None = None) -> dict[str, Any] | None:
    """Store an event of ``user_id``'s stream; return its message, or None when an event
    with ``dedupe_key`` is already stored. Never commits. ValueError for an empty user
    or an unknown type."""
    if not user_id:
        raise ValueError("a coach stream event needs a user id")
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown coach stream event type {event_type!r}")
    # One user's appends in commit order: ids then grow as clients see them.
    session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
                    {"k": f"api.coach_stream:{user_id}"})
    body = {k: v for k, v in payload.items() if k not in ("type", "id", "seq")}
    row = session.execute(
        pg_insert(coach_stream)
        .values(user_id=user_id, type=event_type, dedupe_key=dedupe_key, payload=body)
        .on_conflict_do_nothing(index_elements=[coach_stream.c.dedupe_key])
        .returning(coach_stream.c.id)
    ).first()
    return None if row is None else message(row.id, event_type, body)


def import_progress_payload(p: broker_events.ImportProgress) -> dict[str, Any]:
    """``import.progress`` fields of an ``imports.progress.v1`` event."""
    return {
        "import_id": p.import_id,
        "account_id": p.account_id,
        "broker": p.broker or None,
        "account_kind": encoding.account_kind(p.account_kind),
        "status": _enum_name(broker_pb.ImportStatus, p.status, "IMPORT_STATUS_"),
        "pages_fetched": p.pages_fetched,
        "fills_seen": p.fills_seen,
        "trades_imported": p.trades_imported,
        "duplicates_skipped": p.duplicates_skipped,
        "error": p.error or None,
        "at": codec.rfc3339_field(p, "at"),
    }


def _enum_name(enum: Any, value: int, prefix: str) -> str:
    try:
        return str(enum.Name(value)).removeprefix(prefix).lower()
    except ValueError:
        return str(value)


def record_import_progress(session: Session, event_id: str, p: broker_events.ImportProgress) -> dict[str, Any] | None:
    """Append ``import.progress`` (once per event id)."""
    if not p.import_id:
        raise ValueError("ImportProgress without import_id")
    return append(session, p.user_id, IMPORT_PROGRESS, import_progress_payload(p),
                  dedupe_key=f"{IMPORT_PROGRESS}:{event_id}")


def record_digest_ready(session: Session, d: digest_events.DigestReady) -> dict[str, Any] | None:
    """Append ``digest.ready`` once per (digest, version), only when that version is the
    one ``api.digests`` now holds (call after :func:`projections.upsert_digest`): a late,
    older version changes nothing and is not announced. The message is a notice; the
    digest itself is ``GET /v1/digests/weekly/latest``."""
    stored = session.execute(select(digests.c.version).where(digests.c.digest_id == d.digest_id)).scalar()
    if stored != d.version:
        return None
    payload = {
        "digest_id": d.digest_id,
        "period_start": d.period_start,
        "period_end": d.period_end,
        "version": d.version,
        "trades": d.trades,
        "label_counts": dict(sorted(d.label_counts.items())),
        "summary": d.summary,
    }
    return append(session, d.user_id, DIGEST_READY, payload, dedupe_key=f"{DIGEST_READY}:{d.digest_id}:{d.version}")


def record_simulation_ready(session: Session, user_id: str, simulation_id: str,
                            payload: dict[str, Any]) -> dict[str, Any] | None:
    """Append ``simulation.ready`` for a finished simulation (reserved for the simulations
    of issue 9 §2; no producer yet). ``payload`` should name the ``trade_id`` and where to
    fetch the result."""
    return append(session, user_id, SIMULATION_READY, {"simulation_id": simulation_id, **payload},
                  dedupe_key=f"{SIMULATION_READY}:{simulation_id}")


# --- reads -------------------------------------------------------------------------------


def events_after(session: Session, user_id: str, after: int, limit: int) -> list[dict[str, Any]]:
    """The user's events with ``id > after``, oldest first, at most ``limit``."""
    rows = session.execute(
        select(coach_stream.c.id, coach_stream.c.type, coach_stream.c.payload)
        .where(coach_stream.c.user_id == user_id, coach_stream.c.id > after)
        .order_by(coach_stream.c.id)
        .limit(limit)
    ).all()
    return [message(r.id, r.type, r.payload) for r in rows]


def event_by_id(session: Session, event_id: int) -> dict[str, Any] | None:
    row = session.execute(select(coach_stream.c.id, coach_stream.c.type, coach_stream.c.payload)
                          .where(coach_stream.c.id == event_id)).first()
    return None if row is None else message(row.id, row.type, row.payload)


# --- what clients send -------------------------------------------------------------------


def stored_reflection(session: Session, user_id: str, trade_id: str) -> dict[str, Any] | None:
    """The user's stored ``coach.reflect`` of ``trade_id`` (fields as pushed), or None."""
    row = session.execute(select(coach_messages.c.payload).where(
        coach_messages.c.user_id == user_id, coach_messages.c.trade_id == trade_id)).first()
    return None if row is None else {k: v for k, v in row.payload.items() if k != "type"}


def store_feedback(session: Session, user_id: str, trade_id: str, rating: str) -> None:
    """The user's thumbs ``up`` or ``down`` on the trade's reflection; a later one replaces it."""
    stmt = pg_insert(coach_feedback).values(user_id=user_id, trade_id=trade_id, rating=rating)
    session.execute(stmt.on_conflict_do_update(
        index_elements=[coach_feedback.c.user_id, coach_feedback.c.trade_id],
        set_={"rating": stmt.excluded.rating, "updated_at": func.now()}))


def add_note(session: Session, user_id: str, trade_id: str, note: str) -> dict[str, Any]:
    row = session.execute(
        pg_insert(coach_notes).values(user_id=user_id, trade_id=trade_id, text=note)
        .returning(coach_notes.c.note_id, coach_notes.c.created_at)
    ).one()
    return {"note_id": row.note_id, "trade_id": trade_id, "text": note,
            "created_at": codec.rfc3339(row.created_at)}


# --- every replica: LISTEN -----------------------------------------------------------------


def listen_conninfo(url: URL) -> str:
    """A libpq URL for LISTEN from the engine's URL: a Neon pooled host (PgBouncer in
    transaction mode, which drops LISTEN) is replaced by its direct endpoint."""
    u = url.set(drivername="postgresql")
    if is_pooled(u) and u.host:
        u = u.set(host=u.host.replace("-pooler", "", 1))
    return u.render_as_string(hide_password=False)


class StreamListener:
    """LISTENs on :data:`CHANNEL` on its own connection and calls ``deliver(user_id,
    message)`` on the event loop for every stored event, in commit order. Events whose
    user ``wants`` no delivery (no socket here) are skipped without a read; an event too
    large for the NOTIFY payload is read from the table.

    When the connection breaks, ``on_gap()`` is called (the hub closes its sockets so
    clients resume with ``lastEventId``: what was committed meanwhile was not heard) and
    it reconnects with backoff; once it listens again, ``on_gap()`` once more, for the
    sockets opened in between.
    """

    def __init__(self, factory: sessionmaker[Session], *, deliver: Callable[[str, dict[str, Any]], Any],
                 wants: Callable[[str], bool], on_gap: Callable[[], None]):
        self._factory = factory
        self._deliver = deliver
        self._wants = wants
        self._on_gap = on_gap
        self._task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self.delivered = 0

    async def start(self, timeout: float = 30.0) -> None:
        """Start listening; return once LISTEN is in effect (TimeoutError otherwise)."""
        self._task = asyncio.create_task(self._run(), name="coach-stream-listener")
        waiter = asyncio.create_task(self._listening.wait())
        done, _ = await asyncio.wait({waiter, self._task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            waiter.cancel()
            if self._task in done:
                self._task.result()  # raises what failed
            raise TimeoutError("LISTEN on the coach stream did not start in time")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _run(self) -> None:
        engine = self._factory.kw["bind"]
        conninfo = listen_conninfo(engine.url)
        attempt = 0
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True,
                                                                 application_name="bsopt-api-listen") as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    if attempt:
                        # sockets opened while nobody listened may have missed events too
                        self._on_gap()
                    attempt = 0
                    self._listening.set()
                    async for notify in conn.notifies():
                        await self._handle(notify.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the feed must come back whatever broke it
                if self._listening.is_set():
                    self._listening.clear()
                    self._on_gap()
                pause = min(5.0, 0.2 * 2 ** attempt)
                attempt += 1
                log.warning("coach stream LISTEN failed (%s); retrying in %.1fs", exc, pause)
                await asyncio.sleep(pause)

    async def _handle(self, raw: str) -> None:
        try:
            note = json.loads(raw)
            user_id, event_id = str(note["user_id"]), int(note["id"])
        except (ValueError, KeyError, TypeError):
            log.warning("unreadable coach stream notification %.100r", raw)
            return
        if not self._wants(user_id):
            return
        if "type" in note:
            msg = message(event_id, note["type"], note.get("payload") or {})
        else:
            def read() -> dict[str, Any] | None:
                with session_scope(self._factory) as session:
                    return event_by_id(session, event_id)

            found = await asyncio.to_thread(read)
            if found is None:
                return
            msg = found
        self._deliver(user_id, msg)
        self.delivered += 1
        # Let the sockets' senders run between events: a burst of notifications read at
        # once then never overflows a client that keeps up; only a slow one drops.
        await asyncio.sleep(0)


# --- every replica: sockets per user, counted across replicas ------------------------------


class SocketSlots:
    """At most ``limit`` sockets per user across every replica: a socket holds one of the
    user's ``limit`` session advisory locks ``(hashtext('api.coach_socket:' || user), slot)``
    on this replica's own connection. A replica that dies loses its connection and so
    frees its slots; no table to clean up.

    Session locks are re-entrant within a session, so this replica remembers which slots
    it holds and only tries the others. When the connection breaks, every lock is gone:
    ``on_lost()`` is called (the hub closes its sockets, which reconnect) and the next
    :meth:`acquire` connects again.
    """

    def __init__(self, factory: sessionmaker[Session], limit: int, *, on_lost: Callable[[], None]):
        self._conninfo = listen_conninfo(factory.kw["bind"].url)
        self.limit = limit
        self._on_lost = on_lost
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()
        self._held: dict[str, set[int]] = {}
        #: Bumped on every new connection: a slot from an older one is already free.
        self.generation = 0
        self._releases: set[asyncio.Task[None]] = set()

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True,
                                                               application_name="bsopt-api-socket-slots")
            self.generation += 1
            self._held.clear()
        return self._conn

    def _lost(self, exc: BaseException) -> None:
        log.warning("coach socket slots connection lost (%s); closing this replica's sockets", exc)
        conn, self._conn = self._conn, None
        self._held.clear()
        if conn is not None:
            task = asyncio.ensure_future(conn.close())
            self._releases.add(task)
            task.add_done_callback(self._releases.discard)
        self._on_lost()

    async def acquire(self, user_id: str) -> tuple[int, int] | None:
        """``(generation, slot)`` of a free slot of ``user_id`` now held here, or None
        when all ``limit`` are held (here or by other replicas)."""
        async with self._lock:
            try:
                conn = await self._connection()
                held = self._held.setdefault(user_id, set())
                for slot in range(self.limit):
                    if slot in held:
                        continue
                    cur = await conn.execute("SELECT pg_try_advisory_lock(hashtext(%s), %s)",
                                             (f"api.coach_socket:{user_id}", slot))
                    row = await cur.fetchone()
                    if row is not None and row[0]:
                        held.add(slot)
                        return self.generation, slot
                if not held:
                    del self._held[user_id]
                return None
            except psycopg.Error as exc:
                self._lost(exc)
                raise

    def release(self, user_id: str, token: tuple[int, int]) -> None:
        """Free the slot (in the background: a socket handler being cancelled still frees it)."""
        task = asyncio.ensure_future(self._release(user_id, token))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _release(self, user_id: str, token: tuple[int, int]) -> None:
        generation, slot = token
        async with self._lock:
            if generation != self.generation or self._conn is None:
                return  # that connection is gone, and its locks with it
            try:
                await self._conn.execute("SELECT pg_advisory_unlock(hashtext(%s), %s)",
                                         (f"api.coach_socket:{user_id}", slot))
            except psycopg.Error as exc:
                self._lost(exc)
                return
            held = self._held.get(user_id)
            if held is not None:
                held.discard(slot)
                if not held:
                    del self._held[user_id]

    async def close(self) -> None:
        for task in list(self._releases):
            with contextlib.suppress(Exception):
                await task
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()
