"""TradeFeatures at a trade's bar: values, no look-ahead, errors, batch equivalence."""

from __future__ import annotations

import dataclasses
import math
import re
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scorer_reference import ref_atr, ref_bbands, ref_rsi

from bsopt_common.marketdata import bundled_provider, load_csv
from bsopt_scorer.domain.features import (
    MIN_BARS,
    BarNotFoundError,
    InsufficientHistoryError,
    TradeFeatures,
    features_at,
    features_for,
    indicator_frame,
    locate_bar,
)

REPO = Path(__file__).resolve().parents[4]
MARKET = REPO.parent / "shared" / "data" / "market"


@pytest.fixture(scope="module")
def googl() -> pd.DataFrame:
    return bundled_provider().fetch_history("GOOGL")


def _reference_features(bars: pd.DataFrame, pos: int) -> TradeFeatures:
    """Features at row ``pos`` from the loop oracles, fed only rows 0..pos."""
    b = bars.iloc[: pos + 1]
    h, lo, c = b["high"].tolist(), b["low"].tolist(), b["close"].tolist()
    up, _, low = ref_bbands(c, 20, 2.0)
    width = up[-1] - low[-1]
    return TradeFeatures(
        rsi_14=ref_rsi(c, 14)[-1],
        atr_14=ref_atr(h, lo, c, 14)[-1],
        bollinger_position=0.5 if width == 0 else (c[-1] - low[-1]) / width,
        change_1d=c[-1] / c[-2] - 1,
        change_5d=c[-1] / c[-6] - 1,
        close_usd=c[-1],
    )


def _assert_features_close(a: TradeFeatures, b: TradeFeatures) -> None:
    for f in dataclasses.fields(TradeFeatures):
        assert getattr(a, f.name) == pytest.approx(getattr(b, f.name), rel=1e-9, abs=1e-7), f.name


def test_fields_map_one_to_one_onto_proto_message() -> None:
    proto = REPO / "proto" / "bsopt" / "ml_scorer" / "v1" / "ml_scorer.proto"
    if not proto.exists():
        pytest.skip(f"contract file not found at {proto}")
    body = re.search(r"message TradeFeatures \{(.*?)\n\}", proto.read_text(), re.S)
    assert body is not None
    proto_fields = re.findall(r"^\s*double (\w+) = \d+;", body.group(1), re.M)
    assert proto_fields == [f.name for f in dataclasses.fields(TradeFeatures)]


@pytest.mark.parametrize("day", ["2009-06-19", "2012-10-19", "2015-07-17", "2018-08-29"])
def test_features_at_matches_reference_on_googl(googl: pd.DataFrame, day: str) -> None:
    pos = googl.index.get_loc(pd.Timestamp(day))
    got = features_at(googl, date.fromisoformat(day))
    _assert_features_close(got, _reference_features(googl, pos))
    assert got.close_usd == googl["close"].iloc[pos]
    assert 0 <= got.rsi_14 <= 100 and got.atr_14 > 0
    assert all(isinstance(getattr(got, f.name), float) for f in dataclasses.fields(got))


def test_googl_earnings_gap_2015_07_17(googl: pd.DataFrame) -> None:
    """GOOGL jumped ~16% on 2015-07-17 (Q2 earnings): the features must show it."""
    f = features_at(googl, date(2015, 7, 17))
    assert f.change_1d > 0.10
    assert f.change_5d > 0.15
    assert f.rsi_14 > 70
    assert f.bollinger_position > 1.0


def test_no_look_ahead_altering_later_bars_changes_nothing(googl: pd.DataFrame) -> None:
    day = pd.Timestamp("2014-03-14")
    pos = googl.index.get_loc(day)
    before_at = features_at(googl, day.date())
    before_for = features_for(googl, [day.date()])[0]

    altered = googl.copy()
    rng = np.random.default_rng(42)
    later = altered.index > day
    scale = rng.uniform(0.2, 5.0, later.sum())
    for col in ("open", "high", "low", "close"):
        altered.loc[later, col] = altered.loc[later, col].to_numpy() * scale
    altered.loc[later, "volume"] = 0.0
    assert not altered.iloc[pos + 1 :].equals(googl.iloc[pos + 1 :])
    assert altered.iloc[: pos + 1].equals(googl.iloc[: pos + 1])

    assert features_at(altered, day.date()) == before_at
    assert features_for(altered, [day.date()])[0] == before_for
    # and dropping the future entirely gives the same answer too
    assert features_at(googl.iloc[: pos + 1], day.date()) == before_at


def test_altering_the_trade_bar_itself_does_change_features(googl: pd.DataFrame) -> None:
    day = pd.Timestamp("2014-03-14")
    altered = googl.copy()
    altered.loc[day, ["high", "close"]] = altered.loc[day, ["high", "close"]] * 1.05
    assert features_at(altered, day.date()) != features_at(googl, day.date())


def test_features_for_equals_features_at(googl: pd.DataFrame) -> None:
    rng = np.random.default_rng(0)
    positions = [*rng.integers(MIN_BARS - 1, len(googl), 40).tolist(), MIN_BARS - 1, len(googl) - 1]
    times: list[date | datetime] = [googl.index[p].date() for p in positions]
    times += [googl.index[positions[0]].to_pydatetime()]  # duplicate, datetime form
    batch = features_for(googl, times)
    assert len(batch) == len(times)
    for t, f in zip(times, batch, strict=True):
        assert f == features_at(googl, t)


def test_features_for_empty_and_on_error(googl: pd.DataFrame) -> None:
    assert features_for(googl, []) == []
    times = [date(2015, 3, 2), date(2015, 3, 7), googl.index[3].date()]  # ok, Saturday, too early
    with pytest.raises(BarNotFoundError):
        features_for(googl, times)
    out = features_for(googl, times, on_error="none")
    assert out[0] == features_at(googl, date(2015, 3, 2))
    assert out[1] is None and out[2] is None
    with pytest.raises(ValueError, match="on_error"):
        features_for(googl, times, on_error="skip")  # type: ignore[call-overload]


def test_insufficient_history_boundary(googl: pd.DataFrame) -> None:
    assert MIN_BARS == 20
    first_ok = googl.index[MIN_BARS - 1].date()
    too_early = googl.index[MIN_BARS - 2].date()
    f = features_at(googl, first_ok)
    assert all(math.isfinite(getattr(f, x.name)) for x in dataclasses.fields(f))
    with pytest.raises(InsufficientHistoryError, match="19 bar") as exc:
        features_at(googl, too_early)
    assert isinstance(exc.value, ValueError)
    with pytest.raises(InsufficientHistoryError):
        features_for(googl, [too_early])
    with pytest.raises(InsufficientHistoryError):
        features_at(googl, googl.index[0].date())


@pytest.mark.parametrize(
    "when",
    [date(2015, 3, 7), date(2015, 3, 8), date(2015, 12, 25), date(2009, 5, 1), date(2030, 1, 2)],
    ids=["saturday", "sunday", "christmas", "before-range", "after-range"],
)
def test_date_not_a_bar_raises_key_error(googl: pd.DataFrame, when: date) -> None:
    with pytest.raises(BarNotFoundError, match=when.isoformat()) as exc:
        features_at(googl, when)
    assert isinstance(exc.value, KeyError)


def test_datetime_during_the_day_maps_to_the_daily_bar(googl: pd.DataFrame) -> None:
    day = date(2016, 11, 9)
    expected = features_at(googl, day)
    assert features_at(googl, datetime(2016, 11, 9, 15, 30)) == expected
    assert features_at(googl, pd.Timestamp("2016-11-09 20:59:59")) == expected
    # aware datetimes are converted to UTC first: 01:00 at UTC+5 on the 10th is the 9th in UTC
    assert features_at(googl, datetime(2016, 11, 10, 1, 0, tzinfo=timezone(timedelta(hours=5)))) == expected
    assert locate_bar(googl, day) == googl.index.get_loc(pd.Timestamp(day))


def test_intraday_bars_need_an_exact_time() -> None:
    idx = pd.date_range("2017-01-02 00:00", periods=60, freq="h", name="time")
    close = 1.05 + 0.001 * np.sin(np.arange(60))
    cols = {"open": close, "high": close + 0.0005, "low": close - 0.0005, "close": close, "volume": 1.0}
    bars = pd.DataFrame(cols, index=idx)
    f = features_at(bars, datetime(2017, 1, 3, 5))
    assert f.close_usd == pytest.approx(close[29])
    with pytest.raises(BarNotFoundError):
        features_at(bars, datetime(2017, 1, 3, 5, 30))


def test_malformed_inputs(googl: pd.DataFrame) -> None:
    with pytest.raises(TypeError):
        features_at(googl, "2015-03-02")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        features_at(googl.reset_index(), date(2015, 3, 2))
    with pytest.raises(ValueError, match="columns"):
        features_at(googl.drop(columns=["high"]), date(2015, 3, 2))
    with pytest.raises(ValueError, match="sorted"):
        features_at(googl.iloc[::-1], date(2015, 3, 2))


def test_indicator_frame_shape(googl: pd.DataFrame) -> None:
    frame = indicator_frame(googl)
    assert frame.index.equals(googl.index)
    assert list(frame.columns) == [f.name for f in dataclasses.fields(TradeFeatures)]
    assert frame.iloc[: MIN_BARS - 1].isna().any(axis=1).all()
    assert frame.iloc[MIN_BARS - 1 :].notna().all().all()


def test_spy_file_from_shared_data_if_present() -> None:
    path = MARKET / "SPY_D.csv"
    if not path.exists():
        pytest.skip(f"shared market data not found at {path} (optional; GOOGL tests cover the same paths)")
    bars = load_csv(path)
    # 2008-10-15: SPY fell ~9.7% in a day, two days after a +14.0% rebound day, with the
    # bands already blown wide by the crash: weak RSI, close near the lower band
    f = features_at(bars, date(2008, 10, 15))
    assert f.change_1d < -0.09
    assert 20 < f.rsi_14 < 40
    assert 0 <= f.bollinger_position < 0.2
    assert f.atr_14 / f.close_usd > 0.05  # ~7% daily ranges
    _assert_features_close(f, _reference_features(bars, bars.index.get_loc(pd.Timestamp("2008-10-15"))))
