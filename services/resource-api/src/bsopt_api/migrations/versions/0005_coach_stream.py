"""api schema: the coach stream (issue 9 §3): ``coach_stream`` (every event of a user's
WebSocket stream, with the id clients resume from), its NOTIFY trigger (every replica
LISTENs on ``api_coach_stream``), ``coach_feedback`` and ``coach_notes``.

The existing ``coach_messages`` are copied into the stream with their ``seq`` as ``id``,
so a client's ``?after=<seq>`` cursor stays valid across the upgrade.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SCHEMA = "api"

#: The channel every replica LISTENs on (bsopt_api.stream.CHANNEL).
CHANNEL = "api_coach_stream"

# The whole event when it fits a NOTIFY payload (under 8000 bytes), else its id and user
# (listeners read the row). Sent at commit only, in commit order.
NOTIFY_FUNCTION = f"""
CREATE FUNCTION {SCHEMA}.coach_stream_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    full_event text;
BEGIN
    full_event := json_build_object('id', NEW.id, 'user_id', NEW.user_id, 'type', NEW.type,
                                    'payload', NEW.payload)::text;
    IF octet_length(full_event) < 7900 THEN
        PERFORM pg_notify('{CHANNEL}', full_event);
    ELSE
        PERFORM pg_notify('{CHANNEL}', json_build_object('id', NEW.id, 'user_id', NEW.user_id)::text);
    END IF;
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "coach_stream",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=True),  # bigserial
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("type", sa.String(40), nullable=False),
        sa.Column("dedupe_key", sa.String(400), nullable=True),
        sa.Column("payload", postgresql.JSONB(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.UniqueConstraint("dedupe_key", name="coach_stream_dedupe_key_key"),
        schema=SCHEMA,
    )
    op.create_index("coach_stream_user_id_idx", "coach_stream", ["user_id", "id"], schema=SCHEMA)
    op.execute(
        f"INSERT INTO {SCHEMA}.coach_stream (id, user_id, type, dedupe_key, payload, created_at) "
        f"SELECT seq, user_id, 'coach.reflect', 'coach.reflect:' || trade_id, payload - 'type', created_at "
        f"FROM {SCHEMA}.coach_messages ORDER BY seq"
    )
    op.execute(
        f"SELECT setval(pg_get_serial_sequence('{SCHEMA}.coach_stream', 'id'), "
        f"COALESCE((SELECT max(id) FROM {SCHEMA}.coach_stream), 0) + 1, false)"
    )
    op.execute(NOTIFY_FUNCTION)
    op.execute(f"CREATE TRIGGER coach_stream_notify AFTER INSERT ON {SCHEMA}.coach_stream "
               f"FOR EACH ROW EXECUTE FUNCTION {SCHEMA}.coach_stream_notify()")

    op.create_table(
        "coach_feedback",
        sa.Column("user_id", sa.String(255), primary_key=True),
        sa.Column("trade_id", sa.String(255), primary_key=True),
        sa.Column("rating", sa.String(4), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        schema=SCHEMA,
    )
    op.create_table(
        "coach_notes",
        sa.Column("note_id", sa.BigInteger(), primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("trade_id", sa.String(255), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        schema=SCHEMA,
    )
    op.create_index("coach_notes_user_trade_idx", "coach_notes", ["user_id", "trade_id", "note_id"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_index("coach_notes_user_trade_idx", table_name="coach_notes", schema=SCHEMA)
    op.drop_table("coach_notes", schema=SCHEMA)
    op.drop_table("coach_feedback", schema=SCHEMA)
    op.execute(f"DROP TRIGGER IF EXISTS coach_stream_notify ON {SCHEMA}.coach_stream")
    op.execute(f"DROP FUNCTION IF EXISTS {SCHEMA}.coach_stream_notify()")
    op.drop_index("coach_stream_user_id_idx", table_name="coach_stream", schema=SCHEMA)
    op.drop_table("coach_stream", schema=SCHEMA)
