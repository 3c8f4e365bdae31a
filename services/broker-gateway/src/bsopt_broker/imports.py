"""Trade import: pull an account's fills from its broker, keep only broker trade ids
never imported before, and publish each new one as ``trades.imported.v1``.

The dedupe rows, the import record and the outgoing events are written in one
transaction (transactional outbox), so an import is either wholly recorded and
published, or not at all; importing the same window again skips every trade.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session, sessionmaker

from bsopt.broker_gateway.v1 import broker_gateway_pb2 as pb
from bsopt.broker_gateway.v1 import events_pb2
from bsopt_broker import models
from bsopt_broker.adapters.paper import BROKER, PaperBroker
from bsopt_common.db import session_scope
from bsopt_common.events import Outbox

TOPIC_TRADES_IMPORTED = "trades.imported.v1"


@dataclass(frozen=True)
class ImportResult:
    import_id: str
    trades_imported: int
    duplicates_skipped: int


def _ts(dt: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(dt)
    return ts


class TradeImporter:
    def __init__(self, session_factory: sessionmaker[Session], broker: PaperBroker, outbox: Outbox):
        self.session_factory = session_factory
        self.broker = broker
        self.outbox = outbox

    def import_trades(self, account_id: str, user_id: str, start: datetime, end: datetime) -> ImportResult:
        """Raises ValueError for an empty or reversed window, AccountNotFound."""
        if not end > start:
            raise ValueError(f"import window end ({end.isoformat()}) must be after start ({start.isoformat()})")
        fills = self.broker.list_fills(account_id, user_id, start, end)
        import_id = str(uuid.uuid4())
        imported = 0
        with session_scope(self.session_factory) as s:
            for fill in fills:
                new = s.execute(pg_insert(models.imported_trades).values(
                    broker=BROKER, trade_id=fill["trade_id"], account_id=account_id, user_id=user_id,
                    import_id=import_id,
                ).on_conflict_do_nothing().returning(models.imported_trades.c.trade_id)).first()
                if new is None:
                    continue
                imported += 1
                event = events_pb2.TradeImported(
                    trade_id=fill["trade_id"], user_id=user_id, account_id=account_id, broker=BROKER,
                    symbol=fill["symbol"], side=pb.SIDE_BUY if fill["side"] == "BUY" else pb.SIDE_SELL,
                    quantity=fill["quantity"], price_usd=fill["price_usd"], fee_usd=fill["fee_usd"],
                    executed_at=_ts(fill["executed_at"]), import_id=import_id,
                )
                self.outbox.add(s, TOPIC_TRADES_IMPORTED, event, key=user_id, subject=f"trades/{fill['trade_id']}")
            result = ImportResult(import_id, imported, len(fills) - imported)
            s.execute(models.imports.insert().values(
                import_id=import_id, account_id=account_id, user_id=user_id, window_start=start, window_end=end,
                trades_imported=result.trades_imported, duplicates_skipped=result.duplicates_skipped))
        return result
