"""gRPC entrypoint of ml-scorer."""

from __future__ import annotations

import asyncio

from grpc import aio
from sqlalchemy.orm import Session, sessionmaker

from bsopt.ml_scorer.v1 import ml_scorer_pb2 as pb
from bsopt.ml_scorer.v1 import ml_scorer_pb2_grpc as pb_grpc
from bsopt_common.db import session_scope
from bsopt_common.grpc_server import InvalidArgument, abort_with
from bsopt_scorer.scoring import list_scored, scored_trade_pb

_SERVICE = "/bsopt.ml_scorer.v1.MlScorerService/"
METHOD_SCOPES = {_SERVICE + "ListScoredTrades": ("scorer:read",)}
MAX_PAGE = 500


class MlScorerServicer(pb_grpc.MlScorerServiceServicer):
    def __init__(self, session_factory: sessionmaker[Session]):
        self.session_factory = session_factory

    def _list(self, user_id: str, limit: int) -> list[dict]:
        with session_scope(self.session_factory) as s:
            return list_scored(s, user_id, limit)

    async def ListScoredTrades(self, request: pb.ListScoredTradesRequest, context: aio.ServicerContext):
        try:
            if not request.user_id:
                raise InvalidArgument("user_id is required")
            if request.page_size < 0:
                raise InvalidArgument("page_size must be >= 0")
            limit = min(request.page_size or MAX_PAGE, MAX_PAGE)
            rows = await asyncio.to_thread(self._list, request.user_id, limit)
            return pb.ListScoredTradesResponse(trades=[scored_trade_pb(r) for r in rows])
        except Exception as exc:
            await abort_with(context, exc)
