"""api schema: money as a type (the digest projection's exact net cash flow beside its
currency).

Revision ID: 0002
Revises: 0001

Frozen DDL; see bsopt_common.migrations.usd_float_to_amount_op.
"""

from bsopt_common.migrations import amount_to_usd_float_op, usd_float_to_amount_op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEMA = "api"


def upgrade() -> None:
    usd_float_to_amount_op(SCHEMA, "digests", "net_cash_flow_usd", "net_cash_flow", add_currency=True)


def downgrade() -> None:
    amount_to_usd_float_op(SCHEMA, "digests", "net_cash_flow", "net_cash_flow_usd", drop_currency=True)
