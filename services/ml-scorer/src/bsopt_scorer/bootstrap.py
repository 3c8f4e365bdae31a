"""Wire ml-scorer from settings: the runtime (database + migrations, verifier, outbox
relay), the ``trades.imported.v1`` consumer and the gRPC server."""

from __future__ import annotations

import asyncio

from bsopt_common.grpc_server import serve_grpc
from bsopt_common.marketdata import (
    AlpacaBarsProvider,
    CompositeMarketDataProvider,
    MarketDataProvider,
    bundled_provider,
)
from bsopt_common.service import ServiceRuntime
from bsopt_common.settings import ML_SCORER_AUDIENCE
from bsopt_scorer import models
from bsopt_scorer.config import ScorerSettings
from bsopt_scorer.consumers import imported_trades
from bsopt_scorer.reflections import reflector_from
from bsopt_scorer.scoring import TradeScorer
from bsopt_scorer.servicer import MlScorerServicer, grpc_service


def market_data_from(settings: ScorerSettings) -> MarketDataProvider:
    """The bundled bars, plus Alpaca's daily bars where they do not cover a trade when
    the Alpaca market-data key id and secret are set."""
    bundled = bundled_provider()
    secret = settings.alpaca_data_secret()
    if not settings.alpaca_data_key_id or not secret:
        return bundled
    alpaca = AlpacaBarsProvider(settings.alpaca_data_key_id, secret, base_url=settings.alpaca_data_url,
                                cache_ttl_s=settings.market_data_cache_ttl_s,
                                timeout_s=settings.market_data_timeout_s, feed=settings.alpaca_data_feed)
    return CompositeMarketDataProvider(bundled, alpaca)


async def serve(settings: ScorerSettings, stop: asyncio.Event, market_data: MarketDataProvider | None = None) -> None:
    runtime = ServiceRuntime(settings, schema=models.SCHEMA, migrations_package="bsopt_scorer",
                             audience=ML_SCORER_AUDIENCE)
    await runtime.connect()
    scorer = TradeScorer(market_data or market_data_from(settings), runtime.outbox, reflector_from(settings))
    async with runtime.running([imported_trades(scorer)]):
        await serve_grpc(stop, host=settings.host, port=settings.port, verifier=runtime.verifier,
                         services=[grpc_service(MlScorerServicer(runtime.session_factory))])
