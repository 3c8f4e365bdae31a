"""broker schema: durable close-all requests of the sell module (CloseAllPositions).

Revision ID: 0008_close_all_requests
Revises: 0007_import_jobs

Frozen DDL.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_close_all_requests"
down_revision = "0007_import_jobs"
branch_labels = None
depends_on = None

SCHEMA = "broker"


def upgrade() -> None:
    op.create_table(
        "close_all_requests",
        sa.Column("request_id", sa.String(length=36), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("positions_sold", sa.Integer(), server_default="0", nullable=False),
        sa.Column("positions_refused", sa.Integer(), server_default="0", nullable=False),
        sa.Column("error", sa.String(length=500), server_default="", nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("request_id", name="close_all_requests_pkey"),
        schema=SCHEMA,
    )
    op.create_index("ix_broker_close_all_requests_account_id", "close_all_requests", ["account_id"], schema=SCHEMA)
    op.create_index("ix_broker_close_all_requests_status", "close_all_requests", ["status"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_index("ix_broker_close_all_requests_status", table_name="close_all_requests", schema=SCHEMA)
    op.drop_index("ix_broker_close_all_requests_account_id", table_name="close_all_requests", schema=SCHEMA)
    op.drop_table("close_all_requests", schema=SCHEMA)
