"""Training-job lifecycle in schema ``trainer``: submit (job row + ``training.requested.v1``
in one transaction), claim (queued -> running, exactly once), progress, finish
(results + ``training.completed.v1``), all through the transactional outbox.

Lifecycle: ``queued`` -> ``running`` -> ``succeeded`` | ``failed``. A job found
``running`` when the service starts was interrupted by a crash or restart; it is marked
``failed`` with that reason rather than left hanging.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from dataclasses import asdict
from datetime import UTC, date, datetime
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from bsopt.rl_trainer.v1 import events_pb2
from bsopt.rl_trainer.v1 import rl_trainer_pb2 as pb
from bsopt_common.db import session_scope
from bsopt_common.events import Outbox
from bsopt_common.marketdata import MarketDataProvider
from bsopt_trainer import models
from bsopt_trainer.domain.job import TrainingSpec, run_training_job

log = logging.getLogger(__name__)

TOPIC_REQUESTED = "training.requested.v1"
TOPIC_PROGRESS = "training.progress.v1"
TOPIC_COMPLETED = "training.completed.v1"

STATUS_PB = {"queued": pb.JOB_STATUS_QUEUED, "running": pb.JOB_STATUS_RUNNING,
             "succeeded": pb.JOB_STATUS_SUCCEEDED, "failed": pb.JOB_STATUS_FAILED}


class JobNotFound(LookupError):
    """No such training job for this user."""


def spec_from_pb(spec: pb.TrainingJobSpec) -> TrainingSpec:
    """Raises ValueError naming the field when a date is not ISO ``YYYY-MM-DD``."""
    dates = {}
    for name in ("train_start", "train_end", "test_start", "test_end"):
        try:
            dates[name] = date.fromisoformat(getattr(spec, name))
        except ValueError:
            raise ValueError(f"{name} must be an ISO date (YYYY-MM-DD), got {getattr(spec, name)!r}") from None
    return TrainingSpec(
        symbol=spec.symbol.upper(), window_size=spec.window_size or 16, total_timesteps=spec.total_timesteps,
        transaction_cost_bps=spec.transaction_cost_bps, seed=spec.seed, **dates,
    )


def spec_to_json(spec: TrainingSpec) -> dict:
    d = asdict(spec)
    return {k: (v.isoformat() if isinstance(v, date) else v) for k, v in d.items()}


def spec_from_json(d: dict) -> TrainingSpec:
    return TrainingSpec(**{k: (date.fromisoformat(v) if k.endswith(("_start", "_end")) else v) for k, v in d.items()})


def spec_pb(d: dict) -> pb.TrainingJobSpec:
    return pb.TrainingJobSpec(
        symbol=d["symbol"], train_start=d["train_start"], train_end=d["train_end"], test_start=d["test_start"],
        test_end=d["test_end"], window_size=d["window_size"], total_timesteps=d["total_timesteps"],
        transaction_cost_bps=d["transaction_cost_bps"], seed=d["seed"],
    )


def results_pb(r: dict | None) -> pb.TrainingResults | None:
    if not r:
        return None

    def m(x: dict) -> pb.EvaluationMetrics:
        return pb.EvaluationMetrics(total_return=x["total_return"], sharpe=x["sharpe"],
                                    max_drawdown=x["max_drawdown"], trades=x["trades"])

    return pb.TrainingResults(model=r["model"], window=r["window"], timesteps=r["timesteps"], seconds=r["seconds"],
                              agent=m(r["agent"]), mlp_baseline=m(r["mlp_baseline"]),
                              buy_and_hold=m(r["buy_and_hold"]), checkpoint_uri=r.get("checkpoint_uri", ""))


class JobStore:
    def __init__(self, session_factory: sessionmaker[Session], outbox: Outbox, market_data: MarketDataProvider):
        self.session_factory = session_factory
        self.outbox = outbox
        self.market_data = market_data

    def submit(self, user_id: str, spec: TrainingSpec) -> dict:
        """Validate ``spec`` against the symbol's bars, record the job and its
        ``training.requested.v1`` event in one transaction. Raises ValueError."""
        if not user_id:
            raise ValueError("user_id is required")
        spec.validate(self.market_data.fetch_history(spec.symbol))
        job_id = str(uuid.uuid4())
        spec_json = spec_to_json(spec)
        with session_scope(self.session_factory) as s:
            s.execute(models.training_jobs.insert().values(
                job_id=job_id, user_id=user_id, spec=spec_json, status="queued",
                total_timesteps=2 * spec.total_timesteps))
            self.outbox.add(s, TOPIC_REQUESTED, events_pb2.TrainingRequested(
                job_id=job_id, user_id=user_id, spec=spec_pb(spec_json)), key=job_id, subject=f"jobs/{job_id}")
        return self.get(job_id, user_id)

    def get(self, job_id: str, user_id: str | None = None) -> dict:
        with session_scope(self.session_factory) as s:
            q = select(models.training_jobs).where(models.training_jobs.c.job_id == job_id)
            if user_id is not None:
                q = q.where(models.training_jobs.c.user_id == user_id)
            row = s.execute(q).mappings().first()
        if row is None:
            raise JobNotFound(f"training job {job_id} not found")
        return dict(row)

    def claim(self, session: Session, job_id: str) -> bool:
        """queued -> running inside ``session``; False if already claimed or finished."""
        res = session.execute(update(models.training_jobs).where(
            models.training_jobs.c.job_id == job_id, models.training_jobs.c.status == "queued",
        ).values(status="running", started_at=datetime.now(UTC)))
        return res.rowcount == 1

    def progress(self, job: dict, done: int, total: int) -> None:
        with session_scope(self.session_factory) as s:
            s.execute(update(models.training_jobs).where(models.training_jobs.c.job_id == job["job_id"])
                      .values(timesteps_done=done, total_timesteps=total))
            self.outbox.add(s, TOPIC_PROGRESS, events_pb2.TrainingProgress(
                job_id=job["job_id"], user_id=job["user_id"], status=pb.JOB_STATUS_RUNNING,
                timesteps_done=done, total_timesteps=total), key=job["job_id"], subject=f"jobs/{job['job_id']}")

    def finish(self, job: dict, *, results: dict | None, error: str = "") -> None:
        status = "succeeded" if results is not None else "failed"
        with session_scope(self.session_factory) as s:
            values = dict(status=status, results=results, error=error, finished_at=datetime.now(UTC))
            if results is not None:
                values["timesteps_done"] = models.training_jobs.c.total_timesteps
            s.execute(update(models.training_jobs).where(models.training_jobs.c.job_id == job["job_id"])
                      .values(**values))
            self.outbox.add(s, TOPIC_COMPLETED, events_pb2.TrainingCompleted(
                job_id=job["job_id"], user_id=job["user_id"], status=STATUS_PB[status],
                results=results_pb(results), error=error), key=job["job_id"], subject=f"jobs/{job['job_id']}")

    def fail_interrupted(self) -> int:
        """Mark jobs left ``running`` by a previous process as failed; return how many."""
        with session_scope(self.session_factory) as s:
            rows = s.execute(select(models.training_jobs).where(models.training_jobs.c.status == "running")
                             ).mappings().all()
        for row in rows:
            self.finish(dict(row), results=None, error="interrupted: the trainer restarted while the job was running")
        return len(rows)


class TrainingWorker:
    """Runs claimed jobs one at a time in a background thread (training is CPU-bound)."""

    def __init__(self, store: JobStore, artifacts_dir: Path, torch_threads: int, on_event=None):  # noqa: ANN001
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
        spec = spec_from_json(job["spec"])
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

        log.info("training job %s: %s", job_id, spec_to_json(spec))
        try:
            bars = self.store.market_data.fetch_history(spec.symbol)
            result = run_training_job(spec, bars, self.artifacts_dir / "jobs" / job_id, progress)
            results = {
                "model": result.model, "window": result.window, "timesteps": result.timesteps,
                "seconds": round(result.seconds, 3), "mlp_seconds": round(result.mlp_seconds, 3),
                "agent": _finite(result.agent.to_dict()), "mlp_baseline": _finite(result.mlp_baseline.to_dict()),
                "buy_and_hold": _finite(result.buy_and_hold.to_dict()),
                "checkpoint_uri": Path(result.checkpoint_path).resolve().as_uri(),
                "checkpoint_path": str(result.checkpoint_path),
                "test_decisions": len(result.test_dates),
            }
            self.store.finish(job, results=results)
            log.info("training job %s succeeded: %s", job_id, results)
        except Exception as exc:
            log.exception("training job %s failed", job_id)
            self.store.finish(job, results=None, error=f"{type(exc).__name__}: {exc}")
        self._notify()

    def _notify(self) -> None:
        if self.on_event is not None:
            self.on_event()


def _finite(d: dict) -> dict:
    return {k: (0.0 if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}
