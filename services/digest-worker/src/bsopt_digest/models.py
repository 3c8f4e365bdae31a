"""Tables of schema ``digest`` (owned by digest-worker only)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from bsopt_common.db import amount_type

SCHEMA = "digest"
metadata = MetaData(schema=SCHEMA)

# The digest's own copy of each scored trade (a projection of trades.scored.v1).
trades = Table(
    "trades", metadata,
    Column("trade_id", String(64), primary_key=True),
    Column("user_id", String(64), nullable=False),
    Column("symbol", String(16), nullable=False),
    Column("side", String(4), nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("price", amount_type(), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("executed_at", DateTime(timezone=True), nullable=False),
    Column("week_start", Date, nullable=False),
    Column("label", String(12), nullable=False),
    #: When this row (or its label) was last written: a week whose trades were recorded
    #: after its digest was built is built again (revision 0003).
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_digest_trades_user_executed", "user_id", "executed_at"),
    Index("ix_digest_trades_recorded_at", "recorded_at"),
)

#: Per-user settings (revision 0003): the IANA time zone weeks are cut in.
user_settings = Table(
    "user_settings", metadata,
    Column("user_id", String(64), primary_key=True),
    Column("time_zone", String(64), nullable=False, server_default=text("'UTC'")),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

digests = Table(
    "digests", metadata,
    Column("digest_id", String(36), primary_key=True),
    Column("user_id", String(64), nullable=False, index=True),
    Column("period_start", Date, nullable=False),
    Column("period_end", Date, nullable=False),
    Column("trades", Integer, nullable=False),
    Column("label_counts", JSONB, nullable=False),
    Column("net_cash_flow", amount_type(), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("summary", Text, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # revision 0003: the weekly tick's digest
    Column("time_zone", String(64), nullable=False, server_default=text("'UTC'")),
    Column("pnl", amount_type(), nullable=True),
    Column("round_trips", Integer, nullable=False, server_default=text("0")),
    Column("best_decision", JSONB, nullable=True),
    Column("worst_decision", JSONB, nullable=True),
    Column("habit", Text, nullable=False, server_default=text("''")),
    Column("habit_label", String(12), nullable=False, server_default=text("''")),
    Column("previous_habit", Text, nullable=False, server_default=text("''")),
    Column("previous_habit_kept", Boolean, nullable=True),
    #: The latest ``trades.recorded_at`` of the week when it was built (null: built by an
    #: older version, per scored trade).
    Column("built_through", DateTime(timezone=True), nullable=True),
    UniqueConstraint("user_id", "period_start", name="digests_user_period_key"),
)
