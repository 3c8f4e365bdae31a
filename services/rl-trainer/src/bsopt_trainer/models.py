"""Tables of schema ``trainer`` (owned by rl-trainer only)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Integer, MetaData, String, Table, Text, func
from sqlalchemy.dialects.postgresql import JSONB

from bsopt_common.db import amount_type

SCHEMA = "trainer"
metadata = MetaData(schema=SCHEMA)

training_jobs = Table(
    "training_jobs", metadata,
    Column("job_id", String(36), primary_key=True),
    Column("user_id", String(64), nullable=False, index=True),
    Column("spec", JSONB, nullable=False),
    # queued | running | succeeded | failed | cancelled
    Column("status", String(10), nullable=False),
    Column("timesteps_done", BigInteger, nullable=False, server_default="0"),
    Column("total_timesteps", BigInteger, nullable=False),
    Column("results", JSONB),
    Column("error", Text, nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    # A trainer replica's consumer took the queued job into its worker's queue.
    Column("claimed_at", DateTime(timezone=True)),
    # The owner asked to cancel the job while it was running.
    Column("cancel_requested_at", DateTime(timezone=True)),
)

paper_runs = Table(
    "paper_runs", metadata,
    Column("run_id", String(36), primary_key=True),
    Column("job_id", String(36), nullable=False, index=True),
    Column("account_id", String(36), nullable=False),
    Column("orders", Integer, nullable=False),
    Column("fills", Integer, nullable=False),
    Column("rejected", Integer, nullable=False),
    Column("final_equity", amount_type(), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
