"""What ml-scorer stores and serves: a scored trade, as a frozen record."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bsopt_common.money import Money
from bsopt_common.vocabulary import BiasLabel, Side
from bsopt_scorer.domain.features import TradeFeatures


@dataclass(frozen=True, slots=True)
class ScoredTrade:
    """An imported trade with the bias tag, the explanation and the indicator values it
    was computed from (``bsopt.ml_scorer.v1.ScoredTrade``)."""

    trade_id: str
    user_id: str
    account_id: str
    symbol: str
    side: Side
    quantity: int
    price: Money
    """Execution price per share."""
    executed_at: datetime
    label: BiasLabel
    rule: str
    """The rule that fired (``fomo.run_up_5d``, ...), or ``none``."""
    explanation: str
    """Which rule fired, with the numbers that made it fire."""
    features: TradeFeatures
    reflection: str
    """A short post-trade reflection for the coach."""
    scored_at: datetime
