"""``/v1/digests``: weekly digests, read from this service's projection of
``digests.ready.v1`` (no backend call).

digest-worker builds a user's digest of a week once the week is over (Monday 00:00 in
the user's time zone, the weekly tick; past weeks whose trades arrive late, e.g. an
import of old fills, a few seconds after their last trade). The current week has no
digest until it ends.

* ``GET /v1/digests/weekly/latest``: the newest week's digest, with P&L, best and worst
  decision and habits.
* ``GET /v1/digests/weekly?limit=&before=``: past digests, newest week first; ``before``
  (an ISO date, the ``next_before`` of the previous page) pages back.
* ``GET /v1/digests/latest``: the original contract (counts, net cash flow, summary),
  kept as it was for the CLI and the demo; it is the same digest as ``weekly/latest``.
"""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel

from bsopt_api import projections
from bsopt_api.api.deps import SessionFactory, TradesReader
from bsopt_api.api.schemas import Digest, Money
from bsopt_common.db import session_scope

router = APIRouter(prefix="/v1/digests", tags=["digests"])

NO_DIGEST = "no weekly digest yet: a week's digest is built once the week is over (Monday 00:00 in your time zone)"


class Decision(BaseModel):
    """One round trip matched FIFO: the trade that opened a lot and the one that closed it."""

    symbol: str
    open_trade_id: str
    close_trade_id: str
    quantity: int
    #: ``LONG`` (bought, then sold) or ``SHORT`` (sold, then bought back).
    direction: str
    open_price: Money | None
    close_price: Money | None
    #: Realised P&L of this round trip.
    pnl: Money | None
    opened_at: str | None
    closed_at: str | None


class WeeklyDigest(BaseModel):
    digest_id: str
    #: The week, Monday .. Sunday in ``time_zone`` (null: built before per-user time zones, UTC).
    period_start: str
    period_end: str
    time_zone: str | None
    trades: int
    #: Trades per label: FOMO, PANIC, DISCIPLINE, NONE.
    label_counts: dict[str, int]
    #: Realised P&L of the round trips closed in the week (FIFO; null on older digests).
    pnl: Money | None
    round_trips: int | None
    best_decision: Decision | None
    worst_decision: Decision | None
    #: The habit to practise next week, and the label it answers.
    habit: str | None
    habit_label: str | None
    #: Last week's habit and whether this week kept it (null: no trades last week).
    previous_habit: str | None
    previous_habit_kept: bool | None
    #: Sells minus buys of the week.
    net_cash_flow: Money
    summary: str
    version: int
    updated_at: str | None


class WeeklyDigestPage(BaseModel):
    digests: list[WeeklyDigest]
    #: Pass as ``before`` for the next (older) page; null on the last page.
    next_before: str | None


async def _read(factory: Any, user_id: str, limit: int, before: date | None) -> list[dict[str, Any]]:
    def read() -> list[dict[str, Any]]:
        with session_scope(factory) as session:
            return projections.weekly_digests(session, user_id, limit=limit, before=before)

    return await asyncio.to_thread(read)


@router.get("/latest", response_model=Digest, responses={404: {"description": "no digest yet"}})
async def latest_digest(principal: TradesReader, factory: SessionFactory) -> dict[str, Any]:
    """The caller's digest of the most recent week (its highest version)."""

    def read() -> dict[str, Any] | None:
        with session_scope(factory) as session:
            return projections.latest_digest(session, principal.subject)

    digest = await asyncio.to_thread(read)
    if digest is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NO_DIGEST)
    return digest


@router.get("/weekly/latest", response_model=WeeklyDigest, responses={404: {"description": "no digest yet"}})
async def latest_weekly_digest(principal: TradesReader, factory: SessionFactory) -> dict[str, Any]:
    """The caller's digest of the most recent completed week."""
    found = await _read(factory, principal.subject, 1, None)
    if not found:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NO_DIGEST)
    return found[0]


@router.get("/weekly", response_model=WeeklyDigestPage)
async def list_weekly_digests(
    principal: TradesReader,
    factory: SessionFactory,
    limit: Annotated[int, Query(ge=1, le=100, description="Digests per page (at most 100)")] = 10,
    before: Annotated[date | None, Query(description="Only weeks starting before this ISO date")] = None,
) -> dict[str, Any]:
    """The caller's past weekly digests, newest week first."""
    found = await _read(factory, principal.subject, limit + 1, before)
    page = found[:limit]
    return {"digests": page, "next_before": page[-1]["period_start"] if len(found) > limit else None}
