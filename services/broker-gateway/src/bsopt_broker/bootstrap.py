"""Wire broker-gateway from settings: the runtime (database + migrations, token
verifier, outbox relay to Kafka), the paper venue, the trade importer, and gRPC."""

from __future__ import annotations

import asyncio

from bsopt_broker import models
from bsopt_broker.adapters.paper import PaperBroker
from bsopt_broker.config import BrokerSettings
from bsopt_broker.servicer import BrokerGatewayServicer, grpc_service
from bsopt_broker.trade_import import TradeImporter
from bsopt_common.grpc_server import serve_grpc
from bsopt_common.marketdata import MarketDataProvider, bundled_provider
from bsopt_common.service import ServiceRuntime
from bsopt_common.settings import BROKER_GATEWAY_AUDIENCE


async def serve(settings: BrokerSettings, stop: asyncio.Event, market_data: MarketDataProvider | None = None) -> None:
    runtime = ServiceRuntime(settings, schema=models.SCHEMA, migrations_package="bsopt_broker",
                             audience=BROKER_GATEWAY_AUDIENCE)
    async with runtime.running():
        broker = PaperBroker(runtime.session_factory, market_data or bundled_provider(), settings.paper_commission_bps)
        servicer = BrokerGatewayServicer(broker, TradeImporter(runtime.session_factory, broker, runtime.outbox),
                                         runtime.outbox)
        await serve_grpc(stop, host=settings.host, port=settings.port, verifier=runtime.verifier,
                         services=[grpc_service(servicer)])
