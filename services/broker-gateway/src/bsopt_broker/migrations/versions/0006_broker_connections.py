"""broker schema: broker accounts users connect from the API, and started OAuth connections.

Revision ID: 0006_broker_connections
Revises: 0005_sell_rules

Frozen DDL. ``credentials`` and ``code_verifier`` hold AES-256-GCM ciphertext only
(``bsopt_broker.connections.crypto``).
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_broker_connections"
down_revision = "0005_sell_rules"
branch_labels = None
depends_on = None

SCHEMA = "broker"


def upgrade() -> None:
    op.create_table(
        "broker_connections",
        sa.Column("connection_id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("broker", sa.String(length=16), nullable=False),
        sa.Column("method", sa.String(length=8), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("account_kind", sa.String(length=8), nullable=False),
        sa.Column("allow_live", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("scope", sa.String(length=200), server_default="", nullable=False),
        sa.Column("credentials", sa.LargeBinary(), nullable=True),
        sa.Column("credentials_key_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("connection_id", name="broker_connections_pkey"),
        schema=SCHEMA,
    )
    op.create_index("ix_broker_broker_connections_user_id", "broker_connections", ["user_id"], schema=SCHEMA)
    op.create_table(
        "broker_oauth_states",
        sa.Column("state_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("connection_id", sa.String(length=36), nullable=False),
        sa.Column("broker", sa.String(length=16), nullable=False),
        sa.Column("account_kind", sa.String(length=8), nullable=False),
        sa.Column("allow_live", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("code_verifier", sa.LargeBinary(), nullable=False),
        sa.Column("redirect_uri", sa.String(length=500), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("state_hash", name="broker_oauth_states_pkey"),
        schema=SCHEMA,
    )
    op.create_index("ix_broker_broker_oauth_states_expires_at", "broker_oauth_states", ["expires_at"],
                    schema=SCHEMA)


def downgrade() -> None:
    op.drop_index("ix_broker_broker_oauth_states_expires_at", table_name="broker_oauth_states", schema=SCHEMA)
    op.drop_table("broker_oauth_states", schema=SCHEMA)
    op.drop_index("ix_broker_broker_connections_user_id", table_name="broker_connections", schema=SCHEMA)
    op.drop_table("broker_connections", schema=SCHEMA)
