"""refresh tokens, token families and revoked access tokens (RFC 6749 §6, RFC 7009, RFC 7662)

Adds three tables:

``auth.token_families``: one row per redeemed authorization code (RFC 6749 §4.1.3), the
"grant" every token issued from it belongs to: ``id`` (the family id, carried in access
tokens as the ``sid`` claim), ``client_id``, ``user_id``, the granted ``scope`` and
``resource``, ``auth_time``, ``code_hash`` (unique: the code it came from, so a replayed
code revokes its family, RFC 6749 §4.1.2), ``expires_at`` (the absolute refresh-token
lifetime) and ``revoked_at`` (set on refresh-token reuse, code replay or RFC 7009
revocation; every token of the family is then inactive).

``auth.refresh_tokens``: ``token_hash`` (hex SHA-256; the token itself is never stored),
``family_id``, ``expires_at`` (the sliding idle lifetime, capped by the family's),
``used_at`` (set once, by a conditional UPDATE, when the token is rotated; presenting it
again is reuse, RFC 9700 §4.14.2) and ``created_at``.

``auth.revoked_access_tokens``: ``jti`` of an access token revoked through RFC 7009,
kept until ``expires_at`` (the token's own ``exp``), and ``revoked_at``.

Downgrade drops the three tables (issued refresh tokens stop working).

Revision ID: 0004
Revises: 0003
Create Date: 2027-01-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

SCHEMA = "auth"


def upgrade() -> None:
    op.create_table(
        "token_families",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "client_id", sa.String(255),
            sa.ForeignKey(f"{SCHEMA}.clients.client_id", ondelete="CASCADE"), nullable=False,
        ),
        sa.Column(
            "user_id", postgresql.UUID(as_uuid=True),
            sa.ForeignKey(f"{SCHEMA}.users.id", ondelete="CASCADE"), nullable=False,
        ),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("resource", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("auth_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("code_hash", sa.String(64), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("code_hash", name="token_families_code_hash_key"),
        schema=SCHEMA,
    )
    op.create_index("token_families_expires_at_idx", "token_families", ["expires_at"], schema=SCHEMA)

    op.create_table(
        "refresh_tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column(
            "family_id", postgresql.UUID(as_uuid=True),
            sa.ForeignKey(f"{SCHEMA}.token_families.id", ondelete="CASCADE"), nullable=False,
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        schema=SCHEMA,
    )
    op.create_index("refresh_tokens_family_id_idx", "refresh_tokens", ["family_id"], schema=SCHEMA)

    op.create_table(
        "revoked_access_tokens",
        sa.Column("jti", sa.String(255), primary_key=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        schema=SCHEMA,
    )
    op.create_index(
        "revoked_access_tokens_expires_at_idx", "revoked_access_tokens", ["expires_at"], schema=SCHEMA
    )


def downgrade() -> None:
    op.drop_index("revoked_access_tokens_expires_at_idx", "revoked_access_tokens", schema=SCHEMA)
    op.drop_table("revoked_access_tokens", schema=SCHEMA)
    op.drop_index("refresh_tokens_family_id_idx", "refresh_tokens", schema=SCHEMA)
    op.drop_table("refresh_tokens", schema=SCHEMA)
    op.drop_index("token_families_expires_at_idx", "token_families", schema=SCHEMA)
    op.drop_table("token_families", schema=SCHEMA)
