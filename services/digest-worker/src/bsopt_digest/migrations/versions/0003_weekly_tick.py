"""digest schema: weekly digests built by a weekly tick (issue 9 §2).

Revision ID: 0003
Revises: 0002

Frozen DDL: per-user time zones (``user_settings``), ``trades.recorded_at`` (when a
trade was last written, so a week with trades recorded after its digest is built again),
the digest's P&L, decisions and habits, and one digest per (user, week start).
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SCHEMA = "digest"


def upgrade() -> None:
    op.create_table(
        "user_settings",
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("time_zone", sa.String(length=64), server_default=sa.text("'UTC'"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name="user_settings_pkey"),
        schema=SCHEMA,
    )
    op.add_column("trades", sa.Column("recorded_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                                      nullable=False), schema=SCHEMA)
    op.create_index("ix_digest_trades_user_executed", "trades", ["user_id", "executed_at"], unique=False,
                    schema=SCHEMA)
    op.create_index("ix_digest_trades_recorded_at", "trades", ["recorded_at"], unique=False, schema=SCHEMA)
    columns = [
        sa.Column("time_zone", sa.String(length=64), server_default=sa.text("'UTC'"), nullable=False),
        sa.Column("pnl", sa.Numeric(precision=28, scale=9), nullable=True),
        sa.Column("round_trips", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("best_decision", postgresql.JSONB(), nullable=True),
        sa.Column("worst_decision", postgresql.JSONB(), nullable=True),
        sa.Column("habit", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("habit_label", sa.String(length=12), server_default=sa.text("''"), nullable=False),
        sa.Column("previous_habit", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("previous_habit_kept", sa.Boolean(), nullable=True),
        sa.Column("built_through", sa.DateTime(timezone=True), nullable=True),
    ]
    for column in columns:
        op.add_column("digests", column, schema=SCHEMA)
    op.create_unique_constraint("digests_user_period_key", "digests", ["user_id", "period_start"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_constraint("digests_user_period_key", "digests", schema=SCHEMA, type_="unique")
    for name in ("built_through", "previous_habit_kept", "previous_habit", "habit_label", "habit", "worst_decision",
                 "best_decision", "round_trips", "pnl", "time_zone"):
        op.drop_column("digests", name, schema=SCHEMA)
    op.drop_index("ix_digest_trades_recorded_at", table_name="trades", schema=SCHEMA)
    op.drop_index("ix_digest_trades_user_executed", table_name="trades", schema=SCHEMA)
    op.drop_column("trades", "recorded_at", schema=SCHEMA)
    op.drop_table("user_settings", schema=SCHEMA)
