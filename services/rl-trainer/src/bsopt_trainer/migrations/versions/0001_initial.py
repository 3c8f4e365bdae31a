"""trainer schema: training jobs, paper-trading runs, event tables.

Revision ID: 0001

Frozen DDL: the tables exactly as ``bsopt_trainer.models`` defined them when this
revision was written. Never import the models here; a model change needs a new revision.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from bsopt_common.migrations import create_event_tables_op, drop_event_tables_op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "trainer"


def upgrade() -> None:
    op.create_table(
        "training_jobs",
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("spec", postgresql.JSONB(), nullable=False),
        # queued | running | succeeded | failed
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("timesteps_done", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("total_timesteps", sa.BigInteger(), nullable=False),
        sa.Column("results", postgresql.JSONB(), nullable=True),
        sa.Column("error", sa.Text(), server_default="", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("job_id", name="training_jobs_pkey"),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_trainer_training_jobs_user_id", "training_jobs", ["user_id"], unique=False, schema=SCHEMA,
    )

    op.create_table(
        "paper_runs",
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("orders", sa.Integer(), nullable=False),
        sa.Column("fills", sa.Integer(), nullable=False),
        sa.Column("rejected", sa.Integer(), nullable=False),
        sa.Column("final_equity_usd", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("run_id", name="paper_runs_pkey"),
        schema=SCHEMA,
    )
    op.create_index("ix_trainer_paper_runs_job_id", "paper_runs", ["job_id"], unique=False, schema=SCHEMA)

    create_event_tables_op(SCHEMA)


def downgrade() -> None:
    drop_event_tables_op(SCHEMA)
    op.drop_index("ix_trainer_paper_runs_job_id", table_name="paper_runs", schema=SCHEMA)
    op.drop_table("paper_runs", schema=SCHEMA)
    op.drop_index("ix_trainer_training_jobs_user_id", table_name="training_jobs", schema=SCHEMA)
    op.drop_table("training_jobs", schema=SCHEMA)
