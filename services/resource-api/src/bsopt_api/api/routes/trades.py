"""``/v1/trades``: the caller's imported trades with ml-scorer's bias labels."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from bsopt.ml_scorer.v1 import ml_scorer_pb2 as pb
from bsopt_api import encoding
from bsopt_api.api.deps import Backends, TradesReader
from bsopt_api.api.schemas import ScoredTrade
from bsopt_api.clients import ML_SCORER

router = APIRouter(prefix="/v1/trades", tags=["trades"])


@router.get("", response_model=list[ScoredTrade])
async def list_trades(
    principal: TradesReader, backends: Backends, limit: Annotated[int, Query(ge=1, le=500)] = 500
) -> list[dict[str, Any]]:
    """Scored trades, newest ``executed_at`` first, at most ``limit``."""
    resp = await backends.ml_scorer.ListScoredTrades(
        pb.ListScoredTradesRequest(page_size=limit),
        timeout=backends.timeout_seconds,
        metadata=await backends.acting_for(principal, ML_SCORER, "scorer:read"),
    )
    return [encoding.scored_trade(t) for t in resp.trades]
