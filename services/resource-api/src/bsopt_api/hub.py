"""In-process WebSocket hub: user id -> that user's connected coach sockets on this replica.

Every event is first stored in ``api.coach_stream`` (:mod:`bsopt_api.stream`); the
insert NOTIFYs every replica, and each replica's :class:`~bsopt_api.stream.StreamListener`
(started by :meth:`CoachHub.start`) calls :meth:`CoachHub.publish` for the users with a
socket here. So any replica delivers every event of a user, whichever replica consumed it.

Backpressure: each socket has a bounded queue (``queue_size``, 100 by default). When a
slow client lets it fill, the oldest queued event is dropped and, before the next event
it does get, the client is sent the marker::

    {"type": "synced", "synced": false, "dropped": <events dropped>,
     "last_event_id": <id of the last event sent before the gap, or null>}

It then refetches what it missed: reconnect with ``?lastEventId=<last_event_id>`` (or read
the REST API). Events after the marker are live again.

Limits: at most ``max_sockets_per_user`` (5) sockets per user, across every replica
once started (:class:`~bsopt_api.stream.SocketSlots`: one Postgres session advisory lock
per socket); :meth:`CoachHub.open` (and :meth:`subscribe`, this replica only) raises
:class:`TooManySockets` for the next one.

Threads: :meth:`CoachHub.publish` runs on the event loop; :meth:`publish_threadsafe`
hands a message over from any other thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict, deque
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from bsopt_api.stream import SocketSlots, StreamListener

log = logging.getLogger(__name__)

WS_GOING_AWAY = 1001
#: "Try again later" (RFC 6455 §7.4.1 registry): the event feed was interrupted.
WS_TRY_AGAIN_LATER = 1013

SYNCED = "synced"


class TooManySockets(Exception):
    """The user already has the most sockets allowed."""


class Subscription:
    """One connected socket: the events waiting to be sent to it, in order, at most
    ``queue_size`` (the oldest dropped first, then the ``synced: false`` marker)."""

    def __init__(self, user_id: str, queue_size: int):
        self.user_id = user_id
        self._queue_size = queue_size
        self._pending: deque[dict[str, Any]] = deque()
        self._wake = asyncio.Event()
        self._dropped = 0
        self._last_id_before_gap: int | None = None
        #: id of the last event handed to the sender.
        self.last_id: int | None = None
        #: Events dropped on overflow over the socket's life.
        self.dropped_total = 0
        self.close_code: int | None = None
        self.close_reason = ""
        #: The cross-replica slot this socket holds (CoachHub.open), if any.
        self.slot: tuple[SocketSlots, tuple[int, int]] | None = None

    @property
    def closed(self) -> bool:
        return self.close_code is not None

    def offer(self, message: dict[str, Any]) -> bool:
        """Queue ``message``; False when closed. Drops the oldest on overflow. Loop thread only."""
        if self.closed:
            return False
        if len(self._pending) >= self._queue_size:
            self._pending.popleft()
            if self._dropped == 0:
                self._last_id_before_gap = self.last_id
            self._dropped += 1
            self.dropped_total += 1
        self._pending.append(message)
        self._wake.set()
        return True

    def close(self, code: int, reason: str) -> None:
        """Ask the socket's sender to close with ``code`` once queued messages are sent
        (for 1013, at once: the queue is dropped, the client resumes)."""
        if self.closed:
            return
        self.close_code, self.close_reason = code, reason
        if code == WS_TRY_AGAIN_LATER:
            self._pending.clear()
        self._wake.set()

    async def next(self) -> dict[str, Any] | None:
        """The next message (the overflow marker first, after a gap), waiting for one;
        None once closed and drained."""
        while True:
            if self._dropped and not (self.closed and self.close_code == WS_TRY_AGAIN_LATER):
                marker = {"type": SYNCED, "synced": False, "dropped": self._dropped,
                          "last_event_id": self._last_id_before_gap}
                self._dropped = 0
                return marker
            if self._pending:
                message = self._pending.popleft()
                if isinstance(message.get("id"), int):
                    self.last_id = message["id"]
                return message
            if self.closed:
                return None
            self._wake.clear()
            await self._wake.wait()


class CoachHub:
    """Registry of subscriptions per user id, fed by the stream listener."""

    def __init__(self, *, queue_size: int = 100, max_sockets_per_user: int = 5):
        self.queue_size = queue_size
        self.max_sockets_per_user = max_sockets_per_user
        self._by_user: defaultdict[str, set[Subscription]] = defaultdict(set)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.listener: StreamListener | None = None
        self.slots: SocketSlots | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop that owns the sockets; :meth:`publish_threadsafe` hands messages to it."""
        self._loop = loop

    async def start(self, factory: sessionmaker[Session]) -> None:
        """Bind to the running loop and LISTEN for stored events (returns once listening)."""
        self.bind(asyncio.get_running_loop())
        self.listener = StreamListener(
            factory, deliver=self.publish, wants=lambda user_id: user_id in self._by_user,
            on_gap=lambda: self.close_all(WS_TRY_AGAIN_LATER,
                                          "event feed interrupted; reconnect with lastEventId"))
        await self.listener.start()
        self.slots = SocketSlots(factory, self.max_sockets_per_user, on_lost=lambda: self.close_all(
            WS_TRY_AGAIN_LATER, "socket limits were reset; reconnect with lastEventId"))

    async def stop(self) -> None:
        listener, self.listener = self.listener, None
        if listener is not None:
            await listener.stop()
        slots, self.slots = self.slots, None
        if slots is not None:
            await slots.close()

    async def open(self, user_id: str) -> Subscription:
        """:meth:`subscribe`, holding one of the user's slots across replicas once
        started; TooManySockets when the user has none left. Pair with :meth:`leave`."""
        sub = self.subscribe(user_id)
        slots = self.slots
        if slots is None:
            return sub
        try:
            token = await slots.acquire(user_id)
        except BaseException:
            self.unsubscribe(sub)
            raise
        if token is None:
            self.unsubscribe(sub)
            raise TooManySockets(user_id)
        sub.slot = (slots, token)
        return sub

    def leave(self, sub: Subscription) -> None:
        """Forget the socket and free its slot (in the background)."""
        self.unsubscribe(sub)
        if sub.slot is not None:
            slots, token = sub.slot
            sub.slot = None
            slots.release(sub.user_id, token)

    def subscribe(self, user_id: str) -> Subscription:
        """A new socket of ``user_id``; TooManySockets past ``max_sockets_per_user``."""
        if len(self._by_user.get(user_id, ())) >= self.max_sockets_per_user:
            raise TooManySockets(user_id)
        sub = Subscription(user_id, self.queue_size)
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
        """:meth:`publish` from any thread. Dropped when no loop is bound or it has
        closed (stored events are replayable)."""
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
