"""authorization-server sessions, RP-initiated logout, consent

* ``auth.sessions``: one row per browser sign-in (the session cookie). ``id`` is the hex
  SHA-256 of the cookie value (the value itself is never stored), ``user_id``,
  ``auth_time`` (when the password was checked: OIDC ``auth_time``), ``created_at``,
  ``last_seen_at`` (idle expiry counts from it), ``expires_at`` (absolute expiry) and
  ``ended_at`` (RP-initiated logout, or a newer sign-in in the same browser).
* ``auth.consents``: the scopes a user granted a client that is not first-party, one row
  per (user, client); a later request for a subset skips the consent screen.
* ``auth.clients.first_party`` (false by default; true for the suite's own clients,
  set here for existing rows and by ``seed-dev``): no consent screen.
* ``auth.clients.post_logout_redirect_uris`` (OpenID Connect RP-Initiated Logout 1.0 §3.1):
  where ``/oauth2/logout`` may send the browser back to; exact match.
* ``auth.authorization_codes.session_id`` and ``auth.token_families.session_id``: the
  session a code was issued in, copied to its token family at the code exchange, so a
  logout revokes the refresh tokens (and, through ``sid``, the access tokens) issued
  within that session. ``ON DELETE SET NULL``.

Downgrade drops the columns and tables (every browser signs in again; remembered
consents are forgotten).

Revision ID: 0008
Revises: 0007
Create Date: 2027-01-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

SCHEMA = "auth"
#: The suite's own clients (``bsopt_auth.seed.DEV_CLIENTS`` at this revision): first-party.
FIRST_PARTY_CLIENTS = ("bsopt-cli", "resource-api", "rl-trainer", "broker-gateway", "ml-scorer", "digest-worker",
                       "bsopt-admin")


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("user_id", postgresql.UUID(as_uuid=True), sa.ForeignKey(f"{SCHEMA}.users.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("auth_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        schema=SCHEMA,
    )
    op.create_index("sessions_user_id_idx", "sessions", ["user_id"], schema=SCHEMA)
    op.create_index("sessions_expires_at_idx", "sessions", ["expires_at"], schema=SCHEMA)
    op.create_table(
        "consents",
        sa.Column("user_id", postgresql.UUID(as_uuid=True), sa.ForeignKey(f"{SCHEMA}.users.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("client_id", sa.String(255), sa.ForeignKey(f"{SCHEMA}.clients.client_id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("scopes", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        schema=SCHEMA,
    )
    op.create_index("consents_client_id_idx", "consents", ["client_id"], schema=SCHEMA)
    op.add_column("clients", sa.Column("first_party", sa.Boolean(), nullable=False, server_default=sa.false()),
                  schema=SCHEMA)
    op.add_column("clients", sa.Column("post_logout_redirect_uris", postgresql.ARRAY(sa.Text()), nullable=False,
                                       server_default=sa.text("'{}'")), schema=SCHEMA)
    op.execute(
        sa.text(f"UPDATE {SCHEMA}.clients SET first_party = true WHERE client_id = ANY(:ids)")
        .bindparams(sa.bindparam("ids", list(FIRST_PARTY_CLIENTS), type_=postgresql.ARRAY(sa.Text())))
    )
    for table in ("authorization_codes", "token_families"):
        op.add_column(table, sa.Column("session_id", sa.String(64), sa.ForeignKey(
            f"{SCHEMA}.sessions.id", ondelete="SET NULL", name=f"{table}_session_id_fkey"), nullable=True),
            schema=SCHEMA)
    op.create_index("token_families_session_id_idx", "token_families", ["session_id"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_index("token_families_session_id_idx", table_name="token_families", schema=SCHEMA)
    for table in ("token_families", "authorization_codes"):
        op.drop_column(table, "session_id", schema=SCHEMA)
    op.drop_column("clients", "post_logout_redirect_uris", schema=SCHEMA)
    op.drop_column("clients", "first_party", schema=SCHEMA)
    op.drop_index("consents_client_id_idx", table_name="consents", schema=SCHEMA)
    op.drop_table("consents", schema=SCHEMA)
    op.drop_index("sessions_expires_at_idx", table_name="sessions", schema=SCHEMA)
    op.drop_index("sessions_user_id_idx", table_name="sessions", schema=SCHEMA)
    op.drop_table("sessions", schema=SCHEMA)
