"""digest schema: trade projection, weekly digests, event tables.

Revision ID: 0001

Frozen DDL: the tables exactly as ``bsopt_digest.models`` defined them when this revision
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

SCHEMA = "digest"


def upgrade() -> None:
    # The digest's own copy of each scored trade (a projection of trades.scored.v1).
    op.create_table(
        "trades",
        sa.Column("trade_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("symbol", sa.String(length=16), nullable=False),
        sa.Column("side", sa.String(length=4), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("price_usd", sa.Float(), nullable=False),
        sa.Column("executed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("week_start", sa.Date(), nullable=False),
        sa.Column("label", sa.String(length=12), nullable=False),
        sa.PrimaryKeyConstraint("trade_id", name="trades_pkey"),
        schema=SCHEMA,
    )

    op.create_table(
        "digests",
        sa.Column("digest_id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("trades", sa.Integer(), nullable=False),
        sa.Column("label_counts", postgresql.JSONB(), nullable=False),
        sa.Column("net_cash_flow_usd", sa.Float(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("digest_id", name="digests_pkey"),
        schema=SCHEMA,
    )
    op.create_index("ix_digest_digests_user_id", "digests", ["user_id"], unique=False, schema=SCHEMA)

    create_event_tables_op(SCHEMA)


def downgrade() -> None:
    drop_event_tables_op(SCHEMA)
    op.drop_index("ix_digest_digests_user_id", table_name="digests", schema=SCHEMA)
    op.drop_table("digests", schema=SCHEMA)
    op.drop_table("trades", schema=SCHEMA)
