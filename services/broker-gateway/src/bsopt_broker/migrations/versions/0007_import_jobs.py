"""broker schema: background trade import jobs (StartImport / GetImport).

Revision ID: 0007_import_jobs
Revises: 0006_broker_connections

Frozen DDL.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_import_jobs"
down_revision = "0006_broker_connections"
branch_labels = None
depends_on = None

SCHEMA = "broker"


def upgrade() -> None:
    op.create_table(
        "import_jobs",
        sa.Column("import_id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("broker", sa.String(length=16), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("account_kind", sa.String(length=8), nullable=True),
        sa.Column("pages_fetched", sa.Integer(), server_default="0", nullable=False),
        sa.Column("fills_seen", sa.Integer(), server_default="0", nullable=False),
        sa.Column("trades_imported", sa.Integer(), server_default="0", nullable=False),
        sa.Column("duplicates_skipped", sa.Integer(), server_default="0", nullable=False),
        sa.Column("error", sa.String(length=500), server_default="", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="1", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("import_id", name="import_jobs_pkey"),
        schema=SCHEMA,
    )
    op.create_index("ix_broker_import_jobs_user_id", "import_jobs", ["user_id"], schema=SCHEMA)
    op.create_index("ix_broker_import_jobs_status", "import_jobs", ["status"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_index("ix_broker_import_jobs_status", table_name="import_jobs", schema=SCHEMA)
    op.drop_index("ix_broker_import_jobs_user_id", table_name="import_jobs", schema=SCHEMA)
    op.drop_table("import_jobs", schema=SCHEMA)
