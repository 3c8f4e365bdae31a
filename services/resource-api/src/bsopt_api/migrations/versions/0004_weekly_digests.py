"""api schema: the weekly tick's digest fields on api.digests (issue 9 §2): time zone,
realised P&L, round trips, best and worst decision, habit, last week's habit kept.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

SCHEMA = "api"

COLUMNS = (
    ("time_zone", sa.String(64)),
    ("pnl", sa.Numeric(28, 9)),
    ("round_trips", sa.Integer()),
    ("best_decision", postgresql.JSONB()),
    ("worst_decision", postgresql.JSONB()),
    ("habit", sa.Text()),
    ("habit_label", sa.String(12)),
    ("previous_habit", sa.Text()),
    ("previous_habit_kept", sa.Boolean()),
)


def upgrade() -> None:
    for name, type_ in COLUMNS:
        op.add_column("digests", sa.Column(name, type_, nullable=True), schema=SCHEMA)


def downgrade() -> None:
    for name, _ in reversed(COLUMNS):
        op.drop_column("digests", name, schema=SCHEMA)
