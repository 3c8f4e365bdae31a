"""device authorization grant (RFC 8628): pending device and user codes

Adds ``auth.device_authorizations``: one row per device authorization request (RFC 8628
§3.1): ``device_code_hash`` (hex SHA-256; the device code itself is never stored),
``user_code_hash`` (unique; hex SHA-256 of the normalised 8-letter user code),
``client_id``, the requested ``scope`` and ``resource`` (RFC 8707), ``status`` (pending,
approved, denied; approved carries ``user_id`` and ``auth_time``), ``interval`` (the
polling interval, raised by ``slow_down``), ``last_polled_at``, ``expires_at`` and
``consumed_at`` (set once, when the token endpoint redeems the approved code).

Downgrade drops the table (pending device logins are lost).

Revision ID: 0006
Revises: 0005
Create Date: 2027-01-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

SCHEMA = "auth"
TABLE = "device_authorizations"


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("device_code_hash", sa.String(64), primary_key=True),
        sa.Column("user_code_hash", sa.String(64), nullable=False),
        sa.Column("client_id", sa.String(255), sa.ForeignKey(f"{SCHEMA}.clients.client_id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("resource", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("user_id", postgresql.UUID(as_uuid=True), sa.ForeignKey(f"{SCHEMA}.users.id", ondelete="CASCADE"),
                  nullable=True),
        sa.Column("auth_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("interval", sa.Integer(), nullable=False),
        sa.Column("last_polled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("consumed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("status IN ('pending', 'approved', 'denied')", name="device_authorizations_status_check"),
        sa.CheckConstraint("(status = 'approved') = (user_id IS NOT NULL)", name="device_authorizations_user_check"),
        sa.UniqueConstraint("user_code_hash", name="device_authorizations_user_code_hash_key"),
        schema=SCHEMA,
    )
    op.create_index("device_authorizations_expires_at_idx", TABLE, ["expires_at"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_index("device_authorizations_expires_at_idx", table_name=TABLE, schema=SCHEMA)
    op.drop_table(TABLE, schema=SCHEMA)
