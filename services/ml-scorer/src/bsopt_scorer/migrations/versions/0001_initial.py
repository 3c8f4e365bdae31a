"""scorer schema: scored trades with their features, event tables.

Revision ID: 0001

Frozen DDL: the tables exactly as ``bsopt_scorer.models`` defined them when this revision
was written. Never import the models here; a model change needs a new revision.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from bsopt_common.migrations import create_event_tables_op, drop_event_tables_op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "scorer"


def upgrade() -> None:
    op.create_table(
        "scored_trades",
        sa.Column("trade_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("symbol", sa.String(length=16), nullable=False),
        sa.Column("side", sa.String(length=4), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("price_usd", sa.Float(), nullable=False),
        sa.Column("executed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("label", sa.String(length=12), nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("explanation", sa.Text(), nullable=False),
        sa.Column("reflection", sa.Text(), nullable=False),
        sa.Column("features", postgresql.JSONB(), nullable=False),
        sa.Column("scored_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("trade_id", name="scored_trades_pkey"),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_scorer_scored_trades_user_id", "scored_trades", ["user_id"], unique=False, schema=SCHEMA,
    )

    create_event_tables_op(SCHEMA)


def downgrade() -> None:
    drop_event_tables_op(SCHEMA)
    op.drop_index("ix_scorer_scored_trades_user_id", table_name="scored_trades", schema=SCHEMA)
    op.drop_table("scored_trades", schema=SCHEMA)
