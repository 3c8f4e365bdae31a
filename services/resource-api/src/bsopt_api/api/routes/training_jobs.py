"""``/v1/training-jobs``: rl-trainer's PPO jobs and paper-trading runs of their agents."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status
from google.protobuf import json_format

from bsopt.rl_trainer.v1 import rl_trainer_pb2 as pb
from bsopt_api import encoding
from bsopt_api.api.deps import Backends, TrainingReader, TrainingWriter
from bsopt_api.api.schemas import PaperTradingResult, PaperTradingRun, TrainingJob, TrainingJobCreate
from bsopt_api.clients import RL_TRAINER

router = APIRouter(prefix="/v1/training-jobs", tags=["training-jobs"])


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=TrainingJob)
async def submit_training_job(
    body: TrainingJobCreate, principal: TrainingWriter, backends: Backends, response: Response
) -> dict[str, Any]:
    """Queue a job (202); poll ``Location`` for its status and results."""
    # The REST body and the contract share field names: one generic conversion.
    spec = json_format.ParseDict(body.model_dump(mode="json"), pb.TrainingJobSpec())
    job = await backends.rl_trainer.SubmitTrainingJob(
        pb.SubmitTrainingJobRequest(spec=spec), timeout=backends.timeout_seconds,
        metadata=await backends.acting_for(principal, RL_TRAINER, "trainer:jobs.write"),
    )
    response.headers["Location"] = f"{router.prefix}/{job.job_id}"
    return encoding.training_job(job)


@router.get("/{job_id}", response_model=TrainingJob)
async def get_training_job(job_id: str, principal: TrainingReader, backends: Backends) -> dict[str, Any]:
    job = await backends.rl_trainer.GetTrainingJob(
        pb.GetTrainingJobRequest(job_id=job_id), timeout=backends.timeout_seconds,
        metadata=await backends.acting_for(principal, RL_TRAINER, "trainer:jobs.read"),
    )
    return encoding.training_job(job)


@router.post("/{job_id}:cancel", response_model=TrainingJob,
             responses={202: {"model": TrainingJob, "description": "Running: it stops within seconds"}})
async def cancel_training_job(
    job_id: str, principal: TrainingWriter, backends: Backends, response: Response
) -> dict[str, Any]:
    """Cancel one of your jobs: a queued job is ``cancelled`` at once (200); a running
    job stops within seconds (202, still ``running``; poll it until ``cancelled``).
    Another user's job is 404; a succeeded or failed job is 409."""
    job = await backends.rl_trainer.CancelTrainingJob(
        pb.CancelTrainingJobRequest(job_id=job_id), timeout=backends.timeout_seconds,
        metadata=await backends.acting_for(principal, RL_TRAINER, "trainer:jobs.write"),
    )
    if job.status != pb.JOB_STATUS_CANCELLED:
        response.status_code = status.HTTP_202_ACCEPTED
    return encoding.training_job(job)


@router.post("/{job_id}/paper-trading", response_model=PaperTradingResult)
async def run_paper_trading(
    job_id: str, body: PaperTradingRun, principal: TrainingWriter, backends: Backends
) -> dict[str, Any]:
    """Trade the job's test window with its trained agent through the paper broker
    (synchronous: one order decision per bar, so it may take minutes)."""
    result = await backends.rl_trainer.RunPaperTrading(
        pb.RunPaperTradingRequest(job_id=job_id, account_id=body.account_id),
        timeout=backends.paper_trading_timeout_seconds,
        # rl-trainer re-exchanges this token for broker-gateway (trainer:jobs.write allows it)
        metadata=await backends.acting_for(principal, RL_TRAINER, "trainer:jobs.write"),
    )
    return encoding.paper_trading(result)
