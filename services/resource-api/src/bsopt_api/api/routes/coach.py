"""``/v1/ws/coach``: the user's coach stream, live and resumable.

Handshake: an access token with scope ``trades:read`` in ``Authorization: Bearer`` or,
for browsers, as the subprotocol pair ``["bearer", <token>]`` (the server then selects
``bearer``). A refused handshake is closed with 1008 before it is accepted (over HTTP
that is a 403 response to the upgrade).

Events (:mod:`bsopt_api.stream`): ``coach.reflect``, ``import.progress``,
``digest.ready``, ``simulation.ready``, each with a stable ``id`` (and ``seq``, the same
number)::

    {"type": "coach.reflect", "id": 42, "seq": 42, "trade_id": "...", "label": "FOMO",
     "explanation": "...", "reflection": "...", "symbol": "GOOGL", "side": "buy",
     "executed_at": "2024-03-01T00:00:00Z"}

Resume: ``?lastEventId=<id>`` (alias ``?after=<id>``) first replays the user's stored
events with ``id > lastEventId`` in order (``0``: all of them), then continues live
without gap or duplicate. Without it the socket is live only.

Backpressure: a slow client's queue keeps the newest ``ws_queue_size`` events; it is
told ``{"type": "synced", "synced": false, "dropped": n, "last_event_id": id}`` and
refetches (see :mod:`bsopt_api.hub`).

Client messages (JSON text, at most 8 KiB; ``request_id``, a string, is echoed back)::

    {"type": "chat.ask_reflection", "trade_id": "..."}
        -> {"type": "chat.reflection", "trade_id": "...", "label": ..., "reflection": ..., ...}
    {"type": "chat.feedback", "trade_id": "...", "rating": "up" | "down"}
        -> {"type": "chat.feedback.stored", "trade_id": "...", "rating": "up"}
    {"type": "note.add", "trade_id": "...", "text": "..."}
        -> {"type": "note.added", "note_id": 7, "trade_id": "...", "text": "...", "created_at": ...}

The trade must be one of the user's with a stored reflection. Anything else is answered
``{"type": "error", "error": "invalid_message" | "unknown_type" | "not_found" |
"internal_error", "message": "..."}`` and the socket stays open.

Close codes: 1008 for a sixth socket of the user (at most ``ws_max_sockets_per_user``,
counted across replicas) and when the access token expires; 1012 (1001 if the runtime stops first) on shutdown;
1013 when this replica's event feed was interrupted (resume with ``lastEventId``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from sqlalchemy.orm import Session, sessionmaker

from bsopt_api import stream
from bsopt_api.api.deps import SCOPE_TRADES_READ, Hub, SessionFactory, Settings
from bsopt_api.hub import WS_TRY_AGAIN_LATER, Subscription, TooManySockets
from bsopt_common.db import session_scope
from bsopt_common.security.fastapi import WS_POLICY_VIOLATION, authenticate_websocket

log = logging.getLogger(__name__)

router = APIRouter(tags=["coach"])

MAX_CLIENT_MESSAGE_BYTES = 8192
MAX_NOTE_CHARS = 2000
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _parse_cursor(raw: str | None, name: str) -> int | None:
    if raw is None:
        return None
    if not raw.isdigit() or len(raw) > 18:
        raise ValueError(f"{name} must be a non-negative integer (the id of the last event received)")
    return int(raw)


def _resume_cursor(ws: WebSocket) -> int | None:
    """``lastEventId`` (or its alias ``after``); ValueError for a bad or conflicting one."""
    last = _parse_cursor(ws.query_params.get("lastEventId"), "lastEventId")
    after = _parse_cursor(ws.query_params.get("after"), "after")
    if last is not None and after is not None and last != after:
        raise ValueError("lastEventId and after disagree; send one")
    return last if last is not None else after


@router.websocket("/v1/ws/coach")
async def coach_socket(ws: WebSocket, hub: Hub, factory: SessionFactory, settings: Settings) -> None:
    try:
        after = _resume_cursor(ws)
    except ValueError as exc:
        await ws.close(code=WS_POLICY_VIOLATION, reason=str(exc))
        return
    claims = await authenticate_websocket(ws, SCOPE_TRADES_READ)
    if claims is None:
        return  # closed with 1008 before accept
    # Subscribe before replaying: an event committed during the replay is queued
    # here and skipped below if the replay already sent it (id <= last sent).
    try:
        sub = await hub.open(claims.subject)
    except TooManySockets:
        await ws.close(code=WS_POLICY_VIOLATION,
                       reason=f"too many coach sockets for this user (at most {hub.max_sockets_per_user})")
        return
    except Exception:  # the slots' database connection: the client retries
        log.exception("coach socket of %s: no slot could be taken", claims.subject)
        await ws.close(code=WS_TRY_AGAIN_LATER, reason="try again later")
        return
    try:
        last_sent = None
        if after is not None:
            last_sent = await _replay(ws, factory, claims.subject, after, settings.ws_replay_batch_size)
        await _serve_live(ws, sub, last_sent, factory, token_expires_at=claims.expires_at)
    except WebSocketDisconnect:
        pass
    finally:
        hub.leave(sub)


async def _replay(ws: WebSocket, factory: sessionmaker[Session], user_id: str, after: int,
                  batch_size: int) -> int:
    """Send stored events with id > after, in batches; return the last id sent."""

    def read(cursor: int) -> list[dict[str, Any]]:
        with session_scope(factory) as session:
            return stream.events_after(session, user_id, cursor, batch_size)

    cursor = after
    while True:
        batch = await asyncio.to_thread(read, cursor)
        for message in batch:
            await ws.send_json(message)
            cursor = message["id"]
        if len(batch) < batch_size:
            return cursor


async def _serve_live(ws: WebSocket, sub: Subscription, last_sent: int | None,
                      factory: sessionmaker[Session], *, token_expires_at: int) -> None:
    """Until the client leaves, the hub closes the subscription, or the token expires."""
    send_lock = asyncio.Lock()  # the pusher and the replies share the socket

    async def send_json(message: dict[str, Any]) -> None:
        async with send_lock:
            await ws.send_json(message)

    async def push() -> None:
        while (message := await sub.next()) is not None:
            event_id = message.get("id")
            if last_sent is not None and isinstance(event_id, int) and event_id <= last_sent:
                continue  # already sent by the replay
            await send_json(message)
        await ws.close(code=sub.close_code or 1000, reason=sub.close_reason)

    async def client_messages() -> None:
        while True:
            frame = await ws.receive()
            if frame["type"] == "websocket.disconnect":
                return
            try:
                reply = await handle_client_message(frame, sub.user_id, factory)
            except Exception:  # a client message never takes the socket down
                log.exception("coach socket: client message of %s failed", sub.user_id)
                reply = _error(None, "internal_error", "the message could not be handled; try again")
            await send_json(reply)

    async def token_expiry() -> None:
        await asyncio.sleep(max(0.0, token_expires_at - time.time()))
        await ws.close(code=WS_POLICY_VIOLATION, reason="access token expired; reconnect with a fresh token")

    tasks = [asyncio.create_task(coro) for coro in (push(), client_messages(), token_expiry())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError, OSError):
                await task
    for task in done:
        exc = task.exception()
        if exc is not None and not isinstance(exc, (WebSocketDisconnect, OSError)):
            raise exc


# --- client messages -------------------------------------------------------------------------


def _error(request_id: str | None, error: str, detail: str) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "error", "error": error, "message": detail}
    if request_id is not None:
        out["request_id"] = request_id
    return out


class _Invalid(Exception):
    pass


def _text_field(body: dict[str, Any], name: str, max_chars: int) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise _Invalid(f"{name} is required (a non-empty string)")
    if len(value) > max_chars:
        raise _Invalid(f"{name} is longer than {max_chars} characters")
    if _CONTROL.search(value) or (name == "trade_id" and re.search(r"\s", value)):
        raise _Invalid(f"{name} contains characters that are not allowed")
    return value


async def handle_client_message(frame: dict[str, Any], user_id: str,
                                factory: sessionmaker[Session]) -> dict[str, Any]:
    """The reply to one client frame (an ASGI ``websocket.receive`` message)."""
    raw = frame.get("text")
    if raw is None:
        return _error(None, "invalid_message", "send JSON text frames")
    if len(raw.encode()) > MAX_CLIENT_MESSAGE_BYTES:
        return _error(None, "invalid_message", f"a message is at most {MAX_CLIENT_MESSAGE_BYTES} bytes")
    try:
        body = json.loads(raw)
    except ValueError:
        return _error(None, "invalid_message", "not JSON")
    if not isinstance(body, dict):
        return _error(None, "invalid_message", "a message is a JSON object with a type")
    request_id = body.get("request_id")
    if request_id is not None and (not isinstance(request_id, str) or len(request_id) > 100):
        return _error(None, "invalid_message", "request_id is a string of at most 100 characters")
    kind = body.get("type")
    handler = _HANDLERS.get(kind) if isinstance(kind, str) else None
    if handler is None:
        return _error(request_id, "unknown_type",
                      f"unknown message type; expected one of {', '.join(sorted(_HANDLERS))}")
    try:
        reply = await handler(body, user_id, factory)
    except _Invalid as exc:
        return _error(request_id, "invalid_message", str(exc))
    if request_id is not None:
        reply["request_id"] = request_id
    return reply


async def _in_session(factory: sessionmaker[Session], work: Callable[[Session], Any]) -> Any:
    def run() -> Any:
        with session_scope(factory) as session:
            return work(session)

    return await asyncio.to_thread(run)


def _not_found(trade_id: str) -> dict[str, Any]:
    return _error(None, "not_found", f"no reflection stored for trade {trade_id!r} of this user")


async def _ask_reflection(body: dict[str, Any], user_id: str, factory: sessionmaker[Session]) -> dict[str, Any]:
    trade_id = _text_field(body, "trade_id", 255)
    found = await _in_session(factory, lambda s: stream.stored_reflection(s, user_id, trade_id))
    if found is None:
        return _not_found(trade_id)
    return {**found, "type": "chat.reflection", "trade_id": trade_id}


async def _feedback(body: dict[str, Any], user_id: str, factory: sessionmaker[Session]) -> dict[str, Any]:
    trade_id = _text_field(body, "trade_id", 255)
    rating = body.get("rating")
    if rating not in ("up", "down"):
        raise _Invalid('rating is "up" or "down"')

    def work(session: Session) -> bool:
        if stream.stored_reflection(session, user_id, trade_id) is None:
            return False
        stream.store_feedback(session, user_id, trade_id, rating)
        return True

    if not await _in_session(factory, work):
        return _not_found(trade_id)
    return {"type": "chat.feedback.stored", "trade_id": trade_id, "rating": rating}


async def _add_note(body: dict[str, Any], user_id: str, factory: sessionmaker[Session]) -> dict[str, Any]:
    trade_id = _text_field(body, "trade_id", 255)
    note = _text_field(body, "text", MAX_NOTE_CHARS).strip()

    def work(session: Session) -> dict[str, Any] | None:
        if stream.stored_reflection(session, user_id, trade_id) is None:
            return None
        return stream.add_note(session, user_id, trade_id, note)

    added = await _in_session(factory, work)
    if added is None:
        return _not_found(trade_id)
    return {"type": "note.added", **added}


_HANDLERS: dict[str, Callable[[dict[str, Any], str, sessionmaker[Session]], Awaitable[dict[str, Any]]]] = {
    "chat.ask_reflection": _ask_reflection,
    "chat.feedback": _feedback,
    "note.add": _add_note,
}
