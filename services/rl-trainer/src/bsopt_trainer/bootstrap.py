"""Wire rl-trainer from settings: the runtime (database + migrations, verifier, outbox
relay), the ``training.requested.v1`` consumer, the training worker, the broker-gateway
client, and the gRPC server."""

from __future__ import annotations

import asyncio
import logging

from grpc import aio

from bsopt.broker_gateway.v1 import broker_gateway_pb2_grpc as bpb_grpc
from bsopt_common.grpc_server import serve_grpc
from bsopt_common.marketdata import MarketDataProvider, bundled_provider
from bsopt_common.security.token_exchange import TokenExchanger
from bsopt_common.service import ServiceRuntime
from bsopt_common.settings import RL_TRAINER_AUDIENCE
from bsopt_trainer import models
from bsopt_trainer.config import TrainerSettings
from bsopt_trainer.consumers import training_requests
from bsopt_trainer.job_store import JobStore, Quotas, TrainingWorker
from bsopt_trainer.servicer import RlTrainerServicer, grpc_service

log = logging.getLogger(__name__)


async def serve(settings: TrainerSettings, stop: asyncio.Event, market_data: MarketDataProvider | None = None) -> None:
    runtime = ServiceRuntime(settings, schema=models.SCHEMA, migrations_package="bsopt_trainer",
                             audience=RL_TRAINER_AUDIENCE)
    await runtime.connect()
    quotas = Quotas(max_running_jobs_per_user=settings.max_running_jobs_per_user,
                    max_queued_jobs_per_user=settings.max_queued_jobs_per_user,
                    max_total_timesteps=settings.max_total_timesteps)
    store = JobStore(runtime.session_factory, runtime.outbox, market_data or bundled_provider(), quotas)
    interrupted = await asyncio.to_thread(store.fail_interrupted)
    if interrupted:
        log.warning("marked %d interrupted training job(s) failed", interrupted)
    worker = TrainingWorker(store, settings.artifacts_dir, settings.torch_threads,
                            on_event=runtime.notify_outbox_threadsafe,
                            cancel_poll_seconds=settings.cancel_poll_seconds)
    for job_id, user_id in await asyncio.to_thread(store.claimed_queued):
        worker.enqueue(job_id, user_id)
    worker.start()
    try:
        async with runtime.running([training_requests(store, worker)]):
            # every broker-gateway call carries a token acting for the job's owner (RFC 8693)
            channel = aio.insecure_channel(settings.broker_gateway_target)
            try:
                servicer = RlTrainerServicer(store, bpb_grpc.BrokerGatewayServiceStub(channel),
                                             runtime.notify_outbox_threadsafe, cancel_running=worker.cancel,
                                             exchanger=TokenExchanger(runtime.require_token_provider()))
                await serve_grpc(stop, host=settings.host, port=settings.port, verifier=runtime.verifier,
                                 services=[grpc_service(servicer)])
            finally:
                await channel.close()
    finally:
        await asyncio.to_thread(worker.stop)  # the running job stops at its next iteration
