"""broker schema: accounts, positions, orders, fills, imports, imported trades, event tables.

Revision ID: 0001

Frozen DDL: the tables exactly as ``bsopt_broker.models`` defined them when this revision
was written. Never import the models here; a model change needs a new revision.
"""

import sqlalchemy as sa
from alembic import op

from bsopt_common.migrations import create_event_tables_op, drop_event_tables_op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "broker"


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("broker", sa.String(length=16), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("cash_usd", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("account_id", name="accounts_pkey"),
        schema=SCHEMA,
    )
    op.create_index("ix_broker_accounts_user_id", "accounts", ["user_id"], unique=False, schema=SCHEMA)

    op.create_table(
        "positions",
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("symbol", sa.String(length=16), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("average_price_usd", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], [f"{SCHEMA}.accounts.account_id"], name="positions_account_id_fkey",
        ),
        sa.PrimaryKeyConstraint("account_id", "symbol", name="positions_pkey"),
        schema=SCHEMA,
    )

    op.create_table(
        "orders",
        sa.Column("order_id", sa.String(length=36), nullable=False),
        sa.Column("client_order_id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("symbol", sa.String(length=16), nullable=False),
        sa.Column("side", sa.String(length=4), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("reject_reason", sa.String(length=300), server_default="", nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("filled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("fill_latency_ms", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], [f"{SCHEMA}.accounts.account_id"], name="orders_account_id_fkey",
        ),
        sa.PrimaryKeyConstraint("order_id", name="orders_pkey"),
        sa.UniqueConstraint("account_id", "client_order_id", name="orders_client_order_id_key"),
        schema=SCHEMA,
    )

    op.create_table(
        "fills",
        sa.Column("trade_id", sa.String(length=36), nullable=False),
        sa.Column("order_id", sa.String(length=36), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("symbol", sa.String(length=16), nullable=False),
        sa.Column("side", sa.String(length=4), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("price_usd", sa.Float(), nullable=False),
        sa.Column("fee_usd", sa.Float(), nullable=False),
        sa.Column("executed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["order_id"], [f"{SCHEMA}.orders.order_id"], name="fills_order_id_fkey"),
        sa.PrimaryKeyConstraint("trade_id", name="fills_pkey"),
        schema=SCHEMA,
    )
    op.create_index("ix_broker_fills_account_id", "fills", ["account_id"], unique=False, schema=SCHEMA)
    op.create_index("ix_broker_fills_executed_at", "fills", ["executed_at"], unique=False, schema=SCHEMA)

    op.create_table(
        "imports",
        sa.Column("import_id", sa.String(length=36), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("trades_imported", sa.Integer(), nullable=False),
        sa.Column("duplicates_skipped", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("import_id", name="imports_pkey"),
        schema=SCHEMA,
    )

    # One row per broker trade id ever imported: the dedupe key.
    op.create_table(
        "imported_trades",
        sa.Column("broker", sa.String(length=16), nullable=False),
        sa.Column("trade_id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("import_id", sa.String(length=36), nullable=False),
        sa.Column("imported_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("broker", "trade_id", name="imported_trades_pkey"),
        schema=SCHEMA,
    )

    create_event_tables_op(SCHEMA)


def downgrade() -> None:
    drop_event_tables_op(SCHEMA)
    op.drop_table("imported_trades", schema=SCHEMA)
    op.drop_table("imports", schema=SCHEMA)
    op.drop_index("ix_broker_fills_executed_at", table_name="fills", schema=SCHEMA)
    op.drop_index("ix_broker_fills_account_id", table_name="fills", schema=SCHEMA)
    op.drop_table("fills", schema=SCHEMA)
    op.drop_table("orders", schema=SCHEMA)
    op.drop_table("positions", schema=SCHEMA)
    op.drop_index("ix_broker_accounts_user_id", table_name="accounts", schema=SCHEMA)
    op.drop_table("accounts", schema=SCHEMA)
