"""Training-job lifecycle in schema ``trainer``: submit (job row + ``training.requested.v1``
in one transaction), claim (queued -> running, exactly once), progress, finish
(results + ``training.completed.v1``), all through the transactional outbox; and the
training worker that runs claimed jobs.

Lifecycle: ``queued`` -> ``running`` -> ``succeeded`` | ``failed``. A job found
``running`` when the service starts was interrupted by a crash or restart; it is marked
``failed`` with that reason rather than left hanging.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from sqlalchemy import select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.orm import Session, sessionmaker

from bsopt.rl_trainer.v1 import events_pb2
from bsopt.rl_trainer.v1 import rl_trainer_pb2 as pb
from bsopt_common import codec, topics
from bsopt_common.db import session_scope
from bsopt_common.errors import InvalidArgument, NotFound
from bsopt_common.events import Outbox
from bsopt_common.marketdata import MarketDataProvider
from bsopt_common.vocabulary import JobStatus
from bsopt_trainer import models
from bsopt_trainer.domain.job import TrainingSpec, run_training_job
from bsopt_trainer.records import TrainingJob

log = logging.getLogger(__name__)


class JobNotFound(NotFound):
    """No such training job for this user."""


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
    )


class JobStore:
    def __init__(self, session_factory: sessionmaker[Session], outbox: Outbox, market_data: MarketDataProvider):
        self.session_factory = session_factory
        self.outbox = outbox
        self.market_data = market_data

    def submit(self, user_id: str, spec: TrainingSpec) -> TrainingJob:
        """Validate ``spec`` against the symbol's bars, record the job and its
        ``training.requested.v1`` event in one transaction. Raises InvalidArgument."""
        if not user_id:
            raise InvalidArgument("user_id is required")
        try:
            bars = self.market_data.fetch_history(spec.symbol)
        except KeyError as exc:
            raise InvalidArgument(f"no bars for symbol {spec.symbol!r}: {exc}") from None
        spec.validate(bars)
        job_id = str(uuid.uuid4())
        with session_scope(self.session_factory) as s:
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
        """queued -> running inside ``session``; False if already claimed or finished."""
        res = session.execute(update(models.training_jobs).where(
            models.training_jobs.c.job_id == job_id, models.training_jobs.c.status == JobStatus.QUEUED.value,
        ).values(status=JobStatus.RUNNING.value, started_at=datetime.now(UTC)))
        return res.rowcount == 1  # type: ignore[attr-defined]

    def progress(self, job: TrainingJob, done: int, total: int) -> None:
        with session_scope(self.session_factory) as s:
            s.execute(update(models.training_jobs).where(models.training_jobs.c.job_id == job.job_id)
                      .values(timesteps_done=done, total_timesteps=total))
            self.outbox.add(s, topics.TRAINING_PROGRESS, events_pb2.TrainingProgress(
                job_id=job.job_id, user_id=job.user_id, status=codec.JOB_STATUS.to_pb(JobStatus.RUNNING),
                timesteps_done=done, total_timesteps=total))

    def finish(self, job: TrainingJob, *, results: dict[str, Any] | None, error: str = "") -> None:
        status = JobStatus.SUCCEEDED if results is not None else JobStatus.FAILED
        with session_scope(self.session_factory) as s:
            values: dict[str, Any] = dict(status=status.value, results=results, error=error,
                                          finished_at=datetime.now(UTC))
            if results is not None:
                values["timesteps_done"] = models.training_jobs.c.total_timesteps
            s.execute(update(models.training_jobs).where(models.training_jobs.c.job_id == job.job_id)
                      .values(**values))
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
    """Runs claimed jobs one at a time in a background thread (training is CPU-bound)."""

    def __init__(self, store: JobStore, artifacts_dir: Path, torch_threads: int,
                 on_event: Callable[[], None] | None = None):
        self.store = store
        self.artifacts_dir = Path(artifacts_dir)
        self.torch_threads = torch_threads
        self.on_event = on_event  # called (from the worker thread) after each outbox write
        self._queue: list[str] = []
        self._cv = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="training-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def enqueue(self, job_id: str) -> None:
        with self._cv:
            self._queue.append(job_id)
            self._cv.notify()

    def stop(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify()

    def _loop(self) -> None:
        import torch

        torch.set_num_threads(self.torch_threads)
        while True:
            with self._cv:
                while not self._queue and not self._stopping:
                    self._cv.wait()
                if self._stopping:
                    return
                job_id = self._queue.pop(0)
            try:
                self.run(job_id)
            except Exception:
                log.exception("training job %s crashed", job_id)

    def run(self, job_id: str) -> None:
        job = self.store.get(job_id)
        spec = job.spec
        last = {"t": 0.0, "frac": -1.0}

        def progress(done: int, total: int) -> None:
            if self._stopping:
                raise InterruptedError("trainer is shutting down")
            frac = done / total if total else 1.0
            now = time.monotonic()
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
        except Exception as exc:
            log.exception("training job %s failed", job_id)
            self.store.finish(job, results=None, error=f"{type(exc).__name__}: {exc}")
        self._notify()

    def _notify(self) -> None:
        if self.on_event is not None:
            self.on_event()
