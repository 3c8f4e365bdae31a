"""Wire rl-trainer from settings: database + migrations, token verifier, outbox relay,
the ``training.requested.v1`` consumer, the training worker, the broker-gateway client,
and the gRPC server."""

from __future__ import annotations

import asyncio
import logging

from bsopt.broker_gateway.v1 import broker_gateway_pb2_grpc as bpb_grpc
from bsopt.rl_trainer.v1 import rl_trainer_pb2 as pb
from bsopt.rl_trainer.v1 import rl_trainer_pb2_grpc as pb_grpc
from bsopt_common.grpc_server import GrpcServer
from bsopt_common.marketdata import MarketDataProvider, bundled_provider
from bsopt_common.security.grpc import TokenAuthInterceptor, authorized_channel
from bsopt_common.service import ServiceRuntime
from bsopt_common.settings import BROKER_GATEWAY_AUDIENCE, RL_TRAINER_AUDIENCE
from bsopt_trainer import models
from bsopt_trainer.config import TrainerSettings
from bsopt_trainer.consumers import training_requests
from bsopt_trainer.jobs import JobStore, TrainingWorker
from bsopt_trainer.servicer import METHOD_SCOPES, RlTrainerServicer

log = logging.getLogger(__name__)


async def serve(settings: TrainerSettings, stop: asyncio.Event, market_data: MarketDataProvider | None = None) -> None:
    runtime = ServiceRuntime(settings, schema=models.SCHEMA, migrations_package="bsopt_trainer",
                             audience=RL_TRAINER_AUDIENCE)
    loop = asyncio.get_running_loop()

    def notify() -> None:  # safe from any thread: wake the outbox relay
        if runtime.outbox is not None:
            loop.call_soon_threadsafe(runtime.outbox.notify)

    await asyncio.to_thread(runtime.connect_database)
    store = JobStore(runtime.session_factory, runtime.outbox, market_data or bundled_provider())
    interrupted = await asyncio.to_thread(store.fail_interrupted)
    if interrupted:
        log.warning("marked %d interrupted training job(s) failed", interrupted)
    worker = TrainingWorker(store, settings.artifacts_dir, settings.torch_threads, on_event=notify)
    worker.start()
    await runtime.start([training_requests(store, worker)], connect=False)
    channel = authorized_channel(settings.broker_gateway_target, runtime.token_provider, BROKER_GATEWAY_AUDIENCE,
                                 "broker:accounts broker:orders")
    try:
        servicer = RlTrainerServicer(store, bpb_grpc.BrokerGatewayServiceStub(channel), notify)
        server = GrpcServer(
            host=settings.host, port=settings.port,
            interceptor=TokenAuthInterceptor(runtime.verifier, METHOD_SCOPES),
            registrations=[(pb_grpc.add_RlTrainerServiceServicer_to_server, servicer)],
            service_names=[pb.DESCRIPTOR.services_by_name["RlTrainerService"].full_name],
        )
        await server.start()
        await stop.wait()
        log.info("draining")
        await server.stop()
    finally:
        worker.stop()
        await channel.close()
        await runtime.stop()
