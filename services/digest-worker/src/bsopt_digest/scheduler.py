"""The weekly tick: a scheduler inside digest-worker.

* **Tick** on the cron expression ``BSOPT_DIGEST_TICK_CRON`` (5 fields, evaluated in UTC
  by ``croniter``; default hourly ``0 * * * *``): builds every week that is complete in
  its user's time zone (Monday 00:00 local has passed) and has no digest yet
  (:func:`bsopt_digest.digest_store.build_due_digests`). An hourly tick gives every user
  their digest within the hour after their Monday 00:00, whatever their UTC offset
  (offsets that are not whole hours, e.g. Asia/Kolkata, within the next tick). A tick
  missed while the worker was down is made up by the next one: due weeks are found from
  the data, not from the tick's time.
* **Catch-up** (``BSOPT_DIGEST_CATCHUP_SETTLE_SECONDS``, default 5; unset: off): trades of
  weeks that are *already complete* when they arrive (an import of past fills, as the
  demo does) would otherwise wait for the next tick. Every ``catchup_poll_seconds`` the
  scheduler builds the complete weeks of users with trades recorded in the last hour,
  once no trade of that week has been recorded for the settle time. The current week is
  never built early: only the tick at its end builds it.

The clock is injected (``clock``), so tests drive the tick with a controlled "now".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from croniter import croniter
from sqlalchemy.orm import Session, sessionmaker

from bsopt.digest_worker.v1 import events_pb2
from bsopt_common.events import Outbox
from bsopt_digest.digest_store import build_due_digests

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


def validate_cron(expression: str) -> str:
    """``expression`` if it is a valid 5-field cron expression, else ValueError."""
    if len(expression.split()) != 5 or not croniter.is_valid(expression):
        raise ValueError(f"not a 5-field cron expression: {expression!r}")
    return expression


def next_fire(expression: str, after: datetime) -> datetime:
    """The first time strictly after ``after`` that ``expression`` matches (UTC)."""
    fire: datetime = croniter(expression, after.astimezone(UTC)).get_next(datetime)
    return fire.astimezone(UTC)


class DigestScheduler:
    def __init__(self, factory: sessionmaker[Session], outbox: Outbox, *, cron: str = "0 * * * *",
                 clock: Clock = system_clock, catchup_settle_seconds: float | None = 5.0,
                 catchup_poll_seconds: float = 2.0, poll_seconds: float = 1.0,
                 notify: Callable[[], None] | None = None) -> None:
        self.factory = factory
        self.outbox = outbox
        self.cron = validate_cron(cron)
        self.clock = clock
        self.catchup_settle = (None if catchup_settle_seconds is None
                               else timedelta(seconds=catchup_settle_seconds))
        self.catchup_poll_seconds = catchup_poll_seconds
        self.poll_seconds = poll_seconds
        self.notify = notify
        #: Times (the clock's) at which the tick fired, for logs and tests.
        self.fired: list[datetime] = []

    def tick(self, now: datetime | None = None) -> list[events_pb2.DigestReady]:
        """One tick at ``now`` (the clock's now by default): build every due week."""
        at = self.clock() if now is None else now
        return build_due_digests(self.factory, self.outbox, at, after_commit=self.notify)

    def catch_up(self) -> list[events_pb2.DigestReady]:
        """The catch-up pass (module docstring)."""
        if self.catchup_settle is None:
            return []
        return build_due_digests(self.factory, self.outbox, self.clock(), settled_for=self.catchup_settle,
                                 recorded_within=timedelta(hours=1), after_commit=self.notify)

    async def run(self, stop: asyncio.Event) -> None:
        """Fire on the cron expression until ``stop``; errors of one pass are logged and
        the next pass goes on."""
        fire_at = next_fire(self.cron, self.clock())
        loop = asyncio.get_running_loop()
        next_catch_up = loop.time() + self.catchup_poll_seconds
        log.info("weekly digest tick %r, next at %s", self.cron, fire_at.isoformat())
        while not stop.is_set():
            try:
                now = self.clock()
                if now >= fire_at:
                    self.fired.append(fire_at)
                    built = await asyncio.to_thread(self.tick, now)
                    log.info("digest tick at %s built %d digest(s)", now.isoformat(), len(built))
                    fire_at = next_fire(self.cron, max(now, fire_at))
                elif self.catchup_settle is not None and loop.time() >= next_catch_up:
                    await asyncio.to_thread(self.catch_up)
                    next_catch_up = loop.time() + self.catchup_poll_seconds
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("digest tick failed; trying again at the next one")
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.poll_seconds)
            except TimeoutError:
                pass
