"""broker schema: money as a type (exact NUMERIC amounts beside their currency).

Revision ID: 0002
Revises: 0001

Frozen DDL; see bsopt_common.migrations.usd_float_to_amount_op.
"""

from bsopt_common.migrations import amount_to_usd_float_op, usd_float_to_amount_op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEMA = "broker"


def upgrade() -> None:
    usd_float_to_amount_op(SCHEMA, "accounts", "cash_usd", "cash", add_currency=False)
    usd_float_to_amount_op(SCHEMA, "positions", "average_price_usd", "average_price", add_currency=False)
    usd_float_to_amount_op(SCHEMA, "fills", "price_usd", "price", add_currency=True)
    usd_float_to_amount_op(SCHEMA, "fills", "fee_usd", "fee", add_currency=False)


def downgrade() -> None:
    amount_to_usd_float_op(SCHEMA, "fills", "fee", "fee_usd", drop_currency=False)
    amount_to_usd_float_op(SCHEMA, "fills", "price", "price_usd", drop_currency=True)
    amount_to_usd_float_op(SCHEMA, "positions", "average_price", "average_price_usd", drop_currency=False)
    amount_to_usd_float_op(SCHEMA, "accounts", "cash", "cash_usd", drop_currency=False)
