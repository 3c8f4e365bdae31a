"""scorer schema: who wrote each reflection, and each user's reflection tone.

Revision ID: 0003
Revises: 0002

Frozen DDL: ``scored_trades.reflection_provider`` ("template" for the rows before it) and
``reflection_settings`` (user_id -> tone, supportive or strict).
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SCHEMA = "scorer"


def upgrade() -> None:
    op.add_column(
        "scored_trades",
        sa.Column("reflection_provider", sa.String(length=64), server_default="template", nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "reflection_settings",
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("tone", sa.String(length=16), server_default="supportive", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name="reflection_settings_pkey"),
        sa.CheckConstraint("tone IN ('supportive', 'strict')", name="reflection_settings_tone_check"),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("reflection_settings", schema=SCHEMA)
    op.drop_column("scored_trades", "reflection_provider", schema=SCHEMA)
