"""digest-worker's store: the projection of scored trades, per-user time zones, and the
weekly build that turns each completed week into one digest, published as
``digests.ready.v1`` through the outbox in the same transaction.

* :func:`record_scored_trade` (the ``trades.scored.v1`` handler) only stores the trade.
* :func:`build_due_digests` (the weekly tick, :mod:`bsopt_digest.scheduler`) builds every
  week that is complete in its user's time zone at ``now`` and has trades but no digest,
  or trades recorded after its digest was built (a late import or a re-score; built again
  as version + 1). Each (user, week) is built in its own transaction under a per-user
  advisory lock and re-checked there, and ``digests`` has a unique key on
  (user_id, period_start): a restart, a second tick or a second replica never builds a
  week twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Date, and_, cast, func, literal, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session, sessionmaker

from bsopt.digest_worker.v1 import events_pb2
from bsopt.ml_scorer.v1 import ml_scorer_pb2 as spb
from bsopt_common import codec, topics
from bsopt_common.db import session_scope
from bsopt_common.errors import InvalidArgument
from bsopt_common.events import Outbox
from bsopt_common.money import Money
from bsopt_common.vocabulary import BiasLabel, Side
from bsopt_digest import models
from bsopt_digest.domain.digest import ScoredTradeRecord, iso_week
from bsopt_digest.domain.pnl import RoundTrip
from bsopt_digest.domain.weekly import (
    DEFAULT_TIME_ZONE,
    WeeklyReport,
    build_weekly_report,
    is_complete,
    week_bounds,
    zone,
)

log = logging.getLogger(__name__)

T = models.trades
D = models.digests
S = models.user_settings


# --- trades -------------------------------------------------------------------------------


def record_scored_trade(trade: spb.ScoredTrade, session: Session) -> None:
    """Store (or re-label) the trade; no digest is built here. Raises InvalidArgument for
    a trade without a known label, side, time or price."""
    label = codec.BIAS_LABEL.from_pb(trade.label, "label")
    side = codec.SIDE.from_pb(trade.side, "side")
    executed_at = codec.required_timestamp(trade, "executed_at")
    price = codec.money_from_pb(trade, "price")
    if not trade.trade_id or not trade.user_id:
        raise InvalidArgument("ScoredTrade without trade_id or user_id")
    row = dict(trade_id=trade.trade_id, user_id=trade.user_id, symbol=trade.symbol, side=side.value,
               quantity=trade.quantity, price=price.amount, currency=price.currency, executed_at=executed_at,
               week_start=iso_week(executed_at)[0], label=label.value)
    stmt = pg_insert(T).values(**row)
    # a re-scored trade with another label marks its week for a rebuild; the same trade
    # delivered again under another event id changes nothing
    session.execute(stmt.on_conflict_do_update(
        index_elements=["trade_id"], set_={"label": stmt.excluded.label, "recorded_at": func.now()},
        where=T.c.label != stmt.excluded.label))


# --- time zones ---------------------------------------------------------------------------


def time_zone_of(session: Session, user_id: str) -> str:
    """The user's time zone (``UTC`` when never set)."""
    tz = session.execute(select(S.c.time_zone).where(S.c.user_id == user_id)).scalar_one_or_none()
    return tz or DEFAULT_TIME_ZONE


def set_time_zone(session: Session, user_id: str, time_zone: str) -> None:
    """Set the user's IANA time zone. Raises InvalidArgument for an unknown zone or an
    empty user id. Weeks already built keep the zone they were cut in."""
    if not user_id:
        raise InvalidArgument("user_id must be non-empty")
    zone(time_zone)
    stmt = pg_insert(S).values(user_id=user_id, time_zone=time_zone)
    session.execute(stmt.on_conflict_do_update(index_elements=["user_id"],
                                               set_={"time_zone": time_zone, "updated_at": func.now()}))


# --- the weekly build ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DueWeek:
    user_id: str
    time_zone: str
    period_start: date


def due_weeks(session: Session, now: datetime, *, settled_for: timedelta | None = None,
              recorded_within: timedelta | None = None) -> list[DueWeek]:
    """The (user, week) pairs a build at ``now`` has to (re)build, oldest week first per
    user: complete in the user's zone, with trades, and no digest or one built before the
    latest of those trades was recorded. ``settled_for``: only weeks whose latest trade was
    recorded at least that long ago (database time). ``recorded_within``: only users with a
    trade recorded that recently (the catch-up pass)."""
    tz = func.coalesce(S.c.time_zone, literal(DEFAULT_TIME_ZONE))
    week = cast(func.date_trunc("week", func.timezone(tz, T.c.executed_at)), Date).label("week")
    q = (select(T.c.user_id, tz.label("tz"), week, func.max(T.c.recorded_at).label("last_recorded"))
         .select_from(T.outerjoin(S, S.c.user_id == T.c.user_id))
         .group_by(T.c.user_id, tz, week))
    if recorded_within is not None:
        recent = select(T.c.user_id).where(T.c.recorded_at > func.now() - recorded_within).distinct()
        q = q.where(T.c.user_id.in_(recent.scalar_subquery()))
    if settled_for is not None:
        q = q.having(func.max(T.c.recorded_at) <= func.now() - settled_for)
    weeks = q.subquery()
    rows = session.execute(
        select(weeks.c.user_id, weeks.c.tz, weeks.c.week)
        .select_from(weeks.outerjoin(D, and_(D.c.user_id == weeks.c.user_id, D.c.period_start == weeks.c.week)))
        .where((D.c.digest_id.is_(None)) | (D.c.built_through.is_(None))
               | (D.c.built_through < weeks.c.last_recorded))
        .order_by(weeks.c.user_id, weeks.c.week)).all()
    due = []
    for user_id, tz_name, monday in rows:
        try:
            if is_complete(monday, tz_name, now):
                due.append(DueWeek(user_id, tz_name, monday))
        except InvalidArgument:
            log.error("user %s has an unknown time zone %r: no digest built", user_id, tz_name)
    return due


def _records(session: Session, user_id: str, before: datetime) -> list[ScoredTradeRecord]:
    rows = session.execute(select(T).where(T.c.user_id == user_id, T.c.executed_at < before)
                           .order_by(T.c.executed_at, T.c.trade_id)).mappings()
    return [ScoredTradeRecord(trade_id=r["trade_id"], user_id=r["user_id"], symbol=r["symbol"], side=Side(r["side"]),
                              quantity=int(r["quantity"]), price=Money(r["price"], r["currency"]),
                              executed_at=r["executed_at"], label=BiasLabel(r["label"])) for r in rows]


def _decision_json(trip: RoundTrip | None) -> dict[str, Any] | None:
    if trip is None:
        return None
    return {"symbol": trip.symbol, "open_trade_id": trip.open_trade_id, "close_trade_id": trip.close_trade_id,
            "quantity": trip.quantity, "direction": trip.direction,
            "open_price": {"amount": str(trip.open_price.amount), "currency": trip.open_price.currency},
            "close_price": {"amount": str(trip.close_price.amount), "currency": trip.close_price.currency},
            "pnl": {"amount": str(trip.pnl.amount), "currency": trip.pnl.currency},
            "opened_at": codec.rfc3339(trip.opened_at), "closed_at": codec.rfc3339(trip.closed_at)}


def _decision_pb(trip: RoundTrip | None) -> events_pb2.Decision | None:
    if trip is None:
        return None
    d = events_pb2.Decision(symbol=trip.symbol, open_trade_id=trip.open_trade_id, close_trade_id=trip.close_trade_id,
                            quantity=trip.quantity, direction=trip.direction,
                            open_price=codec.money_pb(trip.open_price), close_price=codec.money_pb(trip.close_price),
                            pnl=codec.money_pb(trip.pnl))
    d.opened_at.FromDatetime(trip.opened_at)
    d.closed_at.FromDatetime(trip.closed_at)
    return d


def digest_ready(report: WeeklyReport, *, version: int, updated_at: datetime) -> events_pb2.DigestReady:
    """The ``digests.ready.v1`` payload of a weekly digest."""
    msg = events_pb2.DigestReady(
        digest_id=report.digest_id, user_id=report.user_id, period_start=report.period_start.isoformat(),
        period_end=report.period_end.isoformat(), trades=report.trades, label_counts=report.label_counts,
        net_cash_flow=codec.money_pb(report.net_cash_flow), summary=report.summary, version=version,
        time_zone=report.time_zone, pnl=codec.money_pb(report.pnl), round_trips=report.round_trips,
        habit=report.habit, habit_label=report.habit_label, previous_habit=report.previous_habit)
    msg.updated_at.FromDatetime(updated_at)
    for name, trip in (("best_decision", report.best_decision), ("worst_decision", report.worst_decision)):
        pb = _decision_pb(trip)
        if pb is not None:
            getattr(msg, name).CopyFrom(pb)
    if report.previous_habit_kept is not None:
        msg.previous_habit_kept = report.previous_habit_kept
    return msg


def build_week(session: Session, outbox: Outbox, week: DueWeek, now: datetime) -> events_pb2.DigestReady | None:
    """Build and publish one due week, in the caller's transaction, under the user's
    advisory lock; None when another build got there first (or the week has no trade)."""
    session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
                    {"k": f"bsopt-digest:{week.user_id}"})
    start, end = week_bounds(week.period_start, week.time_zone)
    last_recorded = session.execute(
        select(func.max(T.c.recorded_at)).where(T.c.user_id == week.user_id, T.c.executed_at >= start,
                                                T.c.executed_at < end)).scalar_one_or_none()
    if last_recorded is None:
        return None
    built = session.execute(select(D.c.built_through).where(D.c.user_id == week.user_id,
                                                            D.c.period_start == week.period_start)).first()
    if built is not None and built.built_through is not None and built.built_through >= last_recorded:
        return None  # built meanwhile (another replica, or an earlier pass)
    report = build_weekly_report(week.user_id, week.period_start, week.time_zone,
                                 _records(session, week.user_id, end))
    if report is None:
        return None
    updated_at = datetime.now(UTC)
    values = dict(user_id=report.user_id, period_start=report.period_start, period_end=report.period_end,
                  trades=report.trades, label_counts=report.label_counts,
                  net_cash_flow=report.net_cash_flow.amount, currency=report.net_cash_flow.currency,
                  summary=report.summary, updated_at=updated_at, time_zone=report.time_zone,
                  pnl=report.pnl.amount, round_trips=report.round_trips,
                  best_decision=_decision_json(report.best_decision),
                  worst_decision=_decision_json(report.worst_decision), habit=report.habit,
                  habit_label=report.habit_label, previous_habit=report.previous_habit,
                  previous_habit_kept=report.previous_habit_kept, built_through=last_recorded)
    version = session.execute(
        pg_insert(D).values(digest_id=report.digest_id, version=1, **values)
        .on_conflict_do_update(index_elements=["digest_id"], set_={**values, "version": D.c.version + 1})
        .returning(D.c.version)).scalar_one()
    event = digest_ready(report, version=version, updated_at=updated_at)
    outbox.add(session, topics.DIGESTS_READY, event)
    return event


def build_due_digests(factory: sessionmaker[Session], outbox: Outbox, now: datetime, *,
                      settled_for: timedelta | None = None, recorded_within: timedelta | None = None,
                      after_commit: Callable[[], None] | None = None) -> list[events_pb2.DigestReady]:
    """One pass of the weekly tick at ``now``: build every due week (see
    :func:`due_weeks`), each in its own transaction. A week that cannot be built (mixed
    currencies) is logged and skipped; the others go on. Returns the published events."""
    with session_scope(factory) as session:
        weeks = due_weeks(session, now, settled_for=settled_for, recorded_within=recorded_within)
    built: list[events_pb2.DigestReady] = []
    for week in weeks:
        try:
            with session_scope(factory) as session:
                event = build_week(session, outbox, week, now)
        except InvalidArgument as exc:
            log.error("digest of user %s, week %s not built: %s", week.user_id, week.period_start, exc)
            continue
        if event is not None:
            built.append(event)
            log.info("digest %s (user %s, week %s, %s) built, version %d", event.digest_id, week.user_id,
                     week.period_start, week.time_zone, event.version)
            if after_commit is not None:
                after_commit()
    return built
