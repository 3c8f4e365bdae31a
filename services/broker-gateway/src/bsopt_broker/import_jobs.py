"""Background trade imports (issue 8 §5): ``StartImport`` records a job and returns at
once; a small thread pool in the broker-gateway process runs it through the same
:meth:`TradeImporter.import_trades` as the synchronous ``ImportTrades``.

- **One job per window.** The job id is the import id (UUIDv5 of user, broker, account
  and window, :func:`~bsopt_broker.trade_import.import_id_of`), the primary key of
  ``broker.import_jobs``. Starting the same window again answers the job as it is
  (queued, running or done: no second run); only a ``failed`` job is started again
  (``attempts`` + 1, counts reset), in the same ``INSERT .. ON CONFLICT DO UPDATE ..
  WHERE status = 'failed'``, so two concurrent starts run it once.
- **Progress.** ``imports.progress.v1`` (key: the user) is staged through the outbox when
  the worker starts the job (``running``, 0 pages), after each page read from the venue
  (``running``, pages and fills so far, the account's kind; its own small transaction,
  together with the row's counters) and when it ends: ``done`` is staged in the import's
  one transaction (dedupe rows, ``trades.imported.v1`` events, the ``imports`` record,
  the job row), so a job is never ``done`` without its trades; ``failed`` (with the
  error, nothing of the import stored) in a transaction of its own.
- **Restarts.** :meth:`ImportJobs.start` runs again every job found ``queued`` or
  ``running`` (left by a process that stopped or crashed): the import is idempotent
  (trades are deduplicated by (user, broker, trade id)). :meth:`ImportJobs.stop` makes
  running jobs stop at their next page and leaves them ``running`` for the next start.
  Several replicas may all resume the same job; each trade is still imported once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session, sessionmaker

from bsopt.broker_gateway.v1 import broker_gateway_pb2 as pb
from bsopt.broker_gateway.v1 import events_pb2
from bsopt_broker import models
from bsopt_broker.domain.records import AccountKind
from bsopt_broker.domain.venue import FetchProgress
from bsopt_broker.trade_import import Fetched, ImportResult, TradeImporter, import_id_of
from bsopt_common import codec, topics
from bsopt_common.db import session_scope
from bsopt_common.errors import DomainError, InvalidArgument, NotFound
from bsopt_common.events import Outbox

log = logging.getLogger("bsopt_broker.import_jobs")

_ERROR_LENGTH = 500


class ImportStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class ImportNotFound(NotFound):
    """No such import for this user."""


class _Stopping(Exception):
    """The process is stopping: the job stays ``running`` for the next start."""


@dataclass(frozen=True, slots=True)
class ImportJob:
    import_id: str
    user_id: str
    account_id: str
    broker: str
    status: ImportStatus
    start: datetime
    end: datetime
    pages_fetched: int
    fills_seen: int
    trades_imported: int
    duplicates_skipped: int
    error: str
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    account_kind: AccountKind | None


def _job(row: Any) -> ImportJob:
    return ImportJob(
        import_id=row["import_id"], user_id=row["user_id"], account_id=row["account_id"], broker=row["broker"],
        status=ImportStatus(row["status"]), start=row["window_start"], end=row["window_end"],
        pages_fetched=row["pages_fetched"], fills_seen=row["fills_seen"], trades_imported=row["trades_imported"],
        duplicates_skipped=row["duplicates_skipped"], error=row["error"], attempts=row["attempts"],
        created_at=row["created_at"], started_at=row["started_at"], finished_at=row["finished_at"],
        account_kind=AccountKind(row["account_kind"]) if row["account_kind"] else None)


_STATUS_PB = {ImportStatus.QUEUED: pb.IMPORT_STATUS_QUEUED, ImportStatus.RUNNING: pb.IMPORT_STATUS_RUNNING,
              ImportStatus.DONE: pb.IMPORT_STATUS_DONE, ImportStatus.FAILED: pb.IMPORT_STATUS_FAILED}


def _kind_pb(kind: AccountKind | None) -> int:
    if kind is None:
        return int(pb.ACCOUNT_KIND_UNSPECIFIED)
    return int(pb.ACCOUNT_KIND_LIVE if kind is AccountKind.LIVE else pb.ACCOUNT_KIND_PAPER)


def job_pb(job: ImportJob) -> pb.ImportJob:
    """The job as the ``ImportJob`` message."""
    message = pb.ImportJob(
        import_id=job.import_id, account_id=job.account_id, broker=job.broker, status=_STATUS_PB[job.status],
        start=codec.timestamp(job.start), end=codec.timestamp(job.end), pages_fetched=job.pages_fetched,
        fills_seen=job.fills_seen, trades_imported=job.trades_imported, duplicates_skipped=job.duplicates_skipped,
        error=job.error, attempts=job.attempts, created_at=codec.timestamp(job.created_at),
        account_kind=_kind_pb(job.account_kind))  # type: ignore[arg-type]
    if job.started_at is not None:
        message.started_at.CopyFrom(codec.timestamp(job.started_at))
    if job.finished_at is not None:
        message.finished_at.CopyFrom(codec.timestamp(job.finished_at))
    return message


def progress_event(job: ImportJob) -> events_pb2.ImportProgress:
    """The ``imports.progress.v1`` payload of the job as it is."""
    return events_pb2.ImportProgress(
        import_id=job.import_id, user_id=job.user_id, account_id=job.account_id, broker=job.broker,
        status=_STATUS_PB[job.status], pages_fetched=job.pages_fetched, fills_seen=job.fills_seen,
        trades_imported=job.trades_imported, duplicates_skipped=job.duplicates_skipped, error=job.error,
        account_kind=_kind_pb(job.account_kind),  # type: ignore[arg-type]
        at=codec.timestamp(datetime.now(UTC)))


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, DomainError):
        text = f"{type(exc).__name__}: {exc}"
    else:  # not a named error: its details stay in the log
        text = "internal error while importing (see broker-gateway's log)"
    return text[:_ERROR_LENGTH]


class ImportJobs:
    """Import jobs of one broker-gateway process. ``importer_for(account_id)`` is the
    importer of an account (its broker name is the one recorded); ``notify`` wakes the
    outbox relay (thread-safe). :meth:`start` / :meth:`stop` run and stop the workers."""

    def __init__(self, session_factory: sessionmaker[Session], outbox: Outbox,
                 importer_for: Callable[[str], TradeImporter], *, notify: Callable[[], None] = lambda: None,
                 workers: int = 2):
        self.session_factory = session_factory
        self.outbox = outbox
        self.importer_for = importer_for
        self.notify = notify
        self._workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._running: set[str] = set()

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> int:
        """Start the workers and run again every job left ``queued`` or ``running``;
        returns how many. Blocking (one query)."""
        self._stopping.clear()
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="import-job")
        t = models.import_jobs
        with session_scope(self.session_factory) as s:
            left = list(s.execute(select(t.c.import_id).where(
                t.c.status.in_((ImportStatus.QUEUED.value, ImportStatus.RUNNING.value)))
                .order_by(t.c.created_at)).scalars())
        for import_id in left:
            log.info("import %s: resumed at start-up", import_id)
            self._submit(import_id)
        return len(left)

    def stop(self) -> None:
        """Stop: running jobs stop at their next page (they stay ``running`` and are
        resumed by the next start); waits for the worker threads. Blocking."""
        self._stopping.set()
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _submit(self, import_id: str) -> None:
        pool = self._pool
        if pool is None:
            raise RuntimeError("import jobs are not started")
        future: Future[None] = pool.submit(self._run, import_id)
        future.add_done_callback(_log_crash)

    # -- requests ------------------------------------------------------------------------

    def start_import(self, account_id: str, user_id: str, start: datetime, end: datetime) -> ImportJob:
        """Record the window's job and queue it; or the job as it is when the window was
        started before and did not fail (nothing new runs). Raises InvalidArgument (empty
        account id, naive or empty window), AccountNotFound (not the user's account),
        Unavailable (the venue cannot tell). Blocking."""
        if not account_id:
            raise InvalidArgument("account_id is required")
        if not end > start:
            raise InvalidArgument(f"import window end ({end.isoformat()}) must be after start ({start.isoformat()})")
        importer = self.importer_for(account_id)
        broker = importer.broker.name
        import_id = import_id_of(user_id, broker, account_id, start, end)
        existing = self._find(import_id, user_id)
        if existing is not None and existing.status is not ImportStatus.FAILED:
            return existing
        importer.broker.get_account(account_id, user_id)  # NOT_FOUND before anything is recorded
        t = models.import_jobs
        fresh = dict(status=ImportStatus.QUEUED.value, pages_fetched=0, fills_seen=0, trades_imported=0,
                     duplicates_skipped=0, error="", started_at=None, finished_at=None, account_kind=None)
        with session_scope(self.session_factory) as s:
            row = s.execute(pg_insert(t).values(
                import_id=import_id, user_id=user_id, broker=broker, account_id=account_id, window_start=start,
                window_end=end, attempts=1, **fresh,
            ).on_conflict_do_update(
                index_elements=[t.c.import_id], set_={**fresh, "attempts": t.c.attempts + 1},
                where=t.c.status == ImportStatus.FAILED.value,
            ).returning(*t.c)).mappings().first()
        if row is None:  # started by someone else meanwhile, and not failed
            job = self._find(import_id, user_id)
            assert job is not None
            return job
        self._submit(import_id)
        return _job(row)

    def import_now(self, account_id: str, user_id: str, start: datetime, end: datetime) -> ImportResult:
        """The synchronous ``ImportTrades``: the window imported in the calling thread,
        recorded as the window's job like :meth:`start_import` (so ``GetImport`` knows it,
        with progress events) unless that job is queued or running right now, when the
        import still runs (deduplication makes it safe) and leaves the job alone. A window
        imported before runs again: its trades count as duplicates. Raises as
        :meth:`start_import`, and the import's own errors. Blocking."""
        if not account_id:
            raise InvalidArgument("account_id is required")
        if not end > start:
            raise InvalidArgument(f"import window end ({end.isoformat()}) must be after start ({start.isoformat()})")
        importer = self.importer_for(account_id)
        import_id = import_id_of(user_id, importer.broker.name, account_id, start, end)
        importer.broker.get_account(account_id, user_id)  # NOT_FOUND before anything is recorded
        t = models.import_jobs
        fresh = dict(status=ImportStatus.RUNNING.value, pages_fetched=0, fills_seen=0, trades_imported=0,
                     duplicates_skipped=0, error="", started_at=func.now(), finished_at=None, account_kind=None)
        with session_scope(self.session_factory) as s:
            row = s.execute(pg_insert(t).values(
                import_id=import_id, user_id=user_id, broker=importer.broker.name, account_id=account_id,
                window_start=start, window_end=end, attempts=1, **fresh,
            ).on_conflict_do_update(
                index_elements=[t.c.import_id], set_={**fresh, "attempts": t.c.attempts + 1},
                where=t.c.status.in_((ImportStatus.DONE.value, ImportStatus.FAILED.value)),
            ).returning(*t.c)).mappings().first()
            if row is not None:
                self.outbox.add(s, topics.IMPORTS_PROGRESS, progress_event(_job(row)))
        if row is None:  # the window's job is queued or running elsewhere: not ours to record
            return importer.import_trades(account_id, user_id, start, end)
        self.notify()
        result = self._execute(_job(row), background=False)
        assert result is not None
        return result

    def get(self, import_id: str, user_id: str) -> ImportJob:
        """The user's import. Raises ImportNotFound (unknown, or another user's). Blocking."""
        job = self._find(import_id, user_id)
        if job is None:
            raise ImportNotFound(f"no import {import_id!r} for this user")
        return job

    def _find(self, import_id: str, user_id: str) -> ImportJob | None:
        t = models.import_jobs
        with session_scope(self.session_factory) as s:
            row = s.execute(select(t).where(t.c.import_id == import_id, t.c.user_id == user_id)).mappings().first()
        return None if row is None else _job(row)

    # -- the worker ------------------------------------------------------------------------

    def _update(self, s: Session, import_id: str, **values: Any) -> ImportJob:
        t = models.import_jobs
        row = s.execute(update(t).where(t.c.import_id == import_id).values(**values).returning(*t.c)).mappings().one()
        return _job(row)

    def _run(self, import_id: str) -> None:
        with self._lock:
            if import_id in self._running:
                return  # already running in this process
            self._running.add(import_id)
        try:
            self._run_once(import_id)
        finally:
            with self._lock:
                self._running.discard(import_id)

    def _run_once(self, import_id: str) -> None:
        if self._stopping.is_set():
            return
        t = models.import_jobs
        with session_scope(self.session_factory) as s:
            row = s.execute(update(t).where(
                t.c.import_id == import_id,
                t.c.status.in_((ImportStatus.QUEUED.value, ImportStatus.RUNNING.value)),
            ).values(status=ImportStatus.RUNNING.value, started_at=func.now(), pages_fetched=0, fills_seen=0)
                .returning(*t.c)).mappings().first()
            if row is None:
                return  # done or failed meanwhile
            job = _job(row)
            self.outbox.add(s, topics.IMPORTS_PROGRESS, progress_event(job))
        self.notify()
        log.info("import %s: running (account %s, %s .. %s)", import_id, job.account_id, job.start.isoformat(),
                 job.end.isoformat())

        self._execute(job, background=True)

    def _execute(self, job: ImportJob, *, background: bool) -> ImportResult | None:
        """Run a claimed (``running``) job in this thread: progress per page, ``done`` with
        the counts in the import's own transaction, ``failed`` with the error. Background:
        stops at the next page when the process stops (None), and a failure is recorded,
        not raised (None). In a request: never stops early, and a failure is recorded and
        raised to the caller."""
        import_id = job.import_id

        def on_page(progress: FetchProgress) -> None:
            if background and self._stopping.is_set():
                raise _Stopping()
            with session_scope(self.session_factory) as s:
                now = self._update(s, import_id, pages_fetched=progress.pages_fetched,
                                   fills_seen=progress.fills_seen, account_kind=progress.account_kind.value)
                self.outbox.add(s, topics.IMPORTS_PROGRESS, progress_event(now))
            self.notify()

        def on_commit(s: Session, result: ImportResult, fetched: Fetched) -> None:
            done = self._update(
                s, import_id, status=ImportStatus.DONE.value, pages_fetched=fetched.pages_fetched,
                fills_seen=fetched.fills_seen, trades_imported=result.trades_imported,
                duplicates_skipped=result.duplicates_skipped, finished_at=func.now(),
                **({"account_kind": fetched.account_kind.value} if fetched.account_kind is not None else {}))
            self.outbox.add(s, topics.IMPORTS_PROGRESS, progress_event(done))

        try:
            result = self.importer_for(job.account_id).import_trades(
                job.account_id, job.user_id, job.start, job.end, on_page=on_page, on_commit=on_commit)
        except _Stopping:
            log.info("import %s: stopped with the process; resumed at the next start", import_id)
            return None
        except Exception as exc:  # the job fails; the process goes on
            if not isinstance(exc, DomainError):
                log.exception("import %s failed", import_id)
            else:
                log.warning("import %s failed: %s", import_id, exc)
            with session_scope(self.session_factory) as s:
                failed = self._update(s, import_id, status=ImportStatus.FAILED.value, error=_error_text(exc),
                                      finished_at=func.now())
                self.outbox.add(s, topics.IMPORTS_PROGRESS, progress_event(failed))
            self.notify()
            if background:
                return None
            raise
        self.notify()
        log.info("import %s: done, %d imported, %d duplicates skipped", import_id, result.trades_imported,
                 result.duplicates_skipped)
        return result


def _log_crash(future: Future[None]) -> None:
    if not future.cancelled() and (exc := future.exception()) is not None:
        log.error("import worker crashed: %s: %s", type(exc).__name__, exc, exc_info=exc)
