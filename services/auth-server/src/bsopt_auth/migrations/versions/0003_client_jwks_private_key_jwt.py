"""client JWKS and private_key_jwt: ``clients.jwks``, the credential CHECKs, used assertion jtis

Adds the nullable JSONB ``auth.clients.jwks`` (RFC 7591 §2: the client's public keys)
and the table ``auth.client_assertion_jtis`` (``client_id``, ``jti``, ``expires_at``)
that makes each RFC 7523 client assertion single-use until it expires.

Replaces the CHECK ``clients_secret_matches_type`` (``(client_type = 'public') =
(client_secret_hash IS NULL)``), which a confidential ``private_key_jwt`` client (no
secret) cannot satisfy, by ``clients_credentials_match_method``: public clients use
``none`` and hold neither a secret hash nor keys; ``client_secret_basic`` /
``client_secret_post`` clients hold a secret hash and no keys; ``private_key_jwt``
clients hold keys and no secret hash. ``clients_jwks_public_only`` refuses a JWKS that
is not a non-empty ``keys`` array or that carries a private or symmetric member.

Existing rows satisfy the new CHECKs as they are (no ``jwks``; every 0002 row used
``none`` or a secret method): secret clients keep working unchanged.

Downgrade deletes the ``private_key_jwt`` clients (0002 cannot authenticate them; their
authorization codes go with them), then restores the old CHECK.

Revision ID: 0003
Revises: 0002
Create Date: 2027-01-15
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SCHEMA = "auth"
TABLE = "clients"

# Copies, not imports of the models' constants: a revision must not change when the
# models do.
CREDENTIALS_MATCH_METHOD = (
    "(client_type = 'public' AND token_endpoint_auth_method = 'none'"
    " AND client_secret_hash IS NULL AND jwks IS NULL)"
    " OR (client_type = 'confidential'"
    " AND token_endpoint_auth_method IN ('client_secret_basic', 'client_secret_post')"
    " AND client_secret_hash IS NOT NULL AND jwks IS NULL)"
    " OR (client_type = 'confidential' AND token_endpoint_auth_method = 'private_key_jwt'"
    " AND client_secret_hash IS NULL AND jwks IS NOT NULL)"
)
JWKS_PUBLIC_ONLY = (
    "jwks IS NULL OR (jsonb_typeof(jwks->'keys') = 'array' AND jsonb_array_length(jwks->'keys') > 0"
    " AND NOT jwks @? '$.keys[*] ? (exists(@.d) || exists(@.p) || exists(@.q) || exists(@.dp)"
    " || exists(@.dq) || exists(@.qi) || exists(@.oth) || exists(@.k))')"
)


def upgrade() -> None:
    op.add_column(TABLE, sa.Column("jwks", postgresql.JSONB(), nullable=True), schema=SCHEMA)
    op.drop_constraint("clients_secret_matches_type", TABLE, schema=SCHEMA, type_="check")
    op.create_check_constraint("clients_credentials_match_method", TABLE, CREDENTIALS_MATCH_METHOD,
                               schema=SCHEMA)
    op.create_check_constraint("clients_jwks_public_only", TABLE, JWKS_PUBLIC_ONLY, schema=SCHEMA)

    op.create_table(
        "client_assertion_jtis",
        sa.Column(
            "client_id", sa.String(255),
            sa.ForeignKey(f"{SCHEMA}.clients.client_id", ondelete="CASCADE"), primary_key=True,
        ),
        sa.Column("jti", sa.String(255), primary_key=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
    )
    op.create_index(
        "client_assertion_jtis_expires_at_idx", "client_assertion_jtis", ["expires_at"], schema=SCHEMA
    )


def downgrade() -> None:
    op.drop_index("client_assertion_jtis_expires_at_idx", "client_assertion_jtis", schema=SCHEMA)
    op.drop_table("client_assertion_jtis", schema=SCHEMA)
    op.execute(f"""DELETE FROM "{SCHEMA}".{TABLE} WHERE token_endpoint_auth_method = 'private_key_jwt'""")
    op.drop_constraint("clients_jwks_public_only", TABLE, schema=SCHEMA, type_="check")
    op.drop_constraint("clients_credentials_match_method", TABLE, schema=SCHEMA, type_="check")
    op.create_check_constraint(
        "clients_secret_matches_type", TABLE, "(client_type = 'public') = (client_secret_hash IS NULL)",
        schema=SCHEMA,
    )
    op.drop_column(TABLE, "jwks", schema=SCHEMA)
