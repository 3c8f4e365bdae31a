"""gRPC entrypoint of ml-scorer."""

from __future__ import annotations

import asyncio

from grpc import aio
from sqlalchemy.orm import Session, sessionmaker

from bsopt.ml_scorer.v1 import ml_scorer_pb2 as pb
from bsopt.ml_scorer.v1 import ml_scorer_pb2_grpc as pb_grpc
from bsopt_common import codec
from bsopt_common.db import session_scope
from bsopt_common.errors import InvalidArgument
from bsopt_common.grpc_server import GrpcService
from bsopt_common.security.grpc import acting_user
from bsopt_scorer.domain.records import ScoredTrade
from bsopt_scorer.queries import MAX_PAGE, TradeFilter, TradePage, get_trade, list_trades
from bsopt_scorer.scoring import scored_trade_pb

METHOD_SCOPES = {"ListScoredTrades": ("scorer:read",), "GetScoredTrade": ("scorer:read",)}


class MlScorerServicer(pb_grpc.MlScorerServiceServicer):
    def __init__(self, session_factory: sessionmaker[Session]):
        self.session_factory = session_factory

    def _list(self, user_id: str, f: TradeFilter, limit: int, token: str) -> TradePage:
        with session_scope(self.session_factory) as s:
            return list_trades(s, user_id, f, limit, token)

    def _get(self, user_id: str, trade_id: str) -> ScoredTrade:
        with session_scope(self.session_factory) as s:
            return get_trade(s, user_id, trade_id)

    async def ListScoredTrades(self, request: pb.ListScoredTradesRequest, context: aio.ServicerContext):
        """The caller's scored trades, newest first, filtered and keyset-paged
        (:mod:`bsopt_scorer.queries`). INVALID_ARGUMENT for a bad page size, window,
        symbol or token."""
        user_id = acting_user()  # the delegated token's user (RFC 8693), never a request field
        if request.page_size < 0:
            raise InvalidArgument("page_size must be >= 0")
        if len(request.symbol) > 16:
            raise InvalidArgument("symbol is at most 16 characters")
        label = "" if request.label == pb.BIAS_LABEL_UNSPECIFIED else \
            pb.BiasLabel.Name(request.label).removeprefix("BIAS_LABEL_")
        f = TradeFilter(since=codec.from_timestamp(request, "since"), until=codec.from_timestamp(request, "until"),
                        symbol=request.symbol, label=label)
        limit = min(request.page_size or MAX_PAGE, MAX_PAGE)
        page = await asyncio.to_thread(self._list, user_id, f, limit, request.page_token)
        return pb.ListScoredTradesResponse(trades=[scored_trade_pb(t) for t in page.trades],
                                           next_page_token=page.next_page_token)

    async def GetScoredTrade(self, request: pb.GetScoredTradeRequest, context: aio.ServicerContext) -> pb.ScoredTrade:
        """One of the caller's scored trades. NOT_FOUND for an unknown or another user's."""
        return scored_trade_pb(await asyncio.to_thread(self._get, acting_user(), request.trade_id))


def grpc_service(servicer: MlScorerServicer) -> GrpcService:
    return GrpcService(pb.DESCRIPTOR.services_by_name["MlScorerService"],
                       pb_grpc.add_MlScorerServiceServicer_to_server, servicer, METHOD_SCOPES)
