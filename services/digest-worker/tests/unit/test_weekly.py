"""Weekly digests on a weekly tick: FIFO round trips, local weeks, habits, hand-computed
cases."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from bsopt_common.errors import InvalidArgument
from bsopt_common.money import CurrencyMismatch, Money
from bsopt_common.vocabulary import BiasLabel, Side
from bsopt_digest.domain.digest import ScoredTradeRecord, digest_id
from bsopt_digest.domain.pnl import match_round_trips
from bsopt_digest.domain.weekly import (
    HABITS,
    build_weekly_report,
    dominant_label,
    habit_kept,
    is_complete,
    last_completed_week,
    local_week_start,
    week_bounds,
    zone,
)


def t(tid: str, at: str, side: str, qty: int, price: str, label: str = "NONE", symbol: str = "GOOGL",
      user: str = "u1", currency: str = "USD") -> ScoredTradeRecord:
    return ScoredTradeRecord(trade_id=tid, user_id=user, symbol=symbol, side=Side(side), quantity=qty,
                             price=Money.of(price, currency),
                             executed_at=datetime.fromisoformat(at).replace(tzinfo=UTC), label=BiasLabel(label))


def usd(x: str) -> Money:
    return Money.of(x, "USD")


# ------------------------------------------------------------------ FIFO round trips

def test_fifo_hand_computed():
    # BUY 10 @ 100, BUY 5 @ 110, SELL 12 @ 120: 10 x 20 = +200, 2 x 10 = +20;
    # SELL 3 @ 90 closes the last 3 @ 110: 3 x -20 = -60
    trips = match_round_trips([
        t("b1", "2024-03-04T10:00", "BUY", 10, "100"), t("b2", "2024-03-05T10:00", "BUY", 5, "110"),
        t("s1", "2024-03-06T10:00", "SELL", 12, "120"), t("s2", "2024-03-07T10:00", "SELL", 3, "90")])
    assert [(r.open_trade_id, r.close_trade_id, r.quantity, r.pnl) for r in trips] == [
        ("b1", "s1", 10, usd("200")), ("b2", "s1", 2, usd("20")), ("b2", "s2", 3, usd("-60"))]
    assert {r.direction for r in trips} == {"LONG"}


def test_fifo_short_then_cover_and_symbols_apart():
    # SELL 4 @ 50 with nothing open opens a short; BUY 6 @ 45 covers 4 (4 x 5 = +20), opens 2 long
    trips = match_round_trips([
        t("s1", "2024-03-04T10:00", "SELL", 4, "50", symbol="X"),
        t("o1", "2024-03-04T11:00", "BUY", 1, "1", symbol="Y"),
        t("b1", "2024-03-05T10:00", "BUY", 6, "45", symbol="X"),
        t("s2", "2024-03-06T10:00", "SELL", 2, "44.5", symbol="X")])
    assert [(r.open_trade_id, r.close_trade_id, r.direction, r.quantity, r.pnl) for r in trips] == [
        ("s1", "b1", "SHORT", 4, usd("20")), ("b1", "s2", "LONG", 2, usd("-1.0"))]


def test_fifo_duplicates_count_once_and_currencies_must_match():
    trips = match_round_trips([t("b1", "2024-03-04T10:00", "BUY", 1, "10"), t("b1", "2024-03-04T10:00", "BUY", 1, "10"),
                               t("s1", "2024-03-05T10:00", "SELL", 2, "11")])
    assert [(r.quantity, r.pnl) for r in trips] == [(1, usd("1"))]
    with pytest.raises(CurrencyMismatch):
        match_round_trips([t("b1", "2024-03-04T10:00", "BUY", 1, "10"),
                           t("s1", "2024-03-05T10:00", "SELL", 1, "11", currency="EUR")])


# ------------------------------------------------------------------ local weeks

def test_weeks_in_the_users_time_zone():
    # Sunday 2024-03-10 16:00 UTC is Monday 01:00 in Tokyo: next week there, this week in UTC
    at = datetime(2024, 3, 10, 16, 0, tzinfo=UTC)
    assert local_week_start(at, "UTC") == date(2024, 3, 4)
    assert local_week_start(at, "Asia/Tokyo") == date(2024, 3, 11)
    assert week_bounds(date(2024, 3, 4), "Asia/Tokyo") == (datetime(2024, 3, 3, 15, tzinfo=UTC),
                                                          datetime(2024, 3, 10, 15, tzinfo=UTC))
    # Tokyo's week of 03-04 ends at Sunday 15:00 UTC; UTC's at Monday 00:00
    assert not is_complete(date(2024, 3, 4), "Asia/Tokyo", datetime(2024, 3, 10, 14, 59, 59, tzinfo=UTC))
    assert is_complete(date(2024, 3, 4), "Asia/Tokyo", datetime(2024, 3, 10, 15, 0, tzinfo=UTC))
    assert not is_complete(date(2024, 3, 4), "UTC", datetime(2024, 3, 10, 15, 0, tzinfo=UTC))
    assert last_completed_week(datetime(2024, 3, 10, 15, 0, tzinfo=UTC), "Asia/Tokyo") == date(2024, 3, 4)
    assert last_completed_week(datetime(2024, 3, 10, 15, 0, tzinfo=UTC), "UTC") == date(2024, 2, 26)


def test_dst_week_is_cut_at_local_midnight():
    # New York springs forward on 2024-03-10: the week of 03-04 is 167 hours long
    start, end = week_bounds(date(2024, 3, 4), "America/New_York")
    assert start == datetime(2024, 3, 4, 5, tzinfo=UTC) and end == datetime(2024, 3, 11, 4, tzinfo=UTC)


def test_bad_zone_and_not_a_monday():
    with pytest.raises(InvalidArgument):
        zone("Mars/Olympus")
    with pytest.raises(InvalidArgument):
        zone("../etc/passwd")
    with pytest.raises(InvalidArgument):
        week_bounds(date(2024, 3, 5), "UTC")


# ------------------------------------------------------------------ habits

@pytest.mark.parametrize(("counts", "label"), [
    ({"FOMO": 2, "PANIC": 1, "DISCIPLINE": 5, "NONE": 9}, BiasLabel.FOMO),
    ({"FOMO": 1, "PANIC": 1, "DISCIPLINE": 0, "NONE": 0}, BiasLabel.FOMO),  # tie: FOMO
    ({"FOMO": 0, "PANIC": 3, "DISCIPLINE": 0, "NONE": 0}, BiasLabel.PANIC),
    ({"FOMO": 0, "PANIC": 0, "DISCIPLINE": 1, "NONE": 4}, BiasLabel.DISCIPLINE),
    ({"FOMO": 0, "PANIC": 0, "DISCIPLINE": 0, "NONE": 4}, BiasLabel.NONE),
])
def test_dominant_label(counts, label):
    assert dominant_label(counts) is label


def c(fomo: int = 0, panic: int = 0, disc: int = 0, none: int = 0) -> dict[str, int]:
    return {"FOMO": fomo, "PANIC": panic, "DISCIPLINE": disc, "NONE": none}


def test_habit_kept():
    assert habit_kept(c(fomo=3), c(fomo=1, panic=5))  # fewer FOMO trades: kept
    assert not habit_kept(c(fomo=3), c(fomo=3))
    assert habit_kept(c(panic=2, fomo=1), c(panic=1, fomo=4))  # last week's habit answered PANIC
    assert habit_kept(c(disc=2), c(disc=1, none=3))  # no biased trade before nor now
    assert not habit_kept(c(none=2), c(panic=1))


# ------------------------------------------------------------------ the digest

def two_weeks() -> list[ScoredTradeRecord]:
    return [
        # week of 2024-02-26: two FOMO buys
        t("a1", "2024-02-27T15:00", "BUY", 10, "100", "FOMO"),
        t("a2", "2024-02-28T15:00", "BUY", 5, "110", "FOMO"),
        # week of 2024-03-04
        t("b1", "2024-03-04T15:00", "SELL", 12, "120", "DISCIPLINE"),  # +200 (a1) and +20 (a2)
        t("b2", "2024-03-05T15:00", "BUY", 4, "130", "FOMO"),
        t("b3", "2024-03-08T15:00", "SELL", 5, "95", "PANIC"),  # 3 x (95-110) = -45, 2 x (95-130) = -70
        # next week: ignored
        t("c1", "2024-03-11T15:00", "SELL", 2, "200", "NONE"),
    ]


def test_hand_computed_week():
    d = build_weekly_report("u1", date(2024, 3, 4), "UTC", two_weeks())
    assert d is not None
    assert (d.period_start, d.period_end, d.trades) == (date(2024, 3, 4), date(2024, 3, 10), 3)
    assert d.label_counts == {"FOMO": 1, "PANIC": 1, "DISCIPLINE": 1, "NONE": 0}
    # 200 + 20 - 45 - 70 = 105
    assert d.pnl == usd("105") and d.round_trips == 4
    # cash: +1440 - 520 + 475 = 1395
    assert d.net_cash_flow == usd("1395")
    assert d.best_decision is not None and d.worst_decision is not None
    best, worst = d.best_decision, d.worst_decision
    assert (best.open_trade_id, best.close_trade_id, best.pnl) == ("a1", "b1", usd("200"))
    assert (worst.open_trade_id, worst.close_trade_id, worst.pnl) == ("b2", "b3", usd("-70"))
    assert (d.habit_label, d.habit) == ("FOMO", HABITS[BiasLabel.FOMO])  # FOMO 1 = PANIC 1: FOMO
    # last week: 2 FOMO -> habit FOMO; this week 1 FOMO: kept
    assert d.previous_habit == HABITS[BiasLabel.FOMO] and d.previous_habit_kept is True
    assert d.digest_id == digest_id("u1", date(2024, 3, 4))
    assert "Realised P&L +$105.00 over 4 round trips" in d.summary
    assert "Best decision: GOOGL: bought 10 (a1), sold (b1), +$200.00" in d.summary
    assert "Last week's habit was kept." in d.summary


def test_first_week_has_no_previous_habit_and_no_round_trips():
    d = build_weekly_report("u1", date(2024, 2, 26), "UTC", two_weeks())
    assert d is not None
    assert d.pnl == usd("0") and d.round_trips == 0 and d.best_decision is None and d.worst_decision is None
    assert d.previous_habit == "" and d.previous_habit_kept is None
    assert d.net_cash_flow == usd("-1550")


def test_empty_week_and_other_users():
    assert build_weekly_report("u1", date(2024, 2, 19), "UTC", two_weeks()) is None
    assert build_weekly_report("u2", date(2024, 3, 4), "UTC", two_weeks()) is None


def test_time_zone_moves_trades_between_weeks():
    # Sunday 2024-03-10 16:00 UTC is the next Monday in Tokyo
    trades = [t("x1", "2024-03-05T10:00", "BUY", 1, "10", "FOMO"), t("x2", "2024-03-10T16:00", "SELL", 1, "12")]
    utc_week = build_weekly_report("u1", date(2024, 3, 4), "UTC", trades)
    tokyo_week = build_weekly_report("u1", date(2024, 3, 4), "Asia/Tokyo", trades)
    assert utc_week is not None and tokyo_week is not None
    assert (utc_week.trades, utc_week.pnl) == (2, usd("2"))
    assert (tokyo_week.trades, tokyo_week.pnl, tokyo_week.time_zone) == (1, usd("0"), "Asia/Tokyo")
    nxt = build_weekly_report("u1", date(2024, 3, 11), "Asia/Tokyo", trades)
    assert nxt is not None and nxt.pnl.amount == Decimal("2")
