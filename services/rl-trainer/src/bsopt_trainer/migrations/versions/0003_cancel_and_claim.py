"""trainer schema: a job's claim by a replica (still queued until it starts) and the
owner's cancel request of a running job.

Revision ID: 0003
Revises: 0002

Frozen DDL.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SCHEMA = "trainer"


def upgrade() -> None:
    op.add_column("training_jobs", sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
                  schema=SCHEMA)
    op.add_column("training_jobs", sa.Column("cancel_requested_at", sa.DateTime(timezone=True), nullable=True),
                  schema=SCHEMA)


def downgrade() -> None:
    op.drop_column("training_jobs", "cancel_requested_at", schema=SCHEMA)
    op.drop_column("training_jobs", "claimed_at", schema=SCHEMA)
