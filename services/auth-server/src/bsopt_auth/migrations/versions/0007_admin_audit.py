"""administration and audit: disabled users, audit events, transactional outbox

* ``auth.users.disabled_at``: set by ``users disable`` (CLI and ``/admin`` API); a
  disabled user cannot log in, refresh (RFC 6749 §6), approve a device (RFC 8628) or be
  the subject of a token exchange (RFC 8693). NULL: enabled.
* ``auth.audit_events``: one row per security-relevant fact (login, token issued or
  refused, refresh-token reuse, account lock, client/user/key administration):
  ``event_type``, ``occurred_at``, ``user_id``, ``client_id``, ``ip_hash`` (hex
  HMAC-SHA256 of the address with the throttle key secret; no raw address),
  ``outcome`` (success / failure), ``reason`` and non-secret ``details`` (JSON).
  No FK to users or clients: the trail outlives what it mentions.
* ``auth.outbox`` and ``auth.processed_events`` (bsopt_common's event tables): audit
  events are published on ``auth.audit.v1`` through the outbox, in the same transaction.

Downgrade drops the event tables, the audit trail and the column (disabled users are
enabled again).

Revision ID: 0007
Revises: 0006
Create Date: 2027-01-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from bsopt_common.migrations import create_event_tables_op, drop_event_tables_op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

SCHEMA = "auth"
TABLE = "audit_events"


def upgrade() -> None:
    op.add_column("users", sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True), schema=SCHEMA)
    op.create_table(
        TABLE,
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("user_id", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("client_id", sa.String(255), nullable=True),
        sa.Column("ip_hash", sa.String(64), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("details", postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.CheckConstraint("outcome IN ('success', 'failure')", name="audit_events_outcome_check"),
        schema=SCHEMA,
    )
    op.create_index("audit_events_occurred_at_idx", TABLE, ["occurred_at"], schema=SCHEMA)
    op.create_index("audit_events_user_id_idx", TABLE, ["user_id"], schema=SCHEMA)
    op.create_index("audit_events_client_id_idx", TABLE, ["client_id"], schema=SCHEMA)
    create_event_tables_op(SCHEMA)


def downgrade() -> None:
    drop_event_tables_op(SCHEMA)
    op.drop_index("audit_events_client_id_idx", table_name=TABLE, schema=SCHEMA)
    op.drop_index("audit_events_user_id_idx", table_name=TABLE, schema=SCHEMA)
    op.drop_index("audit_events_occurred_at_idx", table_name=TABLE, schema=SCHEMA)
    op.drop_table(TABLE, schema=SCHEMA)
    op.drop_column("users", "disabled_at", schema=SCHEMA)
