"""Trade import: pull an account's fills from its venue, keep only venue trade ids never
imported before, and publish each new one as ``trades.imported.v1``.

The dedupe rows, the import record and the outgoing events are written in one
transaction (transactional outbox), so an import is either wholly recorded and
published, or not at all; importing the same window again skips every trade.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session, sessionmaker

from bsopt.broker_gateway.v1 import events_pb2
from bsopt_broker import models
from bsopt_broker.domain.records import Fill
from bsopt_broker.domain.venue import Broker
from bsopt_common import codec, topics
from bsopt_common.db import session_scope
from bsopt_common.errors import InvalidArgument
from bsopt_common.events import Outbox


@dataclass(frozen=True, slots=True)
class ImportResult:
    import_id: str
    trades_imported: int
    duplicates_skipped: int


def trade_imported(fill: Fill, user_id: str, broker: str, import_id: str) -> events_pb2.TradeImported:
    """The ``trades.imported.v1`` payload of one fill."""
    return codec.to_message(fill, events_pb2.TradeImported, user_id=user_id, broker=broker, import_id=import_id)


class TradeImporter:
    def __init__(self, session_factory: sessionmaker[Session], broker: Broker, outbox: Outbox):
        self.session_factory = session_factory
        self.broker = broker
        self.outbox = outbox

    def import_trades(self, account_id: str, user_id: str, start: datetime, end: datetime) -> ImportResult:
        """Raises InvalidArgument for an empty or reversed window, AccountNotFound."""
        if not end > start:
            raise InvalidArgument(f"import window end ({end.isoformat()}) must be after start ({start.isoformat()})")
        fills = self.broker.fills_between(account_id, user_id, start, end)
        import_id = str(uuid.uuid4())
        imported = 0
        with session_scope(self.session_factory) as s:
            for fill in fills:
                new = s.execute(pg_insert(models.imported_trades).values(
                    broker=self.broker.name, trade_id=fill.trade_id, account_id=account_id, user_id=user_id,
                    import_id=import_id,
                ).on_conflict_do_nothing().returning(models.imported_trades.c.trade_id)).first()
                if new is None:
                    continue
                imported += 1
                self.outbox.add(s, topics.TRADES_IMPORTED, trade_imported(fill, user_id, self.broker.name, import_id))
            result = ImportResult(import_id, imported, len(fills) - imported)
            s.execute(models.imports.insert().values(
                import_id=import_id, account_id=account_id, user_id=user_id, window_start=start, window_end=end,
                trades_imported=result.trades_imported, duplicates_skipped=result.duplicates_skipped))
        return result
