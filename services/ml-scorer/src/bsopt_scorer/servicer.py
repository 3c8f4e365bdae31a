"""gRPC entrypoint of ml-scorer."""

from __future__ import annotations

import asyncio

from grpc import aio
from sqlalchemy.orm import Session, sessionmaker

from bsopt.ml_scorer.v1 import ml_scorer_pb2 as pb
from bsopt.ml_scorer.v1 import ml_scorer_pb2_grpc as pb_grpc
from bsopt_common.db import session_scope
from bsopt_common.errors import InvalidArgument
from bsopt_common.grpc_server import GrpcService
from bsopt_common.security.grpc import acting_user
from bsopt_scorer.domain.records import ScoredTrade
from bsopt_scorer.scoring import list_scored, scored_trade_pb

METHOD_SCOPES = {"ListScoredTrades": ("scorer:read",)}
MAX_PAGE = 500


class MlScorerServicer(pb_grpc.MlScorerServiceServicer):
    def __init__(self, session_factory: sessionmaker[Session]):
        self.session_factory = session_factory

    def _list(self, user_id: str, limit: int) -> list[ScoredTrade]:
        with session_scope(self.session_factory) as s:
            return list_scored(s, user_id, limit)

    async def ListScoredTrades(self, request: pb.ListScoredTradesRequest, context: aio.ServicerContext):
        user_id = acting_user()  # the delegated token's user (RFC 8693), never a request field
        if request.page_size < 0:
            raise InvalidArgument("page_size must be >= 0")
        limit = min(request.page_size or MAX_PAGE, MAX_PAGE)
        trades = await asyncio.to_thread(self._list, user_id, limit)
        return pb.ListScoredTradesResponse(trades=[scored_trade_pb(t) for t in trades])


def grpc_service(servicer: MlScorerServicer) -> GrpcService:
    return GrpcService(pb.DESCRIPTOR.services_by_name["MlScorerService"],
                       pb_grpc.add_MlScorerServiceServicer_to_server, servicer, METHOD_SCOPES)
