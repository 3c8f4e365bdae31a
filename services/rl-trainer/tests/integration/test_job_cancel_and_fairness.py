"""rl-trainer over gRPC with a real Postgres and Kafka, training for real: quota refusals,
CancelTrainingJob (queued: at once; running: within seconds, through this process or
through another replica's row; another user's: NOT_FOUND; finished: FAILED_PRECONDITION;
``training.completed.v1`` with CANCELLED), and the fair queue (another user's job does not
wait behind one user's backlog)."""

from __future__ import annotations

import asyncio
import itertools
import time

import grpc
import pytest
from aiokafka import AIOKafkaConsumer
from sqlalchemy import select

from bsopt.rl_trainer.v1 import events_pb2
from bsopt.rl_trainer.v1 import rl_trainer_pb2 as pb
from bsopt.rl_trainer.v1 import rl_trainer_pb2_grpc as pb_grpc
from bsopt_common import topics
from bsopt_common.db import create_db_engine, make_session_factory, session_scope
from bsopt_common.events import Outbox
from bsopt_common.marketdata import bundled_provider
from bsopt_common.settings import RL_TRAINER_AUDIENCE
from bsopt_common.testing.delegation import delegated_token
from bsopt_common.testing.identity import service_identity
from bsopt_common.testing.services import ServiceThread, free_port
from bsopt_trainer import models
from bsopt_trainer.bootstrap import serve
from bsopt_trainer.config import TrainerSettings
from bsopt_trainer.domain.job import TEST_TOTAL_TIMESTEPS
from bsopt_trainer.job_store import JobStore

SCOPES = "trainer:jobs.read trainer:jobs.write"
#: Per model; the Transformer alone would train well over a minute on this host.
LONG = 131_072
MAX_TOTAL_TIMESTEPS = 200_000
CANCEL_WITHIN_SECONDS = 10


@pytest.fixture(scope="module")
def trainer(postgres_url, kafka_bootstrap, test_issuer, tmp_path_factory):
    port = free_port()
    settings = TrainerSettings(
        database_url=postgres_url, kafka_bootstrap_servers=kafka_bootstrap, port=port,
        **service_identity(test_issuer, "rl-trainer"),
        broker_gateway_target=f"127.0.0.1:{free_port()}", artifacts_dir=tmp_path_factory.mktemp("artifacts"),
        max_queued_jobs_per_user=3, max_running_jobs_per_user=1, max_total_timesteps=MAX_TOTAL_TIMESTEPS,
        cancel_poll_seconds=0.5)
    with ServiceThread(lambda stop: serve(settings, stop), port=port):
        yield f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def other_replica(trainer, postgres_url):
    """The job store as another rl-trainer replica sees it (same database, no worker here)."""
    engine = create_db_engine(postgres_url)
    yield JobStore(make_session_factory(engine), Outbox(models.SCHEMA), bundled_provider())
    engine.dispose()


@pytest.fixture(scope="module")
def tok(test_issuer):
    """``tok(user)``: resource-api's token acting for ``user`` (RFC 8693 exchange)."""
    return lambda user: delegated_token(test_issuer, user=user, aud=RL_TRAINER_AUDIENCE, scope=SCOPES)


def call(target: str, method: str, request, token: str):
    with grpc.insecure_channel(target) as ch:
        return getattr(pb_grpc.RlTrainerServiceStub(ch), method)(
            request, metadata=(("authorization", f"Bearer {token}"),), timeout=30)


def spec(total_timesteps: int = TEST_TOTAL_TIMESTEPS, seed: int = 0) -> pb.TrainingJobSpec:
    return pb.TrainingJobSpec(symbol="GOOGL", train_start="2009-05-22", train_end="2016-11-30",
                              test_start="2017-01-03", test_end="2017-03-31", total_timesteps=total_timesteps,
                              seed=seed)


def submit(target, tok, user: str, total_timesteps: int = TEST_TOTAL_TIMESTEPS, seed: int = 0) -> pb.TrainingJob:
    return call(target, "SubmitTrainingJob",
                pb.SubmitTrainingJobRequest(spec=spec(total_timesteps, seed)), tok(user))


def get(target, tok, job: pb.TrainingJob, user: str | None = None) -> pb.TrainingJob:
    return call(target, "GetTrainingJob", pb.GetTrainingJobRequest(job_id=job.job_id), tok(user or job.user_id))


def cancel(target, tok, job: pb.TrainingJob, user: str | None = None) -> pb.TrainingJob:
    return call(target, "CancelTrainingJob",
                pb.CancelTrainingJobRequest(job_id=job.job_id), tok(user or job.user_id))


def wait_until(target, tok, job, done, timeout: float, what: str) -> pb.TrainingJob:
    deadline = time.monotonic() + timeout
    while True:
        job = get(target, tok, job)
        if done(job):
            return job
        assert time.monotonic() < deadline, f"{what}: job is {pb.JobStatus.Name(job.status)}"
        time.sleep(0.2)


def training(target, tok, user: str) -> pb.TrainingJob:
    """A long job of ``user`` that has started training (made progress)."""
    job = submit(target, tok, user, LONG)
    return wait_until(target, tok, job, lambda j: j.status == pb.JOB_STATUS_RUNNING and j.progress > 0, 120,
                      "the long job did not start training")


def completed_events(kafka_bootstrap: str, job_ids: set[str],
                     timeout: float = 20) -> dict[str, events_pb2.TrainingCompleted]:
    async def read() -> dict[str, events_pb2.TrainingCompleted]:
        consumer = AIOKafkaConsumer(topics.TRAINING_COMPLETED.name, bootstrap_servers=kafka_bootstrap,
                                    auto_offset_reset="earliest")  # no group: every partition
        await consumer.start()
        seen: dict[str, events_pb2.TrainingCompleted] = {}
        try:
            deadline = asyncio.get_running_loop().time() + timeout
            while set(seen) < job_ids and asyncio.get_running_loop().time() < deadline:
                for msgs in (await consumer.getmany(timeout_ms=500)).values():
                    for m in msgs:
                        ev = events_pb2.TrainingCompleted.FromString(m.value)
                        if ev.job_id in job_ids:
                            seen[ev.job_id] = ev
        finally:
            await consumer.stop()
        return seen

    return asyncio.run(read())


def test_budget_over_the_limit_is_invalid_argument(trainer, tok):
    with pytest.raises(grpc.RpcError) as err:
        submit(trainer, tok, "greedy", MAX_TOTAL_TIMESTEPS + 1)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert str(MAX_TOTAL_TIMESTEPS) in err.value.details()


def test_queued_quota_and_cancelling_a_queued_job(trainer, tok, kafka_bootstrap):
    hog = training(trainer, tok, "quota-hog")  # keeps the one worker busy: the next jobs stay queued
    try:
        queued = [submit(trainer, tok, "queuer", seed=i) for i in range(3)]
        assert {j.status for j in queued} == {pb.JOB_STATUS_QUEUED}
        with pytest.raises(grpc.RpcError) as err:
            submit(trainer, tok, "queuer")
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "3 queued" in err.value.details()

        cancelled = cancel(trainer, tok, queued[0])
        assert cancelled.status == pb.JOB_STATUS_CANCELLED  # at once
        assert cancelled.HasField("finished_at") and not cancelled.HasField("started_at")
        assert cancel(trainer, tok, queued[0]).status == pb.JOB_STATUS_CANCELLED  # again: unchanged
        queued.append(submit(trainer, tok, "queuer"))  # the quota has room again
        for job in queued[1:]:
            assert cancel(trainer, tok, job).status == pb.JOB_STATUS_CANCELLED
    finally:
        cancel(trainer, tok, hog)
    wait_until(trainer, tok, hog, lambda j: j.status == pb.JOB_STATUS_CANCELLED, CANCEL_WITHIN_SECONDS,
               "the hog was not cancelled")
    events = completed_events(kafka_bootstrap, {queued[0].job_id})
    assert events[queued[0].job_id].status == pb.JOB_STATUS_CANCELLED
    time.sleep(1)  # the worker drops the cancelled copies without starting them
    assert all(not get(trainer, tok, j).HasField("started_at") for j in queued)


def test_cancel_of_another_users_job_is_not_found(trainer, tok):
    job = submit(trainer, tok, "owner")
    with pytest.raises(grpc.RpcError) as err:
        cancel(trainer, tok, job, user="intruder")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert get(trainer, tok, job).status != pb.JOB_STATUS_CANCELLED


def test_cancel_stops_a_running_job_within_seconds(trainer, tok, kafka_bootstrap):
    job = training(trainer, tok, "runner")
    started = time.monotonic()
    answer = cancel(trainer, tok, job)
    assert answer.status in (pb.JOB_STATUS_RUNNING, pb.JOB_STATUS_CANCELLED)
    assert answer.cancel_requested or answer.status == pb.JOB_STATUS_CANCELLED
    job = wait_until(trainer, tok, job, lambda j: j.status == pb.JOB_STATUS_CANCELLED, CANCEL_WITHIN_SECONDS,
                     "the running job did not stop")
    assert time.monotonic() - started < CANCEL_WITHIN_SECONDS
    assert job.progress < 0.5 and not job.HasField("results") and job.HasField("finished_at")
    event = completed_events(kafka_bootstrap, {job.job_id})[job.job_id]
    assert event.status == pb.JOB_STATUS_CANCELLED and event.user_id == "runner"


def test_cancel_through_another_replica_stops_the_job_within_seconds(trainer, tok, other_replica):
    job = training(trainer, tok, "runner-2")
    started = time.monotonic()
    assert other_replica.cancel(job.job_id, "runner-2").cancel_requested  # only the row: no in-process signal
    wait_until(trainer, tok, job, lambda j: j.status == pb.JOB_STATUS_CANCELLED, CANCEL_WITHIN_SECONDS,
               "the job cancelled on another replica did not stop")
    assert time.monotonic() - started < CANCEL_WITHIN_SECONDS


def test_another_users_job_does_not_wait_behind_one_users_backlog(trainer, tok, other_replica):
    hog = training(trainer, tok, "fair-hog")
    a = [submit(trainer, tok, "fair-a", seed=i) for i in range(3)]
    b = submit(trainer, tok, "fair-b")
    jobs = models.training_jobs
    ids = [j.job_id for j in (*a, b)]
    deadline = time.monotonic() + 30
    while True:  # all four in the worker's queue (claimed from Kafka) before it is free
        with session_scope(other_replica.session_factory) as s:
            claimed = s.execute(select(jobs.c.job_id).where(jobs.c.job_id.in_(ids), jobs.c.claimed_at.is_not(None)))
            if len(claimed.all()) == 4:
                break
        assert time.monotonic() < deadline, "the jobs were not claimed"
        time.sleep(0.2)
    cancel(trainer, tok, hog)

    finished = [wait_until(trainer, tok, j, lambda j: j.status in (pb.JOB_STATUS_SUCCEEDED, pb.JOB_STATUS_FAILED),
                           240, "the tiny job did not finish") for j in (*a, b)]
    assert {j.status for j in finished} == {pb.JOB_STATUS_SUCCEEDED}, [j.error for j in finished]
    order = sorted(finished, key=lambda j: j.started_at.ToDatetime())
    assert b.job_id in {j.job_id for j in order[:2]}, [j.user_id for j in order]  # before A's second and third
    for earlier, later in itertools.pairwise(order):  # one job at a time
        assert earlier.finished_at.ToDatetime() <= later.started_at.ToDatetime()

    with pytest.raises(grpc.RpcError) as err:  # a finished job cannot be cancelled
        cancel(trainer, tok, b)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
