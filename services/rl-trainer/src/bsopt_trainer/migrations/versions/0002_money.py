"""trainer schema: money as a type (exact NUMERIC amounts beside their currency).

Revision ID: 0002
Revises: 0001

Frozen DDL; see bsopt_common.migrations.usd_float_to_amount_op.
"""

from bsopt_common.migrations import amount_to_usd_float_op, usd_float_to_amount_op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEMA = "trainer"


def upgrade() -> None:
    usd_float_to_amount_op(SCHEMA, "paper_runs", "final_equity_usd", "final_equity", add_currency=True)


def downgrade() -> None:
    amount_to_usd_float_op(SCHEMA, "paper_runs", "final_equity", "final_equity_usd", drop_currency=True)
