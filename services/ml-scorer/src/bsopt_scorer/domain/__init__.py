"""Pure domain logic of the ML scorer: technical indicators, per-trade features and
explainable behavioural-bias tags.

Nothing here imports generated protobuf code, gRPC or Kafka; the dataclasses map 1:1 onto
the messages of ``proto/bsopt/ml_scorer/v1/ml_scorer.proto`` and the wiring layer does
the conversion.
"""

from bsopt_scorer.domain.features import (
    MIN_BARS,
    BarNotFoundError,
    InsufficientHistoryError,
    TradeFeatures,
    features_at,
    features_for,
    indicator_frame,
    locate_bar,
)
from bsopt_scorer.domain.indicators import atr, bollinger, bollinger_position, pct_change, rsi, true_range
from bsopt_scorer.domain.tags import LABELS, BiasThresholds, TagResult, tag_trade

__all__ = [
    "LABELS",
    "MIN_BARS",
    "BarNotFoundError",
    "BiasThresholds",
    "InsufficientHistoryError",
    "TagResult",
    "TradeFeatures",
    "atr",
    "bollinger",
    "bollinger_position",
    "features_at",
    "features_for",
    "indicator_frame",
    "locate_bar",
    "pct_change",
    "rsi",
    "tag_trade",
    "true_range",
]
