"""gRPC entrypoint of rl-trainer: decode, call the job store / paper trader, encode."""

from __future__ import annotations

import asyncio

from google.protobuf.timestamp_pb2 import Timestamp
from grpc import aio

from bsopt.broker_gateway.v1 import broker_gateway_pb2_grpc as bpb_grpc
from bsopt.rl_trainer.v1 import rl_trainer_pb2 as pb
from bsopt.rl_trainer.v1 import rl_trainer_pb2_grpc as pb_grpc
from bsopt_common.db import session_scope
from bsopt_common.grpc_server import FailedPrecondition, abort_with
from bsopt_trainer import models
from bsopt_trainer.jobs import STATUS_PB, JobStore, results_pb, spec_from_json, spec_from_pb, spec_pb
from bsopt_trainer.papertrade import run_paper_trading

_SERVICE = "/bsopt.rl_trainer.v1.RlTrainerService/"
METHOD_SCOPES: dict[str, tuple[str, ...]] = {
    _SERVICE + "SubmitTrainingJob": ("trainer:jobs.write",),
    _SERVICE + "GetTrainingJob": ("trainer:jobs.read",),
    _SERVICE + "RunPaperTrading": ("trainer:jobs.write",),
}


def _ts(dt) -> Timestamp | None:  # noqa: ANN001
    if dt is None:
        return None
    t = Timestamp()
    t.FromDatetime(dt)
    return t


def job_pb(row: dict) -> pb.TrainingJob:
    total = row["total_timesteps"] or 1
    return pb.TrainingJob(
        job_id=row["job_id"], user_id=row["user_id"], spec=spec_pb(row["spec"]), status=STATUS_PB[row["status"]],
        progress=min(1.0, row["timesteps_done"] / total), results=results_pb(row["results"]), error=row["error"],
        created_at=_ts(row["created_at"]), started_at=_ts(row["started_at"]), finished_at=_ts(row["finished_at"]),
    )


class RlTrainerServicer(pb_grpc.RlTrainerServiceServicer):
    def __init__(self, store: JobStore, broker_stub: bpb_grpc.BrokerGatewayServiceStub, notify):  # noqa: ANN001
        self.store = store
        self.broker_stub = broker_stub
        self.notify = notify

    async def SubmitTrainingJob(self, request: pb.SubmitTrainingJobRequest, context: aio.ServicerContext):
        try:
            spec = spec_from_pb(request.spec)
            row = await asyncio.to_thread(self.store.submit, request.user_id, spec)
            self.notify()
            return job_pb(row)
        except Exception as exc:
            await abort_with(context, exc)

    async def GetTrainingJob(self, request: pb.GetTrainingJobRequest, context: aio.ServicerContext):
        try:
            return job_pb(await asyncio.to_thread(self.store.get, request.job_id, request.user_id))
        except Exception as exc:
            await abort_with(context, exc)

    async def RunPaperTrading(self, request: pb.RunPaperTradingRequest, context: aio.ServicerContext):
        try:
            job = await asyncio.to_thread(self.store.get, request.job_id, request.user_id)
            if job["status"] != "succeeded":
                raise FailedPrecondition(f"training job {request.job_id} is {job['status']}, not succeeded")
            result = await run_paper_trading(
                stub=self.broker_stub, market_data=self.store.market_data, spec=spec_from_json(job["spec"]),
                checkpoint_path=job["results"]["checkpoint_path"], account_id=request.account_id,
                user_id=request.user_id)
            await asyncio.to_thread(self._record, job["job_id"], request.account_id, result)
            return pb.RunPaperTradingResponse(orders=result.orders, fills=result.fills, rejected=result.rejected,
                                              final_equity_usd=result.final_equity_usd)
        except Exception as exc:
            await abort_with(context, exc)

    def _record(self, job_id: str, account_id: str, r) -> None:  # noqa: ANN001
        with session_scope(self.store.session_factory) as s:
            s.execute(models.paper_runs.insert().values(
                run_id=r.run_id, job_id=job_id, account_id=account_id, orders=r.orders, fills=r.fills,
                rejected=r.rejected, final_equity_usd=r.final_equity_usd))
