"""Reads and writes of the ``api`` schema's projections. Functions take an open
:class:`~sqlalchemy.orm.Session` and never commit: the caller owns the transaction
(the consumer's idempotent transaction, or a read-only ``session_scope``).

Errors: ``ValueError`` for an event that cannot be projected (empty ids, a date that
is not ISO), which the consumer retries and then dead-letters.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from bsopt.digest_worker.v1 import events_pb2 as digest_events
from bsopt.ml_scorer.v1 import ml_scorer_pb2 as scorer_pb
from bsopt_api import encoding
from bsopt_api.models import coach_messages, digests
from bsopt_common import codec
from bsopt_common.money import Money


def _with_seq(payload: dict[str, Any], seq: int) -> dict[str, Any]:
    message = {"type": payload.get("type", encoding.COACH_MESSAGE_TYPE), "seq": seq}
    message.update((k, v) for k, v in payload.items() if k != "type")
    return message


# --- coach messages ---------------------------------------------------------------------


def record_coach_message(session: Session, trade: scorer_pb.ScoredTrade) -> dict[str, Any] | None:
    """Store the coach message of ``trade``; return it with its ``seq``, or None when
    this trade already has one (one message per trade id, whatever the event id)."""
    if not trade.trade_id or not trade.user_id:
        raise ValueError("ScoredTrade without trade_id or user_id cannot be delivered to a user")
    payload = encoding.coach_message(trade)
    row = session.execute(
        pg_insert(coach_messages)
        .values(user_id=trade.user_id, trade_id=trade.trade_id, payload=payload)
        .on_conflict_do_nothing(index_elements=[coach_messages.c.trade_id])
        .returning(coach_messages.c.seq)
    ).first()
    return None if row is None else _with_seq(payload, row.seq)


def coach_messages_after(session: Session, user_id: str, after: int, limit: int) -> list[dict[str, Any]]:
    """The user's stored messages with ``seq > after``, oldest first, at most ``limit``."""
    rows = session.execute(
        select(coach_messages.c.seq, coach_messages.c.payload)
        .where(coach_messages.c.user_id == user_id, coach_messages.c.seq > after)
        .order_by(coach_messages.c.seq)
        .limit(limit)
    ).all()
    return [_with_seq(r.payload, r.seq) for r in rows]


# --- digests ------------------------------------------------------------------------------


def upsert_digest(session: Session, d: digest_events.DigestReady) -> None:
    """Insert the digest or replace the stored one, keeping the highest ``version`` per
    ``digest_id`` (an older version arriving late changes nothing)."""
    if not d.digest_id or not d.user_id:
        raise ValueError("DigestReady without digest_id or user_id")
    net_cash_flow = codec.money_from_pb(d, "net_cash_flow")
    values = {
        "digest_id": d.digest_id,
        "user_id": d.user_id,
        "period_start": date.fromisoformat(d.period_start),
        "period_end": date.fromisoformat(d.period_end),
        "trades": d.trades,
        "label_counts": dict(sorted(d.label_counts.items())),
        "net_cash_flow": net_cash_flow.amount,
        "currency": net_cash_flow.currency,
        "summary": d.summary,
        "version": d.version,
        "updated_at": codec.from_timestamp(d, "updated_at"),
        # the weekly tick's fields (unset on digests of an older digest-worker)
        "time_zone": d.time_zone or None,
        "pnl": codec.money_from_pb(d, "pnl").amount if d.HasField("pnl") else None,
        "round_trips": d.round_trips if d.HasField("pnl") else None,
        "best_decision": _decision(d.best_decision) if d.HasField("best_decision") else None,
        "worst_decision": _decision(d.worst_decision) if d.HasField("worst_decision") else None,
        "habit": d.habit or None,
        "habit_label": d.habit_label or None,
        "previous_habit": d.previous_habit or None,
        "previous_habit_kept": d.previous_habit_kept if d.HasField("previous_habit_kept") else None,
    }
    stmt = pg_insert(digests).values(**values)
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=[digests.c.digest_id],
            set_={k: stmt.excluded[k] for k in values if k != "digest_id"},
            where=digests.c.version < stmt.excluded.version,
        )
    )


def _decision(d: digest_events.Decision) -> dict[str, Any]:
    """A round trip of a digest as REST JSON (Money as ``{"amount", "currency"}``)."""
    return {
        "symbol": d.symbol,
        "open_trade_id": d.open_trade_id,
        "close_trade_id": d.close_trade_id,
        "quantity": d.quantity,
        "direction": d.direction,
        "open_price": encoding.money_field(d, "open_price"),
        "close_price": encoding.money_field(d, "close_price"),
        "pnl": encoding.money_field(d, "pnl"),
        "opened_at": codec.rfc3339_field(d, "opened_at"),
        "closed_at": codec.rfc3339_field(d, "closed_at"),
    }


def _weekly(row: Any) -> dict[str, Any]:
    return {
        "digest_id": row.digest_id,
        "period_start": row.period_start.isoformat(),
        "period_end": row.period_end.isoformat(),
        "time_zone": row.time_zone,
        "trades": row.trades,
        "label_counts": row.label_counts,
        "pnl": None if row.pnl is None else encoding.money(Money(row.pnl, row.currency)),
        "round_trips": row.round_trips,
        "best_decision": row.best_decision,
        "worst_decision": row.worst_decision,
        "habit": row.habit,
        "habit_label": row.habit_label,
        "previous_habit": row.previous_habit,
        "previous_habit_kept": row.previous_habit_kept,
        "net_cash_flow": encoding.money(Money(row.net_cash_flow, row.currency)),
        "summary": row.summary,
        "version": row.version,
        "updated_at": codec.rfc3339(row.updated_at) if row.updated_at else None,
    }


def weekly_digests(session: Session, user_id: str, *, limit: int, before: date | None = None) -> list[dict[str, Any]]:
    """The user's weekly digests, newest week first, at most ``limit``; with ``before``,
    only weeks starting before that date (the next page of a listing)."""
    q = select(digests).where(digests.c.user_id == user_id)
    if before is not None:
        q = q.where(digests.c.period_start < before)
    rows = session.execute(q.order_by(digests.c.period_start.desc(), digests.c.version.desc()).limit(limit)).all()
    return [_weekly(r) for r in rows]


def latest_digest(session: Session, user_id: str) -> dict[str, Any] | None:
    """The user's digest of the most recent week, or None."""
    row = session.execute(
        select(digests)
        .where(digests.c.user_id == user_id)
        .order_by(digests.c.period_start.desc(), digests.c.version.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    return {
        "digest_id": row.digest_id,
        "period_start": row.period_start.isoformat(),
        "period_end": row.period_end.isoformat(),
        "trades": row.trades,
        "label_counts": row.label_counts,
        "net_cash_flow": encoding.money(Money(row.net_cash_flow, row.currency)),
        "summary": row.summary,
        "version": row.version,
        "updated_at": codec.rfc3339(row.updated_at) if row.updated_at else None,
    }
