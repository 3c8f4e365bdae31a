"""broker schema: imported trades are deduplicated per user, by (user_id, broker, trade_id).

Revision ID: 0003
Revises: 0002

Frozen DDL. Before: one row per (broker, trade_id), so a venue trade imported by one
user could never be imported by another. The downgrade fails (duplicate key) if two
users have imported the same trade since.
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SCHEMA = "broker"


def upgrade() -> None:
    op.drop_constraint("imported_trades_pkey", "imported_trades", type_="primary", schema=SCHEMA)
    op.create_primary_key("imported_trades_pkey", "imported_trades", ["user_id", "broker", "trade_id"],
                          schema=SCHEMA)


def downgrade() -> None:
    op.drop_constraint("imported_trades_pkey", "imported_trades", type_="primary", schema=SCHEMA)
    op.create_primary_key("imported_trades_pkey", "imported_trades", ["broker", "trade_id"], schema=SCHEMA)
