"""Tables of schema ``broker`` (owned by broker-gateway only)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    func,
)

from bsopt_common.db import amount_type

SCHEMA = "broker"
metadata = MetaData(schema=SCHEMA)

accounts = Table(
    "accounts", metadata,
    Column("account_id", String(36), primary_key=True),
    Column("user_id", String(64), nullable=False, index=True),
    Column("broker", String(16), nullable=False),
    # ISO 4217 code of every amount of the account (cash, positions, fills).
    Column("currency", String(3), nullable=False),
    Column("cash", amount_type(), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

positions = Table(
    "positions", metadata,
    Column("account_id", String(36), ForeignKey("broker.accounts.account_id"), primary_key=True),
    Column("symbol", String(16), primary_key=True),
    Column("quantity", BigInteger, nullable=False),
    Column("average_price", amount_type(), nullable=False),
)

orders = Table(
    "orders", metadata,
    Column("order_id", String(36), primary_key=True),
    Column("client_order_id", String(64), nullable=False),
    Column("account_id", String(36), ForeignKey("broker.accounts.account_id"), nullable=False),
    Column("symbol", String(16), nullable=False),
    Column("side", String(4), nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("status", String(10), nullable=False),
    Column("reject_reason", String(300), nullable=False, server_default=""),
    Column("submitted_at", DateTime(timezone=True), nullable=False),
    Column("filled_at", DateTime(timezone=True)),
    Column("fill_latency_ms", Float),
    UniqueConstraint("account_id", "client_order_id", name="orders_client_order_id_key"),
)

fills = Table(
    "fills", metadata,
    Column("trade_id", String(36), primary_key=True),
    Column("order_id", String(36), ForeignKey("broker.orders.order_id"), nullable=False),
    Column("account_id", String(36), nullable=False, index=True),
    Column("symbol", String(16), nullable=False),
    Column("side", String(4), nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("price", amount_type(), nullable=False),
    Column("fee", amount_type(), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("executed_at", DateTime(timezone=True), nullable=False, index=True),
)

imports = Table(
    "imports", metadata,
    Column("import_id", String(36), primary_key=True),
    Column("account_id", String(36), nullable=False),
    Column("user_id", String(64), nullable=False),
    Column("window_start", DateTime(timezone=True), nullable=False),
    Column("window_end", DateTime(timezone=True), nullable=False),
    Column("trades_imported", Integer, nullable=False),
    Column("duplicates_skipped", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# One row per (user, broker, broker trade id) ever imported: the dedupe key (0003; the
# user is part of it since then, so two users sharing one venue account each import it).
imported_trades = Table(
    "imported_trades", metadata,
    Column("user_id", String(64), primary_key=True),
    Column("broker", String(16), primary_key=True),
    Column("trade_id", String(64), primary_key=True),
    Column("account_id", String(36), nullable=False),
    Column("import_id", String(36), nullable=False),
    Column("imported_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Stop-loss / take-profit rules a user set through the API for an Alpaca account
# (0005_sell_rules): percent from a position's average entry price; NULL = no such rule.
# They take precedence over the account's ``sell_rules`` of the accounts file.
sell_rules = Table(
    "sell_rules", metadata,
    Column("user_id", String(64), primary_key=True),
    Column("account_id", String(64), primary_key=True),
    Column("stop_loss_pct", Float),
    Column("take_profit_pct", Float),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Broker accounts users connected from the API (0006): one row per connection, the
# connection id being the account id the other RPCs take. ``credentials`` is AES-256-GCM
# ciphertext (bsopt_broker.connections.crypto; the connection id is its associated data),
# NULL once revoked; ``credentials_key_id`` names the key that sealed it.
broker_connections = Table(
    "broker_connections", metadata,
    Column("connection_id", String(36), primary_key=True),
    Column("user_id", String(64), nullable=False, index=True),
    Column("broker", String(16), nullable=False),
    Column("method", String(8), nullable=False),  # oauth | api_key
    Column("status", String(8), nullable=False),  # active | paused | revoked
    Column("account_kind", String(8), nullable=False),  # paper | live
    Column("allow_live", Boolean, nullable=False, server_default="false"),
    Column("scope", String(200), nullable=False, server_default=""),
    Column("credentials", LargeBinary),
    Column("credentials_key_id", String(64)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Started OAuth connections (0006): the SHA-256 of the ``state`` sent to the broker, the
# user it is bound to, the PKCE verifier sealed like credentials (associated data: the
# connection id reserved for it), single use (``used_at``) and expiring.
broker_oauth_states = Table(
    "broker_oauth_states", metadata,
    Column("state_hash", String(64), primary_key=True),
    Column("user_id", String(64), nullable=False),
    Column("connection_id", String(36), nullable=False),
    Column("broker", String(16), nullable=False),
    Column("account_kind", String(8), nullable=False),
    Column("allow_live", Boolean, nullable=False, server_default="false"),
    Column("code_verifier", LargeBinary, nullable=False),
    Column("redirect_uri", String(500), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
    Column("used_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Background trade imports (0007, StartImport): one row per import id (UUIDv5 of user,
# broker, account and window), so the same window started twice is one job. ``status``:
# queued | running | done | failed; the counts grow while it runs (final once done).
import_jobs = Table(
    "import_jobs", metadata,
    Column("import_id", String(36), primary_key=True),
    Column("user_id", String(64), nullable=False, index=True),
    Column("broker", String(16), nullable=False),
    Column("account_id", String(64), nullable=False),
    Column("window_start", DateTime(timezone=True), nullable=False),
    Column("window_end", DateTime(timezone=True), nullable=False),
    Column("status", String(8), nullable=False, index=True),
    Column("account_kind", String(8)),  # paper | live, once the first page was read
    Column("pages_fetched", Integer, nullable=False, server_default="0"),
    Column("fills_seen", Integer, nullable=False, server_default="0"),
    Column("trades_imported", Integer, nullable=False, server_default="0"),
    Column("duplicates_skipped", Integer, nullable=False, server_default="0"),
    Column("error", String(500), nullable=False, server_default=""),
    Column("attempts", Integer, nullable=False, server_default="1"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
)

# Close-all requests of the sell module (0008, CloseAllPositions): written before the RPC
# returns, claimed (``running``) and completed by the account's sell worker, resumed at
# start-up when an earlier process left them ``queued`` or ``running``. ``status``:
# queued | running | done | failed; the counts grow with each decision, in the transaction
# that records the decision's event (so a replayed decision is never counted twice).
close_all_requests = Table(
    "close_all_requests", metadata,
    Column("request_id", String(36), primary_key=True),
    Column("account_id", String(64), nullable=False, index=True),
    Column("user_id", String(64), nullable=False),
    Column("status", String(8), nullable=False, index=True),
    Column("positions_sold", Integer, nullable=False, server_default="0"),
    Column("positions_refused", Integer, nullable=False, server_default="0"),
    Column("error", String(500), nullable=False, server_default=""),
    Column("requested_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
)

# Orders placed on Alpaca accounts through broker-gateway (PlaceOrder and the sell module),
# with the order's timing (issue 8 §3): ``received_at`` is the wall-clock instant the
# order reached the venue adapter, the ``*_ms`` columns the monotonic milliseconds from it
# to each later step (null when timing is off, or for a replay answered from an earlier
# call). One row per (account, client_order_id): a replay never adds a second.
alpaca_orders = Table(
    "alpaca_orders", metadata,
    Column("account_id", String(64), primary_key=True),
    Column("client_order_id", String(128), primary_key=True),
    Column("user_id", String(64), nullable=False),
    Column("broker_order_id", String(64), nullable=False),
    Column("account_kind", String(8), nullable=False),
    Column("symbol", String(32), nullable=False),
    Column("side", String(4), nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("filled_quantity", BigInteger, nullable=False),
    Column("average_price", amount_type()),
    Column("fee", amount_type()),
    Column("currency", String(3), nullable=False),
    Column("reject_reason", String(500), nullable=False, server_default=""),
    Column("submitted_at", DateTime(timezone=True)),
    Column("filled_at", DateTime(timezone=True)),
    Column("received_at", DateTime(timezone=True), nullable=False, index=True),
    Column("balance_checked_ms", Float),
    Column("sent_ms", Float),
    Column("acknowledged_ms", Float),
    Column("filled_ms", Float),
    Column("balance_unchecked", Boolean, nullable=False, server_default="false"),
)
