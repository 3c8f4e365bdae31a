"""Wire ml-scorer from settings: the runtime (database + migrations, verifier, outbox
relay), the ``trades.imported.v1`` consumer and the gRPC server."""

from __future__ import annotations

import asyncio

from bsopt_common.grpc_server import serve_grpc
from bsopt_common.marketdata import MarketDataProvider, bundled_provider
from bsopt_common.service import ServiceRuntime
from bsopt_common.settings import ML_SCORER_AUDIENCE
from bsopt_scorer import models
from bsopt_scorer.config import ScorerSettings
from bsopt_scorer.consumers import imported_trades
from bsopt_scorer.scoring import TradeScorer
from bsopt_scorer.servicer import MlScorerServicer, grpc_service


async def serve(settings: ScorerSettings, stop: asyncio.Event, market_data: MarketDataProvider | None = None) -> None:
    runtime = ServiceRuntime(settings, schema=models.SCHEMA, migrations_package="bsopt_scorer",
                             audience=ML_SCORER_AUDIENCE)
    await runtime.connect()
    scorer = TradeScorer(market_data or bundled_provider(), runtime.outbox)
    async with runtime.running([imported_trades(scorer)]):
        await serve_grpc(stop, host=settings.host, port=settings.port, verifier=runtime.verifier,
                         services=[grpc_service(MlScorerServicer(runtime.session_factory))])
