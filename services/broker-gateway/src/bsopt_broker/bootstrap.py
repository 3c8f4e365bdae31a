"""Wire broker-gateway from settings: database + migrations, token verifier, outbox
relay to Kafka, the paper broker, and the gRPC server."""

from __future__ import annotations

import asyncio
import logging

from bsopt.broker_gateway.v1 import broker_gateway_pb2 as pb
from bsopt.broker_gateway.v1 import broker_gateway_pb2_grpc as pb_grpc
from bsopt_broker import models
from bsopt_broker.adapters.paper import PaperBroker
from bsopt_broker.config import BrokerSettings
from bsopt_broker.imports import TradeImporter
from bsopt_broker.servicer import METHOD_SCOPES, BrokerGatewayServicer
from bsopt_common.grpc_server import GrpcServer
from bsopt_common.marketdata import MarketDataProvider, bundled_provider
from bsopt_common.security.grpc import TokenAuthInterceptor
from bsopt_common.service import ServiceRuntime
from bsopt_common.settings import BROKER_GATEWAY_AUDIENCE

log = logging.getLogger(__name__)


async def serve(settings: BrokerSettings, stop: asyncio.Event, market_data: MarketDataProvider | None = None) -> None:
    runtime = ServiceRuntime(settings, schema=models.SCHEMA, migrations_package="bsopt_broker",
                             audience=BROKER_GATEWAY_AUDIENCE)
    await runtime.start()
    try:
        broker = PaperBroker(runtime.session_factory, market_data or bundled_provider(), settings.paper_commission_bps)
        servicer = BrokerGatewayServicer(broker, TradeImporter(runtime.session_factory, broker, runtime.outbox),
                                         runtime.outbox)
        server = GrpcServer(
            host=settings.host, port=settings.port,
            interceptor=TokenAuthInterceptor(runtime.verifier, METHOD_SCOPES),
            registrations=[(pb_grpc.add_BrokerGatewayServiceServicer_to_server, servicer)],
            service_names=[pb.DESCRIPTOR.services_by_name["BrokerGatewayService"].full_name],
        )
        await server.start()
        await stop.wait()
        log.info("draining")
        await server.stop()
    finally:
        await runtime.stop()
