"""login throttling: failure counters and temporary locks per hashed key

Adds ``auth.login_throttle``: one row per throttle key (``bsopt_auth.throttle``), the
key being ``<scope>:<kind>:<hex HMAC-SHA256 of the value>`` (a login account, a
client_id or an IP address; nothing raw is stored), its consecutive ``failures``,
``last_failure_at`` (the exponential backoff runs from it) and ``locked_until`` (a
temporary account lock). Every replica updates the same rows with one
``INSERT ... ON CONFLICT DO UPDATE ... RETURNING`` per failure.

Downgrade drops the table (every counter and lock is forgotten).

Revision ID: 0005
Revises: 0004
Create Date: 2027-01-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SCHEMA = "auth"
TABLE = "login_throttle"


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("key", sa.String(160), primary_key=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("failures >= 0", name="login_throttle_failures_check"),
        schema=SCHEMA,
    )
    op.create_index("login_throttle_last_failure_at_idx", TABLE, ["last_failure_at"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_index("login_throttle_last_failure_at_idx", table_name=TABLE, schema=SCHEMA)
    op.drop_table(TABLE, schema=SCHEMA)
