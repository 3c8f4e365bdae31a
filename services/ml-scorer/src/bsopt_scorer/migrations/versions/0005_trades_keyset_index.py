"""scorer schema: the index of ListScoredTrades' keyset pages (user, executed_at, trade_id).

Revision ID: 0005
Revises: 0004

Frozen DDL.
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SCHEMA = "scorer"


def upgrade() -> None:
    op.create_index("ix_scorer_scored_trades_user_executed", "scored_trades", ["user_id", "executed_at", "trade_id"],
                    schema=SCHEMA)


def downgrade() -> None:
    op.drop_index("ix_scorer_scored_trades_user_executed", table_name="scored_trades", schema=SCHEMA)
