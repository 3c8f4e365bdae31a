"""Trade import: pull an account's fills from its venue, keep only venue trade ids never
imported before, and publish each new one as ``trades.imported.v1``.

The dedupe rows, the import record and the outgoing events are written in one
transaction (transactional outbox), so an import is either wholly recorded and
published, or not at all; importing the same window again skips every trade.

Idempotent jobs: the import id is a UUIDv5 of (user, broker, account, window), so a
retried ImportTrades for the same window answers the same import id (and imports
nothing twice: trades are deduplicated by (user, broker, venue trade id)). The
``imports`` row records the run that first used the id; a later run of the same window
reports its own counts (0 imported, every trade a duplicate) but does not rewrite it.
Events get deterministic ids too (UUIDv5 of user, broker and trade id).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session, sessionmaker

from bsopt.broker_gateway.v1 import events_pb2
from bsopt_broker import models
from bsopt_broker.domain.records import AccountKind, Fill
from bsopt_broker.domain.venue import Broker, FetchProgress, OnPage
from bsopt_common import codec, topics
from bsopt_common.db import session_scope
from bsopt_common.errors import InvalidArgument
from bsopt_common.events import Outbox


@dataclass(frozen=True, slots=True)
class ImportResult:
    import_id: str
    trades_imported: int
    duplicates_skipped: int


@dataclass(frozen=True, slots=True)
class Fetched:
    """What the fetch of one import read: pages, fills in the window, the account's kind
    (None when the venue reported no page)."""

    pages_fetched: int
    fills_seen: int
    account_kind: AccountKind | None


#: Called inside the import's one transaction, after the dedupe rows and events were
#: staged: ``(session, result, fetched)`` (the job runner records the job as done there).
OnCommit = Callable[[Session, "ImportResult", Fetched], None]


def trade_imported(fill: Fill, user_id: str, broker: str, import_id: str) -> events_pb2.TradeImported:
    """The ``trades.imported.v1`` payload of one fill."""
    return codec.to_message(fill, events_pb2.TradeImported, user_id=user_id, broker=broker, import_id=import_id)


#: Namespace of import ids and event ids (a fixed random UUID; never change it).
IMPORT_NAMESPACE = uuid.UUID("6f1d7c1e-2b0a-4d55-9a57-0c3e8f2b9d41")
_CHUNK = 1000


def _utc(t: datetime, name: str) -> datetime:
    if t.tzinfo is None:
        raise InvalidArgument(f"import window {name} must carry a time zone")
    return t.astimezone(UTC)


def import_id_of(user_id: str, broker: str, account_id: str, start: datetime, end: datetime) -> str:
    """The deterministic import id of a window: UUIDv5 over user, broker, account and the
    window's UTC instants (microseconds), so equal instants in other zones give the same id."""
    window = f"{_utc(start, 'start').isoformat(timespec='microseconds')}/" \
             f"{_utc(end, 'end').isoformat(timespec='microseconds')}"
    return str(uuid.uuid5(IMPORT_NAMESPACE, "\x1f".join(("import", user_id, broker, account_id, window))))


def event_id_of(user_id: str, broker: str, trade_id: str) -> str:
    """The ``trades.imported.v1`` event id of one trade (UUIDv5): a trade is published once."""
    return str(uuid.uuid5(IMPORT_NAMESPACE, "\x1f".join(("trade", user_id, broker, trade_id))))


class TradeImporter:
    def __init__(self, session_factory: sessionmaker[Session], broker: Broker, outbox: Outbox):
        self.session_factory = session_factory
        self.broker = broker
        self.outbox = outbox

    def import_trades(self, account_id: str, user_id: str, start: datetime, end: datetime, *,
                      on_page: OnPage | None = None, on_commit: OnCommit | None = None) -> ImportResult:
        """Import the account's fills executed in ``[start, end)`` (aware datetimes).

        Returns the import id (the same for every run of the same window) and how many
        trades were new (stored and published) or already imported (skipped, including a
        trade id the venue listed twice). Raises InvalidArgument for a naive, empty or
        reversed window, AccountNotFound, and whatever the venue raises (Unavailable).

        ``on_page`` (optional) is told after each page the venue read (its own
        transactions, if any, are its business); ``on_commit`` (optional) runs inside the
        one transaction that stores the import, after everything else was staged. Without
        them the import is exactly the synchronous ImportTrades."""
        if not end > start:
            raise InvalidArgument(f"import window end ({end.isoformat()}) must be after start ({start.isoformat()})")
        import_id = import_id_of(user_id, self.broker.name, account_id, start, end)
        last: list[FetchProgress] = []

        def page(progress: FetchProgress) -> None:
            last[:] = [progress]
            if on_page is not None:
                on_page(progress)

        if on_page is None and on_commit is None:
            fills = self.broker.fills_between(account_id, user_id, start, end)
        else:
            fills = self.broker.fills_between(account_id, user_id, start, end, on_page=page)
        unique = list({f.trade_id: f for f in reversed(fills)}.values())[::-1]  # first of each trade id
        t = models.imported_trades
        # Inserted in trade id order: concurrent imports of overlapping windows lock the
        # dedupe keys in one order (they wait for each other, never deadlock).
        by_trade_id = sorted(f.trade_id for f in unique)
        with session_scope(self.session_factory) as s:
            new_ids: set[str] = set()
            for i in range(0, len(by_trade_id), _CHUNK):
                rows = [dict(user_id=user_id, broker=self.broker.name, trade_id=trade_id, account_id=account_id,
                             import_id=import_id) for trade_id in by_trade_id[i:i + _CHUNK]]
                new_ids.update(s.execute(pg_insert(t).values(rows).on_conflict_do_nothing()
                                         .returning(t.c.trade_id)).scalars())
            new = [f for f in unique if f.trade_id in new_ids]
            for i in range(0, len(new), _CHUNK):
                self.outbox.add_many(s, topics.TRADES_IMPORTED, [
                    (trade_imported(f, user_id, self.broker.name, import_id),
                     event_id_of(user_id, self.broker.name, f.trade_id)) for f in new[i:i + _CHUNK]])
            result = ImportResult(import_id, len(new), len(fills) - len(new))
            s.execute(pg_insert(models.imports).values(
                import_id=import_id, account_id=account_id, user_id=user_id, window_start=start, window_end=end,
                trades_imported=result.trades_imported, duplicates_skipped=result.duplicates_skipped,
            ).on_conflict_do_nothing())
            if on_commit is not None:
                kind = last[0].account_kind if last else (fills[0].account_kind if fills else None)
                on_commit(s, result, Fetched(last[0].pages_fetched if last else 0, len(fills), kind))
        return result
