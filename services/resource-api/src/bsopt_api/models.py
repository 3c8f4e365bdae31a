"""Tables of schema ``api`` (created by ``migrations/versions/0001_initial``).

Both are projections of events, written only by :mod:`bsopt_api.consumers`:

* ``coach_messages``: one coach message per scored trade (``trades.scored.v1``).
  ``seq`` is a bigserial: the cursor WebSocket clients resume from (``?after=<seq>``).
* ``digests``: the latest version of each weekly digest (``digests.ready.v1``).
* ``coach_stream``: every event of a user's coach stream (``coach.reflect``,
  ``import.progress``, ``digest.ready``, ``simulation.ready``); ``id`` is the event id
  clients resume from (``lastEventId``). Written by :mod:`bsopt_api.stream`; an insert
  NOTIFYs every replica (revision 0005).
* ``coach_feedback``, ``coach_notes``: what clients send over the coach socket
  (``chat.feedback``, ``note.add``).

The consumer's ``processed_events`` (idempotency) and ``outbox`` tables come from
:func:`bsopt_common.events.event_tables`.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB

from bsopt_api.config import SCHEMA
from bsopt_common.db import amount_type
from bsopt_common.security.dpop_store import dpop_jti_table

metadata = MetaData(schema=SCHEMA)

coach_messages = Table(
    "coach_messages", metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=True),
    Column("user_id", String(255), nullable=False),
    Column("trade_id", String(255), nullable=False, unique=True),
    #: The ``coach.reflect`` message without ``seq`` (see encoding.coach_message).
    Column("payload", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("coach_messages_user_seq_idx", "user_id", "seq"),
)

digests = Table(
    "digests", metadata,
    Column("digest_id", String(255), primary_key=True),
    Column("user_id", String(255), nullable=False),
    #: ISO week, Monday .. Sunday.
    Column("period_start", Date, nullable=False),
    Column("period_end", Date, nullable=False),
    Column("trades", Integer, nullable=False),
    #: Trades per bias label name ("FOMO", "PANIC", "DISCIPLINE", "NONE").
    Column("label_counts", JSONB, nullable=False),
    #: Sells minus buys, in ``currency``.
    Column("net_cash_flow", amount_type(), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("summary", Text, nullable=False),
    #: Monotonic per digest_id; the row keeps the highest seen.
    Column("version", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=True),
    # revision 0004: the weekly tick's digest (null on digests built before it)
    Column("time_zone", String(64), nullable=True),
    #: Realised P&L of the round trips closed in the week, in ``currency``.
    Column("pnl", amount_type(), nullable=True),
    Column("round_trips", Integer, nullable=True),
    #: The round trips with the highest and lowest P&L (REST JSON, Money as strings).
    Column("best_decision", JSONB, nullable=True),
    Column("worst_decision", JSONB, nullable=True),
    Column("habit", Text, nullable=True),
    Column("habit_label", String(12), nullable=True),
    Column("previous_habit", Text, nullable=True),
    Column("previous_habit_kept", Boolean, nullable=True),
    Index("digests_user_period_idx", "user_id", "period_start"),
)

# --- the coach stream (revision 0005; bsopt_api.stream) --------------------------------

coach_stream = Table(
    "coach_stream", metadata,
    #: The event's ``id`` (and ``seq``); per user, ids grow in commit order (appends of
    #: one user are serialised by a transaction advisory lock).
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("user_id", String(255), nullable=False),
    #: ``coach.reflect``, ``import.progress``, ``digest.ready`` or ``simulation.ready``.
    Column("type", String(40), nullable=False),
    #: Whatever makes the event unique (``coach.reflect:<trade id>``, ...): a second
    #: append with the same key stores nothing.
    Column("dedupe_key", String(400), nullable=True, unique=True),
    #: The message's fields other than ``type``, ``id`` and ``seq``.
    Column("payload", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("coach_stream_user_id_idx", "user_id", "id"),
)

#: ``chat.feedback``: the user's thumbs up or down on a trade's reflection (the latest wins).
coach_feedback = Table(
    "coach_feedback", metadata,
    Column("user_id", String(255), primary_key=True),
    Column("trade_id", String(255), primary_key=True),
    #: ``up`` or ``down``.
    Column("rating", String(4), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

#: ``note.add``: the user's notes on a trade, oldest first.
coach_notes = Table(
    "coach_notes", metadata,
    Column("note_id", BigInteger, primary_key=True, autoincrement=True),
    Column("user_id", String(255), nullable=False),
    Column("trade_id", String(255), nullable=False),
    Column("text", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("coach_notes_user_trade_idx", "user_id", "trade_id", "note_id"),
)

#: Seen DPoP proof jtis, shared by every replica (bsopt_common.security.dpop_store; revision 0003).
dpop_proof_jtis = dpop_jti_table(metadata)
