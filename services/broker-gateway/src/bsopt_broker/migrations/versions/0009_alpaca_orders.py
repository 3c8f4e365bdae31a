"""broker schema: the journal of orders placed on Alpaca accounts, with their timing.

Revision ID: 0009_alpaca_orders
Revises: 0008_close_all_requests

Frozen DDL.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_alpaca_orders"
down_revision = "0008_close_all_requests"
branch_labels = None
depends_on = None

SCHEMA = "broker"


def upgrade() -> None:
    op.create_table(
        "alpaca_orders",
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("client_order_id", sa.String(length=128), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("broker_order_id", sa.String(length=64), nullable=False),
        sa.Column("account_kind", sa.String(length=8), nullable=False),
        sa.Column("symbol", sa.String(length=32), nullable=False),
        sa.Column("side", sa.String(length=4), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("filled_quantity", sa.BigInteger(), nullable=False),
        sa.Column("average_price", sa.Numeric(precision=28, scale=9), nullable=True),
        sa.Column("fee", sa.Numeric(precision=28, scale=9), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("reject_reason", sa.String(length=500), server_default="", nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("filled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("balance_checked_ms", sa.Float(), nullable=True),
        sa.Column("sent_ms", sa.Float(), nullable=True),
        sa.Column("acknowledged_ms", sa.Float(), nullable=True),
        sa.Column("filled_ms", sa.Float(), nullable=True),
        sa.Column("balance_unchecked", sa.Boolean(), server_default="false", nullable=False),
        sa.PrimaryKeyConstraint("account_id", "client_order_id", name="alpaca_orders_pkey"),
        schema=SCHEMA,
    )
    op.create_index("ix_broker_alpaca_orders_received_at", "alpaca_orders", ["received_at"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_index("ix_broker_alpaca_orders_received_at", table_name="alpaca_orders", schema=SCHEMA)
    op.drop_table("alpaca_orders", schema=SCHEMA)
