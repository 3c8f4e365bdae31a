"""Tables of schema ``scorer`` (owned by ml-scorer only)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Double,
    Index,
    MetaData,
    String,
    Table,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB

from bsopt_common.db import amount_type

SCHEMA = "scorer"
metadata = MetaData(schema=SCHEMA)

scored_trades = Table(
    "scored_trades", metadata,
    Column("trade_id", String(64), primary_key=True),
    Column("user_id", String(64), nullable=False, index=True),
    Column("account_id", String(36), nullable=False),
    Column("symbol", String(16), nullable=False),
    Column("side", String(4), nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("price", amount_type(), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("executed_at", DateTime(timezone=True), nullable=False),
    Column("label", String(12), nullable=False),
    Column("rule", String(64), nullable=False),
    Column("explanation", Text, nullable=False),
    Column("reflection", Text, nullable=False),
    # who wrote the reflection: "template", or "openai:<model>" (revision 0003)
    Column("reflection_provider", String(64), nullable=False, server_default="template"),
    # The indicator values the tag was computed from (TradeFeatures fields).
    Column("features", JSONB, nullable=False),
    # The thresholds the tag was computed with, for audit (revision 0004):
    # bsopt_scorer.domain.calibration.Calibration.record(), {"source": "population" |
    # "calibrated", "trades", "scale", "thresholds": {BiasThresholds fields}}; NULL for rows
    # scored before it (population thresholds).
    Column("thresholds", JSONB, nullable=True),
    Column("scored_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # ListScoredTrades' keyset: a user's trades newest first (revision 0005)
    Index("ix_scorer_scored_trades_user_executed", "user_id", "executed_at", "trade_id"),
)

# Each user's reflection tone, "supportive" (the default, also for a user without a row)
# or "strict" (revision 0003).
reflection_settings = Table(
    "reflection_settings", metadata,
    Column("user_id", String(64), primary_key=True),
    Column("tone", String(16), nullable=False, server_default="supportive"),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("tone IN ('supportive', 'strict')", name="reflection_settings_tone_check"),
)

# Per-user calibration of the tag thresholds (revision 0004; bsopt_scorer.domain.calibration):
# the sufficient statistics of the user's scored trades (how many with a positive ATR, and
# the sum of their ln(ATR/close)), updated by every newly scored trade, and the thresholds
# computed from them (a Calibration.record(); NULL below 30 trades, and after the migration's
# backfill until the user's next scored trade; scoring then calibrates from the statistics).
user_calibration = Table(
    "user_calibration", metadata,
    Column("user_id", String(64), primary_key=True),
    Column("trades", BigInteger, nullable=False),
    Column("sum_log_atr_pct", Double, nullable=False),
    Column("thresholds", JSONB, nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("trades >= 0", name="user_calibration_trades_check"),
)
