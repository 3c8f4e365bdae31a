"""In-process WebSocket hub: user id -> that user's connected coach sockets.

Delivery is at-most-once per socket and best effort: every message is first stored
(``api.coach_messages``) and carries its ``seq``, so a client that was offline, slow or
disconnected resumes with ``/v1/ws/coach?after=<last seq>`` and loses nothing.

Threads: :meth:`CoachHub.publish` runs on the event loop; the Kafka handlers run in
worker threads and call :meth:`CoachHub.publish_threadsafe`, which hands the message to
the loop with ``call_soon_threadsafe``. One replica only knows its own sockets; with
several replicas each consumes its own partitions, so a message may reach no socket
of the user (then the client's resume covers it). Fan-out across replicas would need a
per-replica consumer group or a shared pub/sub; see the package docs.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict, deque
from typing import Any

log = logging.getLogger(__name__)

WS_GOING_AWAY = 1001
#: "Try again later" (RFC 6455 §7.4.1 registry): the client fell too far behind.
WS_TRY_AGAIN_LATER = 1013


class Subscription:
    """One connected socket: the messages waiting to be sent to it, in order.

    A subscription that falls ``max_pending`` messages behind is closed with 1013
    instead of growing without bound.
    """

    def __init__(self, user_id: str, max_pending: int):
        self.user_id = user_id
        self._max_pending = max_pending
        self._pending: deque[dict[str, Any]] = deque()
        self._wake = asyncio.Event()
        self.close_code: int | None = None
        self.close_reason = ""

    @property
    def closed(self) -> bool:
        return self.close_code is not None

    def offer(self, message: dict[str, Any]) -> bool:
        """Queue ``message``; False when closed or (now) overflowing. Loop thread only."""
        if self.closed:
            return False
        if len(self._pending) >= self._max_pending:
            self.close(WS_TRY_AGAIN_LATER, "too many pending messages; reconnect with ?after=<last seq>")
            return False
        self._pending.append(message)
        self._wake.set()
        return True

    def close(self, code: int, reason: str) -> None:
        """Ask the socket's sender to close with ``code`` once queued messages are sent
        (for 1013, at once: the queue is dropped)."""
        if self.closed:
            return
        self.close_code, self.close_reason = code, reason
        if code == WS_TRY_AGAIN_LATER:
            self._pending.clear()
        self._wake.set()

    async def next(self) -> dict[str, Any] | None:
        """The next message, waiting for one; None once closed and drained."""
        while True:
            if self._pending:
                return self._pending.popleft()
            if self.closed:
                return None
            self._wake.clear()
            await self._wake.wait()


class CoachHub:
    """Registry of subscriptions per user id."""

    def __init__(self, *, max_pending: int = 256):
        self.max_pending = max_pending
        self._by_user: defaultdict[str, set[Subscription]] = defaultdict(set)
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop that owns the sockets; :meth:`publish_threadsafe` hands messages to it."""
        self._loop = loop

    def subscribe(self, user_id: str) -> Subscription:
        sub = Subscription(user_id, self.max_pending)
        self._by_user[user_id].add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._by_user.get(sub.user_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._by_user[sub.user_id]

    def connections(self, user_id: str | None = None) -> int:
        if user_id is not None:
            return len(self._by_user.get(user_id, ()))
        return sum(len(s) for s in self._by_user.values())

    def publish(self, user_id: str, message: dict[str, Any]) -> int:
        """Queue ``message`` on every socket of ``user_id``; return how many took it.
        Event-loop thread only."""
        return sum(sub.offer(message) for sub in list(self._by_user.get(user_id, ())))

    def publish_threadsafe(self, user_id: str, message: dict[str, Any]) -> None:
        """:meth:`publish` from any thread (the consumer's worker thread). Dropped when
        no loop is bound or it has closed: the message is stored and replayable."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self.publish, user_id, message)
        except RuntimeError:  # loop closed between the check and the call
            log.debug("event loop closed; coach message for %s left to replay", user_id)

    def close_all(self, code: int = WS_GOING_AWAY, reason: str = "server shutting down") -> None:
        for subs in list(self._by_user.values()):
            for sub in list(subs):
                sub.close(code, reason)
