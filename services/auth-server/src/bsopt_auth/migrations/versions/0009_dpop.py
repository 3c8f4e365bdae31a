"""DPoP (RFC 9449): sender-constrained tokens

* ``auth.clients.dpop_bound_access_tokens`` (RFC 9449 §5.2 client metadata): the client
  must send a DPoP proof with every token request. False by default; true here for the
  CLI's public client ``bsopt-cli`` (``seed-dev`` sets it too).
* ``auth.token_families.dpop_jkt``: the RFC 7638 thumbprint of the key a public client's
  refresh tokens are bound to (§5): a refresh must come with a proof by that key.
* ``auth.dpop_proof_jtis``: proofs already used at the token endpoint (hex SHA-256 of key
  thumbprint and ``jti``), kept until their ``iat`` is too old to be accepted, so every
  worker and replica refuses a replay.

Downgrade drops the table and the columns (tokens issued meanwhile stay DPoP-bound until
they expire; refresh tokens become unbound).

Revision ID: 0009
Revises: 0008
Create Date: 2027-01-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

SCHEMA = "auth"


def upgrade() -> None:
    op.add_column("clients", sa.Column("dpop_bound_access_tokens", sa.Boolean(), nullable=False,
                                       server_default=sa.false()), schema=SCHEMA)
    op.execute(sa.text(f"UPDATE {SCHEMA}.clients SET dpop_bound_access_tokens = true WHERE client_id = 'bsopt-cli'"))
    op.add_column("token_families", sa.Column("dpop_jkt", sa.String(64), nullable=True), schema=SCHEMA)
    op.create_table(
        "dpop_proof_jtis",
        sa.Column("jti_hash", sa.String(64), primary_key=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
    )
    op.create_index("dpop_proof_jtis_expires_at_idx", "dpop_proof_jtis", ["expires_at"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_index("dpop_proof_jtis_expires_at_idx", table_name="dpop_proof_jtis", schema=SCHEMA)
    op.drop_table("dpop_proof_jtis", schema=SCHEMA)
    op.drop_column("token_families", "dpop_jkt", schema=SCHEMA)
    op.drop_column("clients", "dpop_bound_access_tokens", schema=SCHEMA)
