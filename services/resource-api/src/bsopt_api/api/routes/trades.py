"""``/v1/trades``: the caller's imported trades with ml-scorer's bias labels.

``GET /v1/trades`` filters by ``since``/``until`` (``executed_at``, half-open), ``symbol``
and ``label``, newest first, at most ``limit``; the body is the list of trades and, when
there are more, a ``Link: <...>; rel="next"`` header (RFC 8288) whose URL carries the
opaque ``cursor`` of the next page (keyset on ``executed_at``, ``trade_id`` in ml-scorer:
stable while trades are added). An unknown query parameter is 422, not ignored.
``GET /v1/trades/{trade_id}``: one trade with its features, tag and explanation.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError

from bsopt.ml_scorer.v1 import ml_scorer_pb2 as pb
from bsopt_api import encoding
from bsopt_api.api.deps import Backends, TradesReader
from bsopt_api.api.schemas import PRINTABLE, Instant, ScoredTrade
from bsopt_api.clients import ML_SCORER
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


@router.get("/{trade_id}", response_model=ScoredTrade, responses={404: {"description": "not a trade of yours"}})
async def get_trade(principal: TradesReader, backends: Backends,
                    trade_id: str = Path(min_length=1, max_length=128, pattern=PRINTABLE)) -> dict[str, Any]:
    """One scored trade: its features, tag, explanation and reflection."""
    trade = await backends.ml_scorer.GetScoredTrade(
        pb.GetScoredTradeRequest(trade_id=trade_id), timeout=backends.timeout_seconds,
        metadata=await backends.acting_for(principal, ML_SCORER, "scorer:read"),
    )
    return encoding.scored_trade(trade)
