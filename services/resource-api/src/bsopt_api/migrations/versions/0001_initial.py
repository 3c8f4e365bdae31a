"""api schema: coach_messages, digests, and the consumer's processed_events/outbox

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from bsopt_common.migrations import create_event_tables_op, drop_event_tables_op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "api"


def upgrade() -> None:
    # Only when missing: a service's own role owns its schema but may not CREATE in the
    # database, and CREATE SCHEMA IF NOT EXISTS checks that privilege first.
    op.execute(f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = '{SCHEMA}') "
               f'THEN CREATE SCHEMA "{SCHEMA}"; END IF; END $$')
    create_event_tables_op(SCHEMA)

    op.create_table(
        "coach_messages",
        sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=True),  # bigserial
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("trade_id", sa.String(255), nullable=False),
        sa.Column("payload", postgresql.JSONB(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.UniqueConstraint("trade_id", name="coach_messages_trade_id_key"),
        schema=SCHEMA,
    )
    op.create_index("coach_messages_user_seq_idx", "coach_messages", ["user_id", "seq"], schema=SCHEMA)

    op.create_table(
        "digests",
        sa.Column("digest_id", sa.String(255), primary_key=True),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("trades", sa.Integer(), nullable=False),
        sa.Column("label_counts", postgresql.JSONB(), nullable=False),
        sa.Column("net_cash_flow_usd", sa.Float(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        schema=SCHEMA,
    )
    op.create_index("digests_user_period_idx", "digests", ["user_id", "period_start"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_table("digests", schema=SCHEMA)
    op.drop_table("coach_messages", schema=SCHEMA)
    drop_event_tables_op(SCHEMA)
