"""api schema: dpop_proof_jtis, the DPoP replay store shared by every replica
(bsopt_common.security.dpop_store).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SCHEMA = "api"


def upgrade() -> None:
    op.create_table(
        "dpop_proof_jtis",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
    )
    op.create_index("dpop_proof_jtis_expires_at_idx", "dpop_proof_jtis", ["expires_at"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_index("dpop_proof_jtis_expires_at_idx", table_name="dpop_proof_jtis", schema=SCHEMA)
    op.drop_table("dpop_proof_jtis", schema=SCHEMA)
