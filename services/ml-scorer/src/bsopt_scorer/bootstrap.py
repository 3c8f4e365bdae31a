"""Wire ml-scorer from settings: database + migrations, verifier, outbox relay, the
``trades.imported.v1`` consumer and the gRPC server."""

from __future__ import annotations

import asyncio
import logging

from bsopt.ml_scorer.v1 import ml_scorer_pb2 as pb
from bsopt.ml_scorer.v1 import ml_scorer_pb2_grpc as pb_grpc
from bsopt_common.grpc_server import GrpcServer
from bsopt_common.marketdata import MarketDataProvider, bundled_provider
from bsopt_common.security.grpc import TokenAuthInterceptor
from bsopt_common.service import ServiceRuntime
from bsopt_common.settings import ML_SCORER_AUDIENCE
from bsopt_scorer import models
from bsopt_scorer.config import ScorerSettings
from bsopt_scorer.consumers import imported_trades
from bsopt_scorer.scoring import TradeScorer
from bsopt_scorer.servicer import METHOD_SCOPES, MlScorerServicer

log = logging.getLogger(__name__)


async def serve(settings: ScorerSettings, stop: asyncio.Event, market_data: MarketDataProvider | None = None) -> None:
    runtime = ServiceRuntime(settings, schema=models.SCHEMA, migrations_package="bsopt_scorer",
                             audience=ML_SCORER_AUDIENCE)
    await asyncio.to_thread(runtime.connect_database)
    scorer = TradeScorer(market_data or bundled_provider(), runtime.outbox)
    await runtime.start([imported_trades(scorer)], connect=False)
    try:
        server = GrpcServer(
            host=settings.host, port=settings.port,
            interceptor=TokenAuthInterceptor(runtime.verifier, METHOD_SCOPES),
            registrations=[(pb_grpc.add_MlScorerServiceServicer_to_server, MlScorerServicer(runtime.session_factory))],
            service_names=[pb.DESCRIPTOR.services_by_name["MlScorerService"].full_name],
        )
        await server.start()
        await stop.wait()
        log.info("draining")
        await server.stop()
    finally:
        await runtime.stop()
