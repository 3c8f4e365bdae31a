"""``/v1/ws/coach``: the trading coach's messages, pushed as trades are scored.

Handshake: an access token with scope ``trades:read`` in ``Authorization: Bearer`` or,
for browsers, as the subprotocol pair ``["bearer", <token>]`` (the server then selects
``bearer``). A refused handshake is closed with 1008 before it is accepted (over HTTP
that is a 403 response to the upgrade).

Resume: ``?after=<seq>`` first replays the user's stored messages with ``seq > after``
(``after=0``: all of them), then continues live without gap or duplicate. Without
``after`` the socket is live only; replaying everything on every reconnect would flood
a client that already has the history, so asking for it is explicit. A client keeps
the last ``seq`` it saw and reconnects with it.

Every message (JSON text frame)::

    {"type": "coach.reflect", "seq": 42, "trade_id": "...", "label": "FOMO",
     "explanation": "...", "reflection": "...", "symbol": "GOOGL", "side": "buy",
     "executed_at": "2024-03-01T00:00:00Z"}

The server closes with 1012 (service restart; 1001 if the runtime stops first) on
shutdown, 1013 when the client fell too far behind
(resume with ``after``), and 1008 when the access token expires. Frames from the
client are ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from sqlalchemy.orm import Session, sessionmaker

from bsopt_api import projections
from bsopt_api.api.deps import SCOPE_TRADES_READ, Hub, SessionFactory, Settings
from bsopt_api.hub import Subscription
from bsopt_common.db import session_scope
from bsopt_common.security.fastapi import WS_POLICY_VIOLATION, authenticate_websocket

router = APIRouter(tags=["coach"])


def _parse_after(raw: str | None) -> int | None:
    if raw is None:
        return None
    if not raw.isdigit() or len(raw) > 18:
        raise ValueError("after must be a non-negative integer (the last seq received)")
    return int(raw)


@router.websocket("/v1/ws/coach")
async def coach_socket(ws: WebSocket, hub: Hub, factory: SessionFactory, settings: Settings) -> None:
    try:
        after = _parse_after(ws.query_params.get("after"))
    except ValueError as exc:
        await ws.close(code=WS_POLICY_VIOLATION, reason=str(exc))
        return
    claims = await authenticate_websocket(ws, SCOPE_TRADES_READ)
    if claims is None:
        return  # closed with 1008 before accept
    # Subscribe before replaying: a message committed during the replay is queued
    # here and skipped below if the replay already sent it (seq <= last sent).
    sub = hub.subscribe(claims.subject)
    try:
        last_sent = None
        if after is not None:
            last_sent = await _replay(ws, factory, claims.subject, after, settings.ws_replay_batch_size)
        await _serve_live(ws, sub, last_sent, token_expires_at=claims.expires_at)
    except WebSocketDisconnect:
        pass
    finally:
        hub.unsubscribe(sub)


async def _replay(ws: WebSocket, factory: sessionmaker[Session], user_id: str, after: int,
                  batch_size: int) -> int:
    """Send stored messages with seq > after, in batches; return the last seq sent."""

    def read(cursor: int) -> list[dict[str, Any]]:
        with session_scope(factory) as session:
            return projections.coach_messages_after(session, user_id, cursor, batch_size)

    cursor = after
    while True:
        batch = await asyncio.to_thread(read, cursor)
        for message in batch:
            await ws.send_json(message)
            cursor = message["seq"]
        if len(batch) < batch_size:
            return cursor


async def _serve_live(
    ws: WebSocket, sub: Subscription, last_sent: int | None, *, token_expires_at: int
) -> None:
    """Until the client leaves, the hub closes the subscription, or the token expires."""

    async def send() -> None:
        while (message := await sub.next()) is not None:
            if last_sent is not None and message["seq"] <= last_sent:
                continue
            await ws.send_json(message)
        await ws.close(code=sub.close_code or 1000, reason=sub.close_reason)

    async def client_gone() -> None:
        while (await ws.receive())["type"] != "websocket.disconnect":
            pass  # server-to-client socket: client frames are ignored

    async def token_expiry() -> None:
        await asyncio.sleep(max(0.0, token_expires_at - time.time()))
        await ws.close(code=WS_POLICY_VIOLATION, reason="access token expired; reconnect with a fresh token")

    tasks = [asyncio.create_task(coro) for coro in (send(), client_gone(), token_expiry())]
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
