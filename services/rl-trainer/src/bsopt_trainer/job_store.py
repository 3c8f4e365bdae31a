"""Training-job lifecycle in schema ``trainer``: submit (quota check, job row and
``training.requested.v1`` in one transaction), claim (a replica takes the queued job into
its worker's queue, exactly once), start (queued -> running, exactly once, within the
user's running quota), progress, cancel, finish (results + ``training.completed.v1``), all
through the transactional outbox; and the training worker that runs claimed jobs, fairly
across users.

Lifecycle: ``queued`` -> ``running`` -> ``succeeded`` | ``failed``; ``queued`` ->
``cancelled`` at once on the owner's request; ``running`` -> ``cancelled`` at the next PPO
iteration after the owner's request (``cancel_requested_at``). A job found ``running`` when
the service starts was interrupted by a crash or restart; it is marked ``failed`` with that
reason rather than left hanging.

Quotas hold under concurrent submits and starts: each check-and-write runs in one
transaction under a per-user advisory lock (``pg_advisory_xact_lock``), so two submits of
one user are serialised and the second counts the first.
"""

from __future__ import annotations

import enum
import itertools
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from sqlalchemy import func, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.orm import Session, sessionmaker

from bsopt.rl_trainer.v1 import events_pb2
from bsopt.rl_trainer.v1 import rl_trainer_pb2 as pb
from bsopt_common import codec, topics
from bsopt_common.db import session_scope
from bsopt_common.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from bsopt_common.events import Outbox
from bsopt_common.marketdata import MarketDataProvider
from bsopt_common.vocabulary import JobStatus
from bsopt_trainer import models
from bsopt_trainer.domain.job import TrainingSpec, run_training_job
from bsopt_trainer.records import TrainingJob

log = logging.getLogger(__name__)


class JobNotFound(NotFound):
    """No such training job for this user."""


class QuotaExceeded(ResourceExhausted):
    """The user has as many queued training jobs as their quota allows."""


class JobTooLarge(InvalidArgument):
    """The job's budget is over this trainer's per-job limit."""


class JobNotCancellable(FailedPrecondition):
    """The job has finished already (succeeded or failed)."""


class JobCancelled(Exception):
    """Raised from the progress callback to abort a job its owner cancelled."""


@dataclass(frozen=True, slots=True)
class Quotas:
    """Per-user limits (``TrainerSettings.max_*``)."""

    max_running_jobs_per_user: int = 1
    max_queued_jobs_per_user: int = 3
    max_total_timesteps: int = 1_048_576


class Start(enum.Enum):
    """What :meth:`JobStore.start` did."""

    STARTED = "started"
    WAIT = "wait"  # the user is at their running quota (a job of theirs runs on some replica)
    GONE = "gone"  # no longer queued: cancelled, or started by another replica


#: First key of the per-user advisory locks (``pg_advisory_xact_lock(int, int)``): "trnr".
_USER_LOCK_SPACE = 0x74726E72


def _lock_user(session: Session, user_id: str) -> None:
    """Serialise this transaction with every other quota check-and-write of ``user_id``
    (released at commit or rollback)."""
    session.execute(select(func.pg_advisory_xact_lock(_USER_LOCK_SPACE, func.hashtext(user_id))))


def _count(session: Session, user_id: str, status: JobStatus) -> int:
    jobs = models.training_jobs
    n = session.execute(select(func.count()).select_from(jobs).where(
        jobs.c.user_id == user_id, jobs.c.status == status.value)).scalar_one()
    return int(n)


# --- the one spec codec: proto <-> TrainingSpec <-> JSON --------------------------------------


def spec_from_pb(spec: pb.TrainingJobSpec) -> TrainingSpec:
    """Raises InvalidArgument naming the field when a date is not ISO ``YYYY-MM-DD``."""
    return codec.from_message(spec, TrainingSpec, symbol=spec.symbol.upper())


def spec_pb(spec: TrainingSpec) -> pb.TrainingJobSpec:
    return codec.to_message(spec, pb.TrainingJobSpec)


def results_pb(results: dict[str, Any] | None) -> pb.TrainingResults | None:
    """The stored results (``JobResult.to_dict()`` + ``checkpoint_uri``) as the contract's
    message; keys the contract does not carry stay in the store only."""
    if not results:
        return None
    return json_format.ParseDict(results, pb.TrainingResults(), ignore_unknown_fields=True)


def job_pb(job: TrainingJob) -> pb.TrainingJob:
    return codec.to_message(job, pb.TrainingJob, spec=spec_pb(job.spec), results=results_pb(job.results),
                            progress=job.progress)


def _job(row: RowMapping) -> TrainingJob:
    return TrainingJob(
        job_id=row["job_id"], user_id=row["user_id"], spec=codec.record_from_dict(TrainingSpec, row["spec"]),
        status=JobStatus(row["status"]), timesteps_done=int(row["timesteps_done"]),
        total_timesteps=int(row["total_timesteps"]), results=row["results"], error=row["error"],
        created_at=row["created_at"], started_at=row["started_at"], finished_at=row["finished_at"],
        cancel_requested=row["cancel_requested_at"] is not None,
    )


class JobStore:
    def __init__(self, session_factory: sessionmaker[Session], outbox: Outbox, market_data: MarketDataProvider,
                 quotas: Quotas | None = None):
        self.session_factory = session_factory
        self.outbox = outbox
        self.market_data = market_data
        self.quotas = quotas or Quotas()

    def submit(self, user_id: str, spec: TrainingSpec) -> TrainingJob:
        """Validate ``spec`` against the symbol's bars and the per-job budget, then, under
        the user's lock, check their queued quota and record the job and its
        ``training.requested.v1`` event in one transaction. Raises InvalidArgument
        (JobTooLarge) or ResourceExhausted (QuotaExceeded)."""
        if not user_id:
            raise InvalidArgument("user_id is required")
        if spec.total_timesteps > self.quotas.max_total_timesteps:
            raise JobTooLarge(f"total_timesteps {spec.total_timesteps} is over this trainer's limit of "
                              f"{self.quotas.max_total_timesteps} per model")
        try:
            bars = self.market_data.fetch_history(spec.symbol)
        except KeyError as exc:
            raise InvalidArgument(f"no bars for symbol {spec.symbol!r}: {exc}") from None
        spec.validate(bars)
        job_id = str(uuid.uuid4())
        with session_scope(self.session_factory) as s:
            _lock_user(s, user_id)
            queued = _count(s, user_id, JobStatus.QUEUED)
            if queued >= self.quotas.max_queued_jobs_per_user:
                raise QuotaExceeded(f"you have {queued} queued training jobs, the most allowed; wait for one to "
                                    "start or cancel one")
            s.execute(models.training_jobs.insert().values(
                job_id=job_id, user_id=user_id, spec=spec.to_dict(), status=JobStatus.QUEUED.value,
                total_timesteps=2 * spec.total_timesteps))
            self.outbox.add(s, topics.TRAINING_REQUESTED, events_pb2.TrainingRequested(
                job_id=job_id, user_id=user_id, spec=spec_pb(spec)))
        return self.get(job_id, user_id)

    def get(self, job_id: str, user_id: str | None = None) -> TrainingJob:
        """Raises JobNotFound (also for another user's job)."""
        with session_scope(self.session_factory) as s:
            q = select(models.training_jobs).where(models.training_jobs.c.job_id == job_id)
            if user_id is not None:
                q = q.where(models.training_jobs.c.user_id == user_id)
            row = s.execute(q).mappings().first()
        if row is None:
            raise JobNotFound(f"training job {job_id} not found")
        return _job(row)

    def claim(self, session: Session, job_id: str) -> bool:
        """Take the queued job for this replica's worker inside ``session`` (it stays
        ``queued`` until :meth:`start`); False if already claimed, cancelled or finished."""
        jobs = models.training_jobs
        res = session.execute(update(jobs).where(
            jobs.c.job_id == job_id, jobs.c.status == JobStatus.QUEUED.value, jobs.c.claimed_at.is_(None),
        ).values(claimed_at=datetime.now(UTC)))
        return res.rowcount == 1  # type: ignore[attr-defined]

    def claimed_queued(self) -> list[tuple[str, str]]:
        """``(job_id, user_id)`` of claimed jobs still queued, oldest first: at start-up a
        replica takes them again (a job claimed by a replica that died would wait forever;
        :meth:`start` runs each once whoever holds it)."""
        jobs = models.training_jobs
        with session_scope(self.session_factory) as s:
            rows = s.execute(select(jobs.c.job_id, jobs.c.user_id).where(
                jobs.c.status == JobStatus.QUEUED.value, jobs.c.claimed_at.is_not(None),
            ).order_by(jobs.c.created_at)).all()
        return [(r.job_id, r.user_id) for r in rows]

    def start(self, job_id: str) -> Start:
        """queued -> running, exactly once over all replicas, unless the user already has
        ``max_running_jobs_per_user`` running (checked under the user's lock)."""
        jobs = models.training_jobs
        with session_scope(self.session_factory) as s:
            row = s.execute(select(jobs.c.user_id, jobs.c.status).where(jobs.c.job_id == job_id)).first()
            if row is None or row.status != JobStatus.QUEUED.value:
                return Start.GONE
            _lock_user(s, row.user_id)
            if _count(s, row.user_id, JobStatus.RUNNING) >= self.quotas.max_running_jobs_per_user:
                return Start.WAIT
            res = s.execute(update(jobs).where(jobs.c.job_id == job_id, jobs.c.status == JobStatus.QUEUED.value)
                            .values(status=JobStatus.RUNNING.value, started_at=datetime.now(UTC)))
            return Start.STARTED if res.rowcount == 1 else Start.GONE  # type: ignore[attr-defined]

    def cancel(self, job_id: str, user_id: str) -> TrainingJob:
        """The owner cancels: a queued job is ``cancelled`` at once (with
        ``training.completed.v1``); a running one gets ``cancel_requested_at`` and its
        worker stops it. Cancelling a cancelled job changes nothing. Raises JobNotFound
        (also for another user's job) or JobNotCancellable (succeeded or failed)."""
        jobs = models.training_jobs
        with session_scope(self.session_factory) as s:
            row = s.execute(select(jobs.c.status, jobs.c.cancel_requested_at).where(
                jobs.c.job_id == job_id, jobs.c.user_id == user_id).with_for_update()).first()
            if row is None:
                raise JobNotFound(f"training job {job_id} not found")
            if row.status == JobStatus.QUEUED.value:
                s.execute(update(jobs).where(jobs.c.job_id == job_id).values(
                    status=JobStatus.CANCELLED.value, finished_at=datetime.now(UTC), error="cancelled by its owner"))
                self.outbox.add(s, topics.TRAINING_COMPLETED, events_pb2.TrainingCompleted(
                    job_id=job_id, user_id=user_id, status=codec.JOB_STATUS.to_pb(JobStatus.CANCELLED),
                    error="cancelled by its owner"))
            elif row.status == JobStatus.RUNNING.value:
                if row.cancel_requested_at is None:
                    s.execute(update(jobs).where(jobs.c.job_id == job_id).values(
                        cancel_requested_at=datetime.now(UTC)))
            elif row.status != JobStatus.CANCELLED.value:
                raise JobNotCancellable(f"training job {job_id} is {row.status}; only a queued or running job "
                                        "can be cancelled")
        return self.get(job_id, user_id)

    def cancel_requested(self, job_id: str) -> bool:
        """Whether the running job should stop: its owner asked, or it is no longer ``running``."""
        jobs = models.training_jobs
        with session_scope(self.session_factory) as s:
            row = s.execute(select(jobs.c.status, jobs.c.cancel_requested_at)
                            .where(jobs.c.job_id == job_id)).first()
        return row is None or row.status != JobStatus.RUNNING.value or row.cancel_requested_at is not None

    def progress(self, job: TrainingJob, done: int, total: int) -> None:
        with session_scope(self.session_factory) as s:
            s.execute(update(models.training_jobs).where(models.training_jobs.c.job_id == job.job_id)
                      .values(timesteps_done=done, total_timesteps=total))
            self.outbox.add(s, topics.TRAINING_PROGRESS, events_pb2.TrainingProgress(
                job_id=job.job_id, user_id=job.user_id, status=codec.JOB_STATUS.to_pb(JobStatus.RUNNING),
                timesteps_done=done, total_timesteps=total))

    def finish(self, job: TrainingJob, *, results: dict[str, Any] | None, error: str = "",
               cancelled: bool = False) -> None:
        """running -> succeeded (``results``), failed or cancelled, with
        ``training.completed.v1``; nothing if the job is no longer running."""
        status = (JobStatus.CANCELLED if cancelled else
                  JobStatus.SUCCEEDED if results is not None else JobStatus.FAILED)
        with session_scope(self.session_factory) as s:
            values: dict[str, Any] = dict(status=status.value, results=results, error=error,
                                          finished_at=datetime.now(UTC))
            if results is not None:
                values["timesteps_done"] = models.training_jobs.c.total_timesteps
            res = s.execute(update(models.training_jobs).where(
                models.training_jobs.c.job_id == job.job_id,
                models.training_jobs.c.status == JobStatus.RUNNING.value).values(**values))
            if res.rowcount != 1:  # type: ignore[attr-defined]
                log.warning("training job %s was no longer running; not marked %s", job.job_id, status.value)
                return
            self.outbox.add(s, topics.TRAINING_COMPLETED, events_pb2.TrainingCompleted(
                job_id=job.job_id, user_id=job.user_id, status=codec.JOB_STATUS.to_pb(status),
                results=results_pb(results), error=error))

    def fail_interrupted(self) -> int:
        """Mark jobs left ``running`` by a previous process as failed; return how many."""
        with session_scope(self.session_factory) as s:
            rows = s.execute(select(models.training_jobs).where(
                models.training_jobs.c.status == JobStatus.RUNNING.value)).mappings().all()
        for row in rows:
            self.finish(_job(row), results=None, error="interrupted: the trainer restarted while the job was running")
        return len(rows)


class TrainingWorker:
    """Runs claimed jobs one at a time in a background thread (training is CPU-bound).

    Fair queue: one FIFO per user; the next job is the head of the least recently served
    user's queue (a user never served first, ties by arrival), so one user's backlog
    never holds back another user's job. A head that cannot start because its user is at
    their running quota (on another replica) is passed over and retried.

    Cancel: :meth:`cancel` (the servicer, same process) stops the current job at its next
    PPO iteration; a cancel made through another replica is seen by re-reading the job's
    row at most every ``cancel_poll_seconds``.
    """

    def __init__(self, store: JobStore, artifacts_dir: Path, torch_threads: int,
                 on_event: Callable[[], None] | None = None, *, cancel_poll_seconds: float = 1.0,
                 retry_seconds: float = 1.0):
        self.store = store
        self.artifacts_dir = Path(artifacts_dir)
        self.torch_threads = torch_threads
        self.on_event = on_event  # called (from the worker thread) after each outbox write
        self.cancel_poll_seconds = cancel_poll_seconds
        self.retry_seconds = retry_seconds
        self._queues: dict[str, deque[str]] = {}  # user -> their claimed job ids, FIFO
        self._arrival: dict[str, int] = {}  # user -> order they first queued in
        self._served: dict[str, int] = {}  # user -> tick of their last started job
        self._ticks = itertools.count()
        self._current: str | None = None
        self._cancel_current = threading.Event()
        self._cv = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="training-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def enqueue(self, job_id: str, user_id: str) -> None:
        with self._cv:
            if job_id in self._queues.get(user_id, ()) or job_id == self._current:
                return
            if user_id not in self._queues:
                self._queues[user_id] = deque()
                self._arrival.setdefault(user_id, next(self._ticks))
            self._queues[user_id].append(job_id)
            self._cv.notify()

    def cancel(self, job_id: str) -> None:
        """Stop ``job_id`` at its next iteration if this worker is running it (a queued
        copy is dropped when :meth:`JobStore.start` finds it cancelled)."""
        with self._cv:
            if self._current == job_id:
                self._cancel_current.set()

    def stop(self, timeout_seconds: float = 60.0) -> None:
        """Stop taking jobs, interrupt the running one at its next PPO iteration, and wait
        up to ``timeout_seconds`` for the thread to end (a process must not exit while
        torch still runs in it: the C++ runtime aborts instead of exiting cleanly)."""
        with self._cv:
            self._stopping = True
            self._cv.notify()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout_seconds)
            if self._thread.is_alive():
                log.warning("training worker still running after %.0f s", timeout_seconds)

    def _candidates(self) -> list[tuple[str, str]]:
        """``(user, head job)`` in serving order: least recently served user first."""
        users = sorted(self._queues, key=lambda u: (self._served.get(u, -1), self._arrival[u]))
        return [(u, self._queues[u][0]) for u in users]

    def _drop(self, user_id: str, job_id: str) -> None:
        q = self._queues.get(user_id)
        if q is not None and job_id in q:
            q.remove(job_id)
            if not q:
                del self._queues[user_id]

    def _next(self) -> str | None:
        """Start the next job (None when stopping); waits while nothing can start."""
        while True:
            with self._cv:
                while not self._queues and not self._stopping:
                    self._cv.wait()
                if self._stopping:
                    return None
                candidates = self._candidates()
            for user_id, job_id in candidates:
                try:
                    outcome = self.store.start(job_id)
                except Exception:
                    log.exception("could not start training job %s", job_id)
                    outcome = Start.WAIT
                if outcome is Start.WAIT:
                    continue
                with self._cv:
                    self._drop(user_id, job_id)
                    if outcome is Start.STARTED:
                        self._served[user_id] = next(self._ticks)
                        self._current = job_id
                        self._cancel_current.clear()
                        return job_id
            with self._cv:  # every head waits for its user's running quota: retry later
                if not self._stopping:
                    self._cv.wait(self.retry_seconds)

    def _loop(self) -> None:
        import torch

        torch.set_num_threads(self.torch_threads)
        while True:
            job_id = self._next()
            if job_id is None:
                return
            try:
                self.run(job_id)
            except Exception:
                log.exception("training job %s crashed", job_id)
            finally:
                with self._cv:
                    self._current = None

    def run(self, job_id: str) -> None:
        """Train the job :meth:`JobStore.start` has just marked running."""
        job = self.store.get(job_id)
        spec = job.spec
        last = {"t": 0.0, "frac": -1.0, "polled": time.monotonic()}

        def progress(done: int, total: int) -> None:
            if self._stopping:
                raise InterruptedError("trainer is shutting down")
            now = time.monotonic()
            if self._cancel_current.is_set():
                raise JobCancelled(job_id)
            if now - last["polled"] >= self.cancel_poll_seconds:
                last["polled"] = now
                if self.store.cancel_requested(job_id):
                    raise JobCancelled(job_id)
            frac = done / total if total else 1.0
            if frac - last["frac"] >= 0.05 or now - last["t"] > 5 or done == total:
                last.update(t=now, frac=frac)
                self.store.progress(job, done, total)
                self._notify()

        log.info("training job %s: %s", job_id, spec.to_dict())
        try:
            bars = self.store.market_data.fetch_history(spec.symbol)
            result = run_training_job(spec, bars, self.artifacts_dir / "jobs" / job_id, progress)
            results = {**result.to_dict(), "checkpoint_uri": Path(result.checkpoint_path).resolve().as_uri()}
            self.store.finish(job, results=results)
            log.info("training job %s succeeded: agent %s, mlp %s, buy-and-hold %s", job_id,
                     results["agent"], results["mlp_baseline"], results["buy_and_hold"])
        except JobCancelled:
            log.info("training job %s cancelled by its owner", job_id)
            self.store.finish(job, results=None, error="cancelled by its owner", cancelled=True)
        except Exception as exc:
            log.exception("training job %s failed", job_id)
            self.store.finish(job, results=None, error=f"{type(exc).__name__}: {exc}")
        self._notify()

    def _notify(self) -> None:
        if self.on_event is not None:
            self.on_event()
