"""Tables of schema ``digest`` (owned by digest-worker only)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Date, DateTime, Integer, MetaData, String, Table, Text, func
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
)
