"""gRPC entrypoint of rl-trainer: decode, call the job store / paper trader, encode."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from grpc import aio

from bsopt.broker_gateway.v1 import broker_gateway_pb2_grpc as bpb_grpc
from bsopt.rl_trainer.v1 import rl_trainer_pb2 as pb
from bsopt.rl_trainer.v1 import rl_trainer_pb2_grpc as pb_grpc
from bsopt_common import codec
from bsopt_common.db import session_scope
from bsopt_common.errors import FailedPrecondition, Unavailable
from bsopt_common.grpc_server import GrpcService
from bsopt_common.security.grpc import acting_user, bearer_metadata, current_claims
from bsopt_common.security.token_exchange import TokenExchanger
from bsopt_common.security.token_provider import TokenRequestError
from bsopt_common.settings import BROKER_GATEWAY_AUDIENCE
from bsopt_common.vocabulary import JobStatus
from bsopt_trainer import models
from bsopt_trainer.job_store import JobStore, job_pb, spec_from_pb
from bsopt_trainer.papertrade import PaperRunResult, run_paper_trading

METHOD_SCOPES: dict[str, tuple[str, ...]] = {
    "SubmitTrainingJob": ("trainer:jobs.write",),
    "GetTrainingJob": ("trainer:jobs.read",),
    "CancelTrainingJob": ("trainer:jobs.write",),
    "RunPaperTrading": ("trainer:jobs.write",),
}

#: What a paper run needs at broker-gateway for the job's owner (the auth-server grants
#: it only from a token carrying trainer:jobs.write: DELEGATED_SCOPES).
PAPER_TRADING_SCOPE = "broker:accounts broker:orders"


class RlTrainerServicer(pb_grpc.RlTrainerServiceServicer):
    def __init__(self, store: JobStore, broker_stub: bpb_grpc.BrokerGatewayServiceStub,
                 notify: Callable[[], None], cancel_running: Callable[[str], None] | None = None,
                 *, exchanger: TokenExchanger):
        self.store = store
        self.broker_stub = broker_stub
        #: Re-exchanges the caller's delegated token for broker-gateway (RFC 8693).
        self.exchanger = exchanger
        self.notify = notify
        #: Stops a job this process is training at its next iteration (TrainingWorker.cancel).
        self.cancel_running = cancel_running

    async def SubmitTrainingJob(self, request: pb.SubmitTrainingJobRequest,
                                context: aio.ServicerContext) -> pb.TrainingJob:
        job = await asyncio.to_thread(self.store.submit, acting_user(), spec_from_pb(request.spec))
        self.notify()
        return job_pb(job)

    async def GetTrainingJob(self, request: pb.GetTrainingJobRequest, context: aio.ServicerContext) -> pb.TrainingJob:
        return job_pb(await asyncio.to_thread(self.store.get, request.job_id, acting_user()))

    async def CancelTrainingJob(self, request: pb.CancelTrainingJobRequest,
                                context: aio.ServicerContext) -> pb.TrainingJob:
        job = await asyncio.to_thread(self.store.cancel, request.job_id, acting_user())
        if job.status is JobStatus.RUNNING and self.cancel_running is not None:
            self.cancel_running(job.job_id)
        self.notify()
        return job_pb(job)

    async def RunPaperTrading(self, request: pb.RunPaperTradingRequest,
                              context: aio.ServicerContext) -> pb.RunPaperTradingResponse:
        job = await asyncio.to_thread(self.store.get, request.job_id, acting_user())
        if job.status is not JobStatus.SUCCEEDED or not job.results:
            raise FailedPrecondition(f"training job {request.job_id} is {job.status.value}, not succeeded")
        subject_token = current_claims().token

        async def broker_metadata() -> tuple[tuple[str, str], ...]:
            # the owner's token to us, exchanged for one to broker-gateway (act: rl-trainer)
            try:
                token = await self.exchanger.token_for(subject_token, BROKER_GATEWAY_AUDIENCE, PAPER_TRADING_SCOPE)
            except TokenRequestError as exc:
                raise Unavailable(f"could not act for the user at broker-gateway: {exc}") from None
            return bearer_metadata(token)

        result = await run_paper_trading(
            stub=self.broker_stub, market_data=self.store.market_data, spec=job.spec,
            checkpoint_path=job.results["checkpoint_path"], account_id=request.account_id,
            metadata=broker_metadata)
        await asyncio.to_thread(self._record, job.job_id, request.account_id, result)
        return codec.to_message(result, pb.RunPaperTradingResponse)

    def _record(self, job_id: str, account_id: str, r: PaperRunResult) -> None:
        with session_scope(self.store.session_factory) as s:
            s.execute(models.paper_runs.insert().values(
                run_id=r.run_id, job_id=job_id, account_id=account_id, orders=r.orders, fills=r.fills,
                rejected=r.rejected, final_equity=r.final_equity.amount, currency=r.final_equity.currency))


def grpc_service(servicer: RlTrainerServicer) -> GrpcService:
    return GrpcService(pb.DESCRIPTOR.services_by_name["RlTrainerService"],
                       pb_grpc.add_RlTrainerServiceServicer_to_server, servicer, METHOD_SCOPES)
