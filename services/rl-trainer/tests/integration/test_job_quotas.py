"""Per-user quotas and the fair queue against a real Postgres, at the job store and the
worker (no gRPC, no Kafka: the service-level flows are in test_job_cancel_and_fairness):
concurrent submits of one user never get past the queued quota, concurrent starts never
get past the running quota, a cancelled queued job never starts, and the worker serves
the least recently served user first."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select, update

from bsopt_common.db import create_db_engine, make_session_factory, session_scope
from bsopt_common.errors import ResourceExhausted
from bsopt_common.events import Outbox
from bsopt_common.marketdata import bundled_provider
from bsopt_common.migrations import upgrade
from bsopt_common.vocabulary import JobStatus
from bsopt_trainer import models
from bsopt_trainer.domain.job import TEST_TOTAL_TIMESTEPS, default_spec
from bsopt_trainer.job_store import JobStore, JobTooLarge, QuotaExceeded, Quotas, Start, TrainingWorker

QUOTAS = Quotas(max_running_jobs_per_user=1, max_queued_jobs_per_user=3, max_total_timesteps=100_000)


@pytest.fixture(scope="module")
def store(postgres_url):
    engine = create_db_engine(postgres_url)
    upgrade("bsopt_trainer", engine, models.SCHEMA)
    yield JobStore(make_session_factory(engine), Outbox(models.SCHEMA), bundled_provider(), QUOTAS)
    engine.dispose()


def spec(**kw):
    return default_spec(**{"total_timesteps": TEST_TOTAL_TIMESTEPS, **kw})


def count(store: JobStore, user_id: str, status: JobStatus) -> int:
    jobs = models.training_jobs
    with session_scope(store.session_factory) as s:
        return int(s.execute(select(func.count()).select_from(jobs).where(
            jobs.c.user_id == user_id, jobs.c.status == status.value)).scalar_one())


def test_budget_over_the_per_job_limit_is_refused(store):
    with pytest.raises(JobTooLarge, match="100000"):
        store.submit("big", spec(total_timesteps=100_001))
    store.submit("big", spec(total_timesteps=100_000))  # the limit itself is allowed


def test_queued_quota_refuses_the_next_submit_until_one_is_cancelled(store):
    jobs = [store.submit("queuer", spec(seed=i)) for i in range(3)]
    with pytest.raises(QuotaExceeded, match="3 queued") as err:
        store.submit("queuer", spec())
    assert isinstance(err.value, ResourceExhausted)
    store.submit("someone-else", spec())  # the quota is per user
    assert store.cancel(jobs[0].job_id, "queuer").status is JobStatus.CANCELLED
    store.submit("queuer", spec())
    assert count(store, "queuer", JobStatus.QUEUED) == 3


def test_concurrent_submits_cannot_exceed_the_queued_quota(store):
    barrier = threading.Barrier(8)

    def submit(i: int) -> str:
        barrier.wait()
        try:
            store.submit("racer", spec(seed=i))
            return "ok"
        except QuotaExceeded:
            return "refused"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(submit, range(8)))
    assert sorted(outcomes) == ["ok"] * 3 + ["refused"] * 5
    assert count(store, "racer", JobStatus.QUEUED) == 3


def test_running_quota_holds_under_concurrent_starts(store):
    jobs = [store.submit("runner", spec(seed=i)) for i in range(3)]
    barrier = threading.Barrier(3)

    def start(job_id: str) -> Start:
        barrier.wait()
        return store.start(job_id)

    with ThreadPoolExecutor(3) as pool:
        outcomes = list(pool.map(start, [j.job_id for j in jobs]))
    assert sorted(o.value for o in outcomes) == ["started", "wait", "wait"]
    assert count(store, "runner", JobStatus.RUNNING) == 1
    other = store.submit("runner-2", spec())
    assert store.start(other.job_id) is Start.STARTED  # another user is not held back

    running = next(j for j, o in zip(jobs, outcomes, strict=True) if o is Start.STARTED)
    store.finish(store.get(running.job_id), results=None, error="test")
    waiting = [j for j, o in zip(jobs, outcomes, strict=True) if o is Start.WAIT]
    assert store.start(waiting[0].job_id) is Start.STARTED
    assert store.start(waiting[1].job_id) is Start.WAIT


def test_a_cancelled_or_started_job_does_not_start_again(store):
    job = store.submit("once", spec())
    store.cancel(job.job_id, "once")
    assert store.start(job.job_id) is Start.GONE
    job = store.submit("once", spec())
    assert store.start(job.job_id) is Start.STARTED
    assert store.start(job.job_id) is Start.GONE


class RecordingWorker(TrainingWorker):
    """The real worker (fair queue, starts through the store) with training replaced by
    recording the order jobs start in."""

    def __init__(self, store: JobStore, tmp_path) -> None:
        super().__init__(store, tmp_path, 1, retry_seconds=0.1)
        self.started: list[str] = []
        self.done = threading.Event()
        self.expected = 0

    def run(self, job_id: str) -> None:
        self.started.append(job_id)
        self.store.finish(self.store.get(job_id), results=None, error="not trained in this test")
        if len(self.started) == self.expected:
            self.done.set()


def test_worker_serves_the_least_recently_served_user_first(store, tmp_path):
    a = [store.submit("fair-a", spec(seed=i)) for i in range(3)]
    b = store.submit("fair-b", spec())
    worker = RecordingWorker(store, tmp_path)
    worker.expected = 4
    for job in (*a, b):  # A's three arrive first, then B's one
        worker.enqueue(job.job_id, job.user_id)
    worker.start()
    try:
        assert worker.done.wait(60)
    finally:
        worker.stop()
    assert worker.started == [a[0].job_id, b.job_id, a[1].job_id, a[2].job_id]


def test_worker_passes_over_a_user_at_their_running_quota(store, tmp_path):
    busy = store.submit("busy", spec())
    assert store.start(busy.job_id) is Start.STARTED  # running on "another replica"
    held = store.submit("busy", spec())
    free = store.submit("free", spec())
    worker = RecordingWorker(store, tmp_path)
    worker.expected = 2
    worker.enqueue(held.job_id, "busy")
    worker.enqueue(free.job_id, "free")
    worker.start()
    try:
        for _ in range(200):
            if worker.started:
                break
            time.sleep(0.05)
        assert worker.started == [free.job_id]
        with session_scope(store.session_factory) as s:  # the other replica's job ends
            s.execute(update(models.training_jobs).where(models.training_jobs.c.job_id == busy.job_id)
                      .values(status=JobStatus.FAILED.value))
        assert worker.done.wait(30)
    finally:
        worker.stop()
    assert worker.started == [free.job_id, held.job_id]
