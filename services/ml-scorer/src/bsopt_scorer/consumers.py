"""Kafka entrypoint: ``trades.imported.v1`` -> score and store, in the idempotent
consumer's transaction (the outgoing ``trades.scored.v1`` rides the same transaction)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from bsopt_common import topics
from bsopt_common.errors import InvalidArgument
from bsopt_common.events import Event
from bsopt_common.marketdata import UnknownSymbolError
from bsopt_common.service import ConsumerSpec
from bsopt_scorer.domain import BarNotFoundError, InsufficientHistoryError
from bsopt_scorer.scoring import TradeScorer


def imported_trades(scorer: TradeScorer) -> ConsumerSpec:
    def handle(event: Event, session: Session) -> None:
        scorer.score(event.payload, session)  # type: ignore[arg-type]

    # No bars for the fill (a symbol or a date the market data does not hold) and a
    # malformed event stay so however often they are retried.
    return ConsumerSpec(group_id="ml-scorer", handlers={topics.TRADES_IMPORTED: handle},
                        permanent_errors=(InvalidArgument, BarNotFoundError, InsufficientHistoryError,
                                          UnknownSymbolError))
