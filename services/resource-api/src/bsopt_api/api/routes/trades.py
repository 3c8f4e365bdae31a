"""``/v1/trades``: the caller's imported trades with ml-scorer's bias labels.

``GET /v1/trades`` filters by ``since``/``until`` (``executed_at``, half-open), ``symbol``
and ``label``, newest first, at most ``limit``; the body is the list of trades and, when
there are more, a ``Link: <...>; rel="next"`` header (RFC 8288) whose URL carries the
opaque ``cursor`` of the next page (keyset on ``executed_at``, ``trade_id`` in ml-scorer:
stable while trades are added). An unknown query parameter is 422, not ignored.
``GET /v1/trades/{trade_id}``: one trade with its features, tag and explanation, plus
what the user added: ``note`` (the latest), ``notes`` (all, oldest first: those of
``PUT .../note`` and of the coach socket's ``note.add`` alike, ``api.coach_notes``) and
``feedback`` on its reflection (``up``/``down``, ``chat.feedback``).
``PUT /v1/trades/{trade_id}/note``: the trade's note (idempotent: the same text again adds
nothing); 404 for a trade that is not the caller's.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from bsopt.ml_scorer.v1 import ml_scorer_pb2 as pb
from bsopt_api import encoding, models
from bsopt_api.api.deps import Backends, SessionFactory, TradesReader, TradesWriter
from bsopt_api.api.schemas import PRINTABLE, Instant, ScoredTrade
from bsopt_api.clients import ML_SCORER, BackendClients
from bsopt_common import codec

router = APIRouter(prefix="/v1/trades", tags=["trades"])

_LIST_PARAMETERS = frozenset({"since", "until", "symbol", "label", "cursor", "limit"})
Label = Literal["FOMO", "PANIC", "DISCIPLINE", "NONE", "fomo", "panic", "discipline", "none"]


def _known_parameters_only(request: Request) -> None:
    unknown = sorted(set(request.query_params) - _LIST_PARAMETERS)
    if unknown:
        raise RequestValidationError([{"type": "extra_forbidden", "loc": ("query", name),
                                       "msg": "unknown query parameter"} for name in unknown[:10]])


@router.get("", response_model=list[ScoredTrade], dependencies=[Depends(_known_parameters_only)], responses={
    200: {"headers": {"Link": {"description": 'RFC 8288 rel="next": the next page, when there is one',
                               "schema": {"type": "string"}}}},
    422: {"description": "an unknown query parameter, a bad value or cursor"}})
async def list_trades(
    request: Request, response: Response, principal: TradesReader, backends: Backends,
    limit: Annotated[int, Query(ge=1, le=500)] = 500,
    since: Annotated[Instant | None, Query(description="executed at or after (ISO date or RFC 3339)")] = None,
    until: Annotated[Instant | None, Query(description="executed before (ISO date or RFC 3339)")] = None,
    symbol: Annotated[str | None, Query(min_length=1, max_length=16, pattern=PRINTABLE)] = None,
    label: Annotated[Label | None, Query(description="FOMO, PANIC, DISCIPLINE or NONE")] = None,
    cursor: Annotated[str | None, Query(min_length=1, max_length=512, pattern=r"^[A-Za-z0-9_-]+$",
                                        description="from the previous page's Link header")] = None,
) -> list[dict[str, Any]]:
    """Scored trades, newest ``executed_at`` first, at most ``limit``, filtered."""
    req = pb.ListScoredTradesRequest(page_size=limit, symbol=symbol or "", page_token=cursor or "")
    if since is not None:
        req.since.CopyFrom(codec.timestamp(since))
    if until is not None:
        req.until.CopyFrom(codec.timestamp(until))
    if label is not None:
        req.label = pb.BiasLabel.Value(f"BIAS_LABEL_{label.upper()}")
    resp = await backends.ml_scorer.ListScoredTrades(
        req, timeout=backends.timeout_seconds,
        metadata=await backends.acting_for(principal, ML_SCORER, "scorer:read"),
    )
    if resp.next_page_token:
        params = {k: v for k, v in request.query_params.items() if k != "cursor"}
        response.headers["Link"] = (f'<{router.prefix}?{urlencode({**params, "cursor": resp.next_page_token})}>; '
                                    'rel="next"')
    return [encoding.scored_trade(t) for t in resp.trades]


class NoteUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: The note, 1-2000 characters.
    text: str = Field(min_length=1, max_length=2000, pattern=r"^[^\x00]+$")


class Note(BaseModel):
    trade_id: str
    text: str
    created_at: str


class TradeWithNotes(ScoredTrade):
    #: The latest note (null: none).
    note: str | None = None
    notes: list[Note] = Field(default_factory=list)
    #: The user's rating of the reflection: ``up``, ``down`` or null.
    feedback: str | None = None


def _notes(session: Session, user_id: str, trade_id: str) -> list[dict[str, Any]]:
    t = models.coach_notes
    rows = session.execute(select(t.c.text, t.c.created_at).where(t.c.user_id == user_id, t.c.trade_id == trade_id)
                           .order_by(t.c.note_id)).all()
    return [{"trade_id": trade_id, "text": r.text, "created_at": codec.rfc3339(r.created_at)} for r in rows]


def _feedback(session: Session, user_id: str, trade_id: str) -> str | None:
    t = models.coach_feedback
    return session.execute(select(t.c.rating).where(t.c.user_id == user_id, t.c.trade_id == trade_id)
                           ).scalar_one_or_none()


async def _owned_trade(backends: BackendClients, principal: Any, trade_id: str) -> Any:
    return await backends.ml_scorer.GetScoredTrade(
        pb.GetScoredTradeRequest(trade_id=trade_id), timeout=backends.timeout_seconds,
        metadata=await backends.acting_for(principal, ML_SCORER, "scorer:read"),
    )


TradeId = Annotated[str, Path(min_length=1, max_length=128, pattern=PRINTABLE)]


@router.get("/{trade_id}", response_model=TradeWithNotes,
            responses={404: {"description": "not a trade of yours"}})
async def get_trade(trade_id: TradeId, principal: TradesReader, backends: Backends,
                    factory: SessionFactory) -> dict[str, Any]:
    """One scored trade: its features, tag, explanation and reflection, with your notes
    and your feedback on the reflection."""
    trade = encoding.scored_trade(await _owned_trade(backends, principal, trade_id))

    def read() -> tuple[list[dict[str, Any]], str | None]:
        with factory() as s:
            return _notes(s, principal.subject, trade_id), _feedback(s, principal.subject, trade_id)

    notes, feedback = await asyncio.to_thread(read)
    return {**trade, "notes": notes, "note": notes[-1]["text"] if notes else None, "feedback": feedback}


@router.put("/{trade_id}/note", response_model=Note, responses={404: {"description": "not a trade of yours"}})
async def put_note(trade_id: TradeId, body: NoteUpdate, principal: TradesWriter, backends: Backends,
                   factory: SessionFactory) -> dict[str, Any]:
    """Set the trade's note; the same text as the latest note adds nothing."""
    await _owned_trade(backends, principal, trade_id)  # 404 before anything is stored

    def write() -> dict[str, Any]:
        t = models.coach_notes
        with factory.begin() as s:
            latest = s.execute(select(t.c.text, t.c.created_at).where(
                t.c.user_id == principal.subject, t.c.trade_id == trade_id).order_by(t.c.note_id.desc()).limit(1)
            ).first()
            if latest is not None and latest.text == body.text:
                return {"trade_id": trade_id, "text": latest.text, "created_at": codec.rfc3339(latest.created_at)}
            row = s.execute(t.insert().values(user_id=principal.subject, trade_id=trade_id, text=body.text)
                            .returning(t.c.created_at)).one()
            return {"trade_id": trade_id, "text": body.text, "created_at": codec.rfc3339(row.created_at)}

    return await asyncio.to_thread(write)
