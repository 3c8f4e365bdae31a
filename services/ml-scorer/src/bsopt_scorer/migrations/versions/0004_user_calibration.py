"""scorer schema: per-user calibration of the tag thresholds (issue 9 §1).

Revision ID: 0004
Revises: 0003

Frozen DDL: ``user_calibration`` (user_id -> trades, sum of ln(ATR/close), the calibrated
thresholds as JSON) and ``scored_trades.thresholds`` (the thresholds each trade was tagged
with; NULL for the rows before this revision, which used the population thresholds). The
statistics of users already scored are backfilled from their stored features by one
aggregate query; their thresholds column stays NULL until their next scored trade writes
it (scoring calibrates from the statistics meanwhile).
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

SCHEMA = "scorer"


def upgrade() -> None:
    op.add_column("scored_trades", sa.Column("thresholds", postgresql.JSONB(), nullable=True), schema=SCHEMA)
    op.create_table(
        "user_calibration",
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("trades", sa.BigInteger(), nullable=False),
        sa.Column("sum_log_atr_pct", sa.Double(), nullable=False),
        sa.Column("thresholds", postgresql.JSONB(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name="user_calibration_pkey"),
        sa.CheckConstraint("trades >= 0", name="user_calibration_trades_check"),
        schema=SCHEMA,
    )
    op.execute(
        f"""
        INSERT INTO {SCHEMA}.user_calibration (user_id, trades, sum_log_atr_pct)
        SELECT user_id, count(*), sum(ln((features->>'atr_14')::float8 / (features->>'close_usd')::float8))
        FROM {SCHEMA}.scored_trades
        WHERE (features->>'atr_14')::float8 > 0 AND (features->>'close_usd')::float8 > 0
        GROUP BY user_id
        """
    )


def downgrade() -> None:
    op.drop_table("user_calibration", schema=SCHEMA)
    op.drop_column("scored_trades", "thresholds", schema=SCHEMA)
