"""A fill's daily bar is its New York trading day: an Alpaca fill at 01:30 UTC belongs to
the previous day's session; bar-stamped paper fills and intraday bars keep their instant."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pandas as pd

from bsopt_common.marketdata import bundled_provider
from bsopt_scorer.domain.features import features_at
from bsopt_scorer.scoring import bar_key


def test_an_after_hours_fill_past_midnight_utc_is_the_new_york_day_before() -> None:
    fill = datetime(2024, 3, 5, 1, 30, tzinfo=UTC)  # 20:30 EST on the 4th
    assert bar_key(fill, daily=True) == date(2024, 3, 4)
    summer = datetime(2024, 7, 2, 3, 59, tzinfo=UTC)  # 23:59 EDT on the 1st
    assert bar_key(summer, daily=True) == date(2024, 7, 1)
    assert bar_key(datetime(2024, 7, 2, 4, 0, tzinfo=UTC), daily=True) == date(2024, 7, 2)  # 00:00 EDT


def test_a_session_fill_and_a_bar_stamped_fill_keep_their_date() -> None:
    assert bar_key(datetime(2024, 3, 5, 15, 0, tzinfo=UTC), daily=True) == date(2024, 3, 5)
    paper = datetime(2024, 3, 5, tzinfo=UTC)  # the paper broker fills at the bar's own stamp
    assert bar_key(paper, daily=True) == datetime(2024, 3, 5)
    other_zone = datetime(2024, 3, 4, 21, 30, tzinfo=timezone(-timedelta(hours=5)))  # = 02:30 UTC on the 5th
    assert bar_key(other_zone, daily=True) == date(2024, 3, 4)


def test_intraday_bars_are_matched_by_the_utc_instant() -> None:
    fill = datetime(2017, 3, 1, 1, 0, tzinfo=UTC)
    assert bar_key(fill, daily=False) == datetime(2017, 3, 1, 1, 0)


def test_features_of_a_late_fill_are_the_previous_sessions() -> None:
    bars = bundled_provider().fetch_history("GOOGL", end=date(2018, 3, 6))
    late = datetime(2018, 3, 6, 1, 30, tzinfo=UTC)  # 20:30 EST on Monday 5 March
    got = features_at(bars, bar_key(late, daily=True))
    assert got == features_at(bars, date(2018, 3, 5))
    assert got != features_at(bars, date(2018, 3, 6))
    assert pd.Timestamp("2018-03-06") in bars.index  # the UTC date's bar was there to be (wrongly) taken
