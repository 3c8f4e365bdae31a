"""broker schema: per-user sell rules (stop-loss / take-profit) of an account.

Revision ID: 0005_sell_rules
Revises: 0003

Frozen DDL.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_sell_rules"
down_revision = "0003"
branch_labels = None
depends_on = None

SCHEMA = "broker"


def upgrade() -> None:
    op.create_table(
        "sell_rules",
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("stop_loss_pct", sa.Float(), nullable=True),
        sa.Column("take_profit_pct", sa.Float(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "account_id", name="sell_rules_pkey"),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("sell_rules", schema=SCHEMA)
