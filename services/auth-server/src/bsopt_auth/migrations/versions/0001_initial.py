"""auth schema: users, clients, authorization codes, signing keys

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "auth"


def _now() -> sa.TextClause:
    return sa.text("now()")


def upgrade() -> None:
    # Only when missing: a service's own role owns its schema but may not CREATE in the
    # database, and CREATE SCHEMA IF NOT EXISTS checks that privilege first.
    op.execute(f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = '{SCHEMA}') "
               f'THEN CREATE SCHEMA "{SCHEMA}"; END IF; END $$')

    op.create_table(
        "users",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("username", sa.String(255), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.UniqueConstraint("username", name="users_username_key"),
        schema=SCHEMA,
    )

    op.create_table(
        "clients",
        sa.Column("client_id", sa.String(255), primary_key=True),
        sa.Column("client_secret_hash", sa.Text(), nullable=True),
        sa.Column("client_type", sa.String(16), nullable=False),
        sa.Column("redirect_uris", postgresql.ARRAY(sa.Text()), nullable=False, server_default="{}"),
        sa.Column("grant_types", postgresql.ARRAY(sa.Text()), nullable=False, server_default="{}"),
        sa.Column("allowed_scopes", postgresql.ARRAY(sa.Text()), nullable=False, server_default="{}"),
        sa.Column("allowed_resources", postgresql.ARRAY(sa.Text()), nullable=False, server_default="{}"),
        sa.Column("token_endpoint_auth_method", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.CheckConstraint("client_type IN ('public', 'confidential')", name="clients_client_type_check"),
        sa.CheckConstraint(
            "(client_type = 'public') = (client_secret_hash IS NULL)", name="clients_secret_matches_type"
        ),
        schema=SCHEMA,
    )

    op.create_table(
        "authorization_codes",
        sa.Column("code_hash", sa.String(64), primary_key=True),
        sa.Column(
            "client_id", sa.String(255),
            sa.ForeignKey(f"{SCHEMA}.clients.client_id", ondelete="CASCADE"), nullable=False,
        ),
        sa.Column(
            "user_id", postgresql.UUID(as_uuid=True),
            sa.ForeignKey(f"{SCHEMA}.users.id", ondelete="CASCADE"), nullable=False,
        ),
        sa.Column("redirect_uri", sa.Text(), nullable=False),
        sa.Column("code_challenge", sa.String(128), nullable=False),
        sa.Column("code_challenge_method", sa.String(8), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("resource", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("nonce", sa.Text(), nullable=True),
        sa.Column("auth_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("consumed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        schema=SCHEMA,
    )
    op.create_index(
        "authorization_codes_expires_at_idx", "authorization_codes", ["expires_at"], schema=SCHEMA
    )

    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(64), primary_key=True),
        sa.Column("private_jwk", postgresql.JSONB(), nullable=False),
        sa.Column("alg", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.CheckConstraint("status IN ('active', 'previous', 'retired')", name="signing_keys_status_check"),
        schema=SCHEMA,
    )
    op.create_index(
        "signing_keys_one_active_idx", "signing_keys", ["status"], unique=True, schema=SCHEMA,
        postgresql_where=sa.text("status = 'active'"),
    )


def downgrade() -> None:
    op.drop_table("signing_keys", schema=SCHEMA)
    op.drop_table("authorization_codes", schema=SCHEMA)
    op.drop_table("clients", schema=SCHEMA)
    op.drop_table("users", schema=SCHEMA)
