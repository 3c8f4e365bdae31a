"""The weekly digest of one user's week, cut in the user's time zone.

Pure logic: no SQL, no Kafka, no clock (``now`` is always an argument).

* **Week**: Monday 00:00 to the next Monday 00:00 in the user's IANA time zone (so a
  week is 167 or 169 hours across a DST change). A trade belongs to the week of its
  execution time seen in that zone. A week is *complete* once ``now`` has reached its
  end; only complete weeks get a digest (:func:`is_complete`).
* **Counts** per label: FOMO, PANIC, DISCIPLINE, NONE (always all four keys).
* **P&L**: the realised P&L of the round trips (:mod:`bsopt_digest.domain.pnl`, FIFO over
  *all* the user's trades up to the week's end, so lots opened earlier count) whose
  closing trade is in the week; in the currency of the week's trades.
* **Best / worst decision**: the round trips closed in the week with the highest and the
  lowest P&L (ties: the earlier close, then the lower trade ids); none without round
  trips. With one round trip both are that one.
* **Habit**: from the week's dominant label (:func:`dominant_label`): the most frequent
  of FOMO / PANIC when either occurred (a tie goes to FOMO), else DISCIPLINE when some
  trade was disciplined, else NONE; the text is :data:`HABITS` of that label.
* **Last week's habit kept** (:func:`habit_kept`): last week's habit answered label L.
  For L = FOMO or PANIC it was kept when this week has fewer L trades than last week; for
  DISCIPLINE or NONE (last week had no biased trade) when this week has no FOMO and no
  PANIC trade. Unknown (None) when last week had no trades.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bsopt_common.errors import InvalidArgument
from bsopt_common.money import Money
from bsopt_common.vocabulary import BiasLabel
from bsopt_digest.domain.digest import (
    BIAS_LABELS,
    LABELS,
    ScoredTradeRecord,
    _net_cash_flow,
    digest_id,
    format_money,
)
from bsopt_digest.domain.pnl import RoundTrip, match_round_trips, trade_order, utc

DEFAULT_TIME_ZONE = "UTC"

#: The habit to practise, by the week's dominant label. Changing a text changes only
#: digests built afterwards.
HABITS: dict[BiasLabel, str] = {
    BiasLabel.FOMO: (
        "before buying something that has already run up, write down entry, stop and target, "
        "then wait one full session or for a pullback before entering"
    ),
    BiasLabel.PANIC: (
        "set the stop-loss when you enter, and after a sharp drop wait until the next session "
        "before selling unless that stop was hit"
    ),
    BiasLabel.DISCIPLINE: (
        "keep writing down entry, stop and target before each trade, so the plan still decides "
        "when the market gets loud"
    ),
    BiasLabel.NONE: (
        "before each trade, write one sentence on why you are making it and where you would exit"
    ),
}


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``. Raises InvalidArgument for an unknown name."""
    if not isinstance(name, str) or not name or name.startswith(("/", ".")) or ".." in name:
        raise InvalidArgument(f"unknown time zone {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidArgument(f"unknown time zone {name!r} (an IANA name such as 'Asia/Tokyo')") from None


def local_week_start(at: datetime, time_zone: str) -> date:
    """The Monday (a local date) of the week holding ``at`` (naive = UTC) in ``time_zone``."""
    day = utc(at).astimezone(zone(time_zone)).date()
    return day - timedelta(days=day.weekday())


def week_bounds(monday: date, time_zone: str) -> tuple[datetime, datetime]:
    """``[start, end)`` of the week starting ``monday``: local Monday 00:00 to the next
    Monday 00:00, as aware UTC datetimes. Raises InvalidArgument when ``monday`` is not
    a Monday."""
    if monday.weekday() != 0:
        raise InvalidArgument(f"a week starts on a Monday, got {monday.isoformat()} ({monday:%A})")
    tz = zone(time_zone)
    start = datetime.combine(monday, time(0), tzinfo=tz)
    end = datetime.combine(monday + timedelta(days=7), time(0), tzinfo=tz)
    return utc(start), utc(end)


def is_complete(monday: date, time_zone: str, now: datetime) -> bool:
    """Whether the week starting ``monday`` has ended at ``now`` (its next Monday 00:00
    local has been reached)."""
    return utc(now) >= week_bounds(monday, time_zone)[1]


def last_completed_week(now: datetime, time_zone: str) -> date:
    """The Monday of the latest week that is complete at ``now``."""
    return local_week_start(now, time_zone) - timedelta(days=7)


def label_counts(records: Iterable[ScoredTradeRecord]) -> dict[str, int]:
    """Trades per label value, always the four keys in :data:`LABELS` order."""
    tally = Counter(r.label for r in records)
    return {label.value: int(tally.get(label, 0)) for label in BiasLabel}


def dominant_label(counts: dict[str, int]) -> BiasLabel:
    """The label a week's habit answers (module docstring)."""
    top = max(counts.get(b.value, 0) for b in BIAS_LABELS)
    if top > 0:
        return next(b for b in BIAS_LABELS if counts.get(b.value, 0) == top)
    if counts.get(BiasLabel.DISCIPLINE.value, 0) > 0:
        return BiasLabel.DISCIPLINE
    return BiasLabel.NONE


def habit_kept(previous_counts: dict[str, int], counts: dict[str, int]) -> bool:
    """Whether this week (``counts``) kept the habit last week (``previous_counts``) was
    given (module docstring)."""
    previous = dominant_label(previous_counts)
    if previous in BIAS_LABELS:
        return counts.get(previous.value, 0) < previous_counts.get(previous.value, 0)
    return sum(counts.get(b.value, 0) for b in BIAS_LABELS) == 0


@dataclass(frozen=True, slots=True)
class WeeklyReport:
    """One user's digest of one complete week (the fields of ``DigestReady`` that
    describe the week; ``version`` and ``updated_at`` belong to the publisher)."""

    user_id: str
    period_start: date
    period_end: date
    time_zone: str
    trades: int
    label_counts: dict[str, int]
    net_cash_flow: Money
    pnl: Money
    round_trips: int
    best_decision: RoundTrip | None
    worst_decision: RoundTrip | None
    habit: str
    habit_label: str
    previous_habit: str
    previous_habit_kept: bool | None
    summary: str

    @property
    def digest_id(self) -> str:
        return digest_id(self.user_id, self.period_start)


def build_weekly_report(
    user_id: str, monday: date, time_zone: str, records: Iterable[ScoredTradeRecord]
) -> WeeklyReport | None:
    """The digest of ``user_id``'s week starting ``monday`` (local) in ``time_zone``.

    Args:
        records: the user's trades; those after the week's end are ignored, those before
            it are needed for FIFO lots and last week's habit. Other users' trades are
            ignored. Duplicate trade ids count once (the last wins).

    Returns:
        None when the week has no trade (no digest for an empty week).

    Raises:
        InvalidArgument: unknown time zone, ``monday`` not a Monday.
        CurrencyMismatch: the week's trades, or a round trip, mix currencies.
    """
    start, end = week_bounds(monday, time_zone)
    latest: dict[str, ScoredTradeRecord] = {}
    for r in records:
        if r.user_id == user_id and utc(r.executed_at) < end:
            latest[r.trade_id] = r
    mine = sorted(latest.values(), key=trade_order)
    week = [r for r in mine if utc(r.executed_at) >= start]
    if not week:
        return None
    prev_start = week_bounds(monday - timedelta(days=7), time_zone)[0]
    previous = [r for r in mine if prev_start <= utc(r.executed_at) < start]
    counts = label_counts(week)
    net = _net_cash_flow(user_id, monday, week)
    trips = [t for t in match_round_trips(mine) if start <= t.closed_at < end]
    pnl = Money.zero(net.currency)
    for t in trips:
        pnl = pnl + t.pnl
    best = max(trips, key=lambda t: (t.pnl.amount, -t.closed_at.timestamp()), default=None)
    worst = min(trips, key=lambda t: (t.pnl.amount, t.closed_at.timestamp()), default=None)
    label = dominant_label(counts)
    previous_habit = ""
    kept: bool | None = None
    if previous:
        previous_counts = label_counts(previous)
        previous_habit = HABITS[dominant_label(previous_counts)]
        kept = habit_kept(previous_counts, counts)
    sunday = monday + timedelta(days=6)
    summary = _summary(monday, sunday, time_zone, len(week), counts, net, pnl, trips, best, worst,
                       HABITS[label], previous_habit, kept)
    return WeeklyReport(
        user_id=user_id, period_start=monday, period_end=sunday, time_zone=time_zone, trades=len(week),
        label_counts=counts, net_cash_flow=net, pnl=pnl, round_trips=len(trips), best_decision=best,
        worst_decision=worst, habit=HABITS[label], habit_label=label.value, previous_habit=previous_habit,
        previous_habit_kept=kept, summary=summary)


def describe(trip: RoundTrip) -> str:
    """``"GOOGL: bought 10 (t1), sold (t3), +$200.00"``."""
    opened, closed = ("bought", "sold") if trip.direction == "LONG" else ("sold short", "bought back")
    return (f"{trip.symbol}: {opened} {trip.quantity} ({trip.open_trade_id}), {closed} ({trip.close_trade_id}), "
            f"{format_money(trip.pnl)}")


def _summary(monday: date, sunday: date, time_zone: str, n: int, counts: dict[str, int], net: Money,
             pnl: Money, trips: list[RoundTrip], best: RoundTrip | None, worst: RoundTrip | None,
             habit: str, previous_habit: str, kept: bool | None) -> str:
    trades = "1 trade" if n == 1 else f"{n} trades"
    parts = [f"{trades} in the week {monday.isoformat()} to {sunday.isoformat()} ({time_zone}): "
             + ", ".join(f"{counts[k]} {k}" for k in LABELS) + "."]
    closed = "1 round trip" if len(trips) == 1 else f"{len(trips)} round trips"
    parts.append(f"Realised P&L {format_money(pnl)} over {closed} closed this week; "
                 f"net cash flow {format_money(net)}.")
    if best is not None and worst is not None:
        if best is worst:
            parts.append(f"Only decision closed: {describe(best)}.")
        else:
            parts.append(f"Best decision: {describe(best)}. Worst decision: {describe(worst)}.")
    parts.append(f"Habit to practise: {habit}.")
    if kept is not None:
        parts.append("Last week's habit was kept." if kept else "Last week's habit was not kept yet.")
    return " ".join(parts)
