"""signing keys at rest: encrypted private parts, public JWK, revocation, timestamps

Replaces the plaintext ``private_jwk`` column by ``public_jwk`` plus the envelope
(``private_ciphertext``, ``private_nonce``, ``wrapped_dek``, ``kek_id``; AES-256-GCM,
see ``bsopt_auth.rfc7517.encryption``), adds ``deactivated_at`` / ``retired_at`` and the
``revoked`` status.

Existing plaintext keys are NOT encrypted here: every existing key is retired from
signing and loses its private part (the column is dropped). Keys that were ``active``
or ``previous`` become ``previous`` with ``deactivated_at = now()``: still published,
so tokens they signed keep verifying until the verification window passes, then the
server retires them. ``ensure_active_key`` creates a fresh, encrypted active key when
the server (or ``keys rotate``) next starts. This needs no KEK at migration time.

Downgrade deletes every signing key (the plaintext form is not recreated from
ciphertext); the server generates a new one on start.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEMA = "auth"
TABLE = "signing_keys"


def upgrade() -> None:
    op.add_column(TABLE, sa.Column("public_jwk", postgresql.JSONB(), nullable=True), schema=SCHEMA)
    # Public members of RSA (n, e) and EC (crv, x, y) JWKs; json nulls stripped.
    op.execute(
        f"""
        UPDATE "{SCHEMA}".{TABLE} SET public_jwk = jsonb_strip_nulls(jsonb_build_object(
            'kty', private_jwk->'kty', 'n', private_jwk->'n', 'e', private_jwk->'e',
            'crv', private_jwk->'crv', 'x', private_jwk->'x', 'y', private_jwk->'y'))
        """
    )
    op.alter_column(TABLE, "public_jwk", nullable=False, schema=SCHEMA)
    op.drop_column(TABLE, "private_jwk", schema=SCHEMA)

    op.add_column(TABLE, sa.Column("private_ciphertext", sa.LargeBinary(), nullable=True), schema=SCHEMA)
    op.add_column(TABLE, sa.Column("private_nonce", sa.LargeBinary(), nullable=True), schema=SCHEMA)
    op.add_column(TABLE, sa.Column("wrapped_dek", sa.LargeBinary(), nullable=True), schema=SCHEMA)
    op.add_column(TABLE, sa.Column("kek_id", sa.String(128), nullable=True), schema=SCHEMA)
    op.add_column(TABLE, sa.Column("deactivated_at", sa.DateTime(timezone=True), nullable=True), schema=SCHEMA)
    op.add_column(TABLE, sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True), schema=SCHEMA)

    op.execute(
        f"""UPDATE "{SCHEMA}".{TABLE} SET status = 'previous', deactivated_at = now()
            WHERE status IN ('active', 'previous')"""
    )
    op.execute(
        f"""UPDATE "{SCHEMA}".{TABLE} SET deactivated_at = now(), retired_at = now()
            WHERE status = 'retired'"""
    )

    op.drop_constraint("signing_keys_status_check", TABLE, schema=SCHEMA, type_="check")
    op.create_check_constraint(
        "signing_keys_status_check", TABLE, "status IN ('active', 'previous', 'retired', 'revoked')",
        schema=SCHEMA,
    )
    op.create_check_constraint(
        "signing_keys_sealed_parts_together", TABLE,
        "num_nulls(private_ciphertext, private_nonce, wrapped_dek, kek_id) IN (0, 4)", schema=SCHEMA,
    )
    op.create_check_constraint(
        "signing_keys_private_only_when_active", TABLE,
        "(status = 'active') = (private_ciphertext IS NOT NULL)", schema=SCHEMA,
    )


def downgrade() -> None:
    op.execute(f'DELETE FROM "{SCHEMA}".{TABLE}')
    op.drop_constraint("signing_keys_private_only_when_active", TABLE, schema=SCHEMA, type_="check")
    op.drop_constraint("signing_keys_sealed_parts_together", TABLE, schema=SCHEMA, type_="check")
    op.drop_constraint("signing_keys_status_check", TABLE, schema=SCHEMA, type_="check")
    op.create_check_constraint(
        "signing_keys_status_check", TABLE, "status IN ('active', 'previous', 'retired')", schema=SCHEMA,
    )
    for column in ("retired_at", "deactivated_at", "kek_id", "wrapped_dek", "private_nonce",
                   "private_ciphertext", "public_jwk"):
        op.drop_column(TABLE, column, schema=SCHEMA)
    op.add_column(TABLE, sa.Column("private_jwk", postgresql.JSONB(), nullable=False), schema=SCHEMA)
