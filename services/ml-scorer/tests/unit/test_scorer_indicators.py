"""Indicators vs. independent loop implementations (TA-Lib logic), hand-computed cases
and real GOOGL daily bars."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scorer_reference import ref_atr, ref_bbands, ref_rsi, ref_true_range

from bsopt_common.marketdata import bundled_provider
from bsopt_scorer.domain.indicators import atr, bollinger, bollinger_position, pct_change, rsi, true_range


@pytest.fixture(scope="module")
def googl() -> pd.DataFrame:
    return bundled_provider().fetch_history("GOOGL")


def _random_bars(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    open_ = np.r_[close[0], close[:-1]] * (1 + rng.normal(0, 0.005, n))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.02, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.02, n))
    idx = pd.date_range("2020-01-01", periods=n, freq="B", name="time")
    return pd.DataFrame({"open": open_, "high": high, "low": low, "close": close, "volume": 1e6}, index=idx)


def _assert_matches(actual: pd.Series, expected: list[float], rtol: float = 1e-9, atol: float = 1e-9) -> None:
    a = actual.to_numpy()
    e = np.asarray(expected, dtype="float64")
    assert a.shape == e.shape
    np.testing.assert_array_equal(np.isnan(a), np.isnan(e))
    np.testing.assert_allclose(a[~np.isnan(e)], e[~np.isnan(e)], rtol=rtol, atol=atol)


# --------------------------------------------------------------------- vs reference loops


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("period", [2, 5, 14, 30])
def test_rsi_matches_reference_loop(seed: int, period: int) -> None:
    bars = _random_bars(300, seed)
    _assert_matches(rsi(bars["close"], period), ref_rsi(bars["close"].tolist(), period))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("period", [1, 2, 14, 30])
def test_atr_matches_reference_loop(seed: int, period: int) -> None:
    b = _random_bars(300, seed)
    expected = ref_atr(b["high"].tolist(), b["low"].tolist(), b["close"].tolist(), period)
    _assert_matches(atr(b["high"], b["low"], b["close"], period), expected)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(("period", "nbdev"), [(20, 2.0), (5, 1.5), (2, 2.0), (50, 3.0)])
def test_bollinger_matches_reference_loop(seed: int, period: int, nbdev: float) -> None:
    close = _random_bars(300, seed)["close"]
    up, mid, lo = bollinger(close, period, nbdev)
    e_up, e_mid, e_lo = ref_bbands(close.tolist(), period, nbdev)
    # the reference uses TA-Lib's E[x^2]-E[x]^2 variance, the module a two-pass std:
    # equal up to rounding of prices ~100
    _assert_matches(mid, e_mid)
    _assert_matches(up, e_up, rtol=1e-9, atol=1e-7)
    _assert_matches(lo, e_lo, rtol=1e-9, atol=1e-7)


def test_all_indicators_match_reference_on_real_googl(googl: pd.DataFrame) -> None:
    h, lo, c = googl["high"], googl["low"], googl["close"]
    _assert_matches(rsi(c), ref_rsi(c.tolist(), 14))
    _assert_matches(atr(h, lo, c), ref_atr(h.tolist(), lo.tolist(), c.tolist(), 14))
    _assert_matches(true_range(h, lo, c), ref_true_range(h.tolist(), lo.tolist(), c.tolist()))
    up, mid, low = bollinger(c)
    e_up, e_mid, e_lo = ref_bbands(c.tolist(), 20, 2.0)
    _assert_matches(mid, e_mid)
    _assert_matches(up, e_up, atol=1e-6)
    _assert_matches(low, e_lo, atol=1e-6)


# --------------------------------------------------------------------- hand-computable cases


def test_rsi_hand_computed_period_2() -> None:
    # d = +1, -1, +1 ; seed at 2: gain 0.5, loss 0.5 -> 50 ;
    # at 3: gain (0.5*1 + 1)/2 = 0.75, loss (0.5*1 + 0)/2 = 0.25 -> 75
    out = rsi(pd.Series([1.0, 2.0, 1.0, 2.0]), period=2)
    assert math.isnan(out.iloc[0]) and math.isnan(out.iloc[1])
    assert out.iloc[2] == pytest.approx(50.0)
    assert out.iloc[3] == pytest.approx(75.0)


def test_rsi_monotonic_rise_is_100_fall_is_0() -> None:
    up = pd.Series(np.arange(1.0, 41.0))
    down = pd.Series(np.arange(40.0, 0.0, -1.0))
    assert (rsi(up).dropna() == 100.0).all()
    assert (rsi(down).dropna() == 0.0).all()


def test_rsi_constant_series_is_zero_like_talib() -> None:
    # TA-Lib returns 0 (not 50) when average gain + average loss is zero
    out = rsi(pd.Series([5.0] * 30))
    assert out.isna().sum() == 14
    assert (out.dropna() == 0.0).all()


def test_rsi_lookback_and_short_input() -> None:
    close = _random_bars(50, 3)["close"]
    out = rsi(close, 14)
    assert out.iloc[:14].isna().all() and out.iloc[14:].notna().all()
    assert rsi(close.iloc[:14], 14).isna().all()  # exactly `period` values: none defined
    assert rsi(close.iloc[:15], 14).notna().sum() == 1
    assert rsi(pd.Series([], dtype="float64")).empty


def test_atr_hand_computed_period_2() -> None:
    h = pd.Series([10.0, 11.0, 12.0, 11.0])
    lo = pd.Series([9.0, 10.0, 10.0, 9.0])
    c = pd.Series([9.5, 10.5, 11.5, 9.5])
    # TR = [nan, 1.5, 2.0, 2.5] ; ATR[2] = (1.5+2)/2 = 1.75 ; ATR[3] = (1.75*1 + 2.5)/2 = 2.125
    assert true_range(h, lo, c).tolist()[1:] == [1.5, 2.0, 2.5]
    out = atr(h, lo, c, period=2)
    assert out.iloc[:2].isna().all()
    assert out.iloc[2] == pytest.approx(1.75)
    assert out.iloc[3] == pytest.approx(2.125)


def test_atr_uses_gaps_through_previous_close() -> None:
    # gap up: high-low is 1 but |low - prev close| is 5 -> TR 6
    h, lo, c = pd.Series([10.0, 16.0]), pd.Series([9.0, 15.0]), pd.Series([10.0, 15.5])
    assert true_range(h, lo, c).iloc[1] == pytest.approx(6.0)


def test_bollinger_hand_computed() -> None:
    close = pd.Series([1.0, 2.0, 3.0, 4.0])
    up, mid, lo = bollinger(close, period=4, nbdev=2.0)
    sd = math.sqrt(1.25)  # population variance of 1..4 = 1.25
    assert mid.iloc[:3].isna().all()
    assert mid.iloc[3] == pytest.approx(2.5)
    assert up.iloc[3] == pytest.approx(2.5 + 2 * sd)
    assert lo.iloc[3] == pytest.approx(2.5 - 2 * sd)
    pos = bollinger_position(close, up, lo)
    assert pos.iloc[3] == pytest.approx((4.0 - (2.5 - 2 * sd)) / (4 * sd))
    assert pos.iloc[:3].isna().all()


@pytest.mark.parametrize("value", [5.0, 0.1, 1234.567, 0.0])
def test_bollinger_constant_series_width_zero_position_half(value: float) -> None:
    close = pd.Series([value] * 25)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no divide-by-zero / invalid-value RuntimeWarning
        up, mid, lo = bollinger(close)
        pos = bollinger_position(close, up, lo)
    defined = mid.notna()
    assert defined.sum() == 6
    np.testing.assert_allclose((up - lo)[defined], 0.0, atol=1e-12)
    assert (pos[defined] == 0.5).all()


def test_bollinger_position_reference_points() -> None:
    up = pd.Series([12.0, 12.0, 12.0, 12.0, 12.0])
    lo = pd.Series([8.0, 8.0, 8.0, 8.0, 8.0])
    close = pd.Series([8.0, 10.0, 12.0, 13.0, 7.0])
    assert bollinger_position(close, up, lo).tolist() == [0.0, 0.5, 1.0, 1.25, -0.25]


def test_pct_change() -> None:
    close = pd.Series([100.0, 110.0, 99.0, 99.0, 120.0, 90.0, 105.0])
    one = pct_change(close, 1)
    five = pct_change(close, 5)
    assert math.isnan(one.iloc[0])
    assert one.iloc[1] == pytest.approx(0.10)
    assert one.iloc[2] == pytest.approx(-0.10)
    assert five.iloc[:5].isna().all()
    assert five.iloc[5] == pytest.approx(90.0 / 100.0 - 1)
    assert five.iloc[6] == pytest.approx(105.0 / 110.0 - 1)


# --------------------------------------------------------------------- shape, index, errors


def test_outputs_aligned_to_input_index_and_float64(googl: pd.DataFrame) -> None:
    h, lo, c = googl["high"], googl["low"], googl["close"]
    outs = [rsi(c), atr(h, lo, c), *bollinger(c), pct_change(c, 5), true_range(h, lo, c)]
    up, _, low = bollinger(c)
    outs.append(bollinger_position(c, up, low))
    for s in outs:
        assert isinstance(s, pd.Series)
        assert s.index.equals(c.index)
        assert s.dtype == np.float64


def test_indicators_are_causal() -> None:
    """Value at i computed on the whole series == value computed on the series cut at i."""
    b = _random_bars(200, 7)
    cut = 120
    h, lo, c = b["high"], b["low"], b["close"]
    hp, lp, cp = h.iloc[:cut], lo.iloc[:cut], c.iloc[:cut]
    pairs = [
        (rsi(c), rsi(cp)),
        (atr(h, lo, c), atr(hp, lp, cp)),
        (bollinger(c)[0], bollinger(cp)[0]),
        (bollinger(c)[2], bollinger(cp)[2]),
        (pct_change(c, 5), pct_change(cp, 5)),
    ]
    for full, prefix in pairs:
        pd.testing.assert_series_equal(full.iloc[:cut], prefix)


def test_accepts_plain_sequences() -> None:
    out = rsi([1.0, 2.0, 3.0, 2.0, 4.0], period=2)
    assert isinstance(out, pd.Series) and len(out) == 5


@pytest.mark.parametrize("bad", [0, 1, -3, 2.5, True, "14"])
def test_rsi_rejects_bad_period(bad: object) -> None:
    with pytest.raises(ValueError, match="period"):
        rsi(pd.Series(np.arange(30.0)), bad)  # type: ignore[arg-type]


def test_bad_parameters_raise() -> None:
    c = pd.Series(np.arange(1.0, 31.0))
    with pytest.raises(ValueError, match="period"):
        atr(c, c, c, 0)
    with pytest.raises(ValueError, match="period"):
        bollinger(c, 1)
    with pytest.raises(ValueError, match="nbdev"):
        bollinger(c, 20, -1.0)
    with pytest.raises(ValueError, match="period"):
        pct_change(c, 0)
    with pytest.raises(ValueError, match="lengths differ"):
        true_range(c, c.iloc[:-1], c)
    with pytest.raises(ValueError, match="lengths differ"):
        bollinger_position(c, c.iloc[:-1], c)


def test_nan_input_raises() -> None:
    c = pd.Series([1.0, 2.0, np.nan, 4.0] * 10)
    for fn in (rsi, lambda s: bollinger(s), lambda s: pct_change(s, 1), lambda s: atr(s, s, s)):
        with pytest.raises(ValueError, match="NaN"):
            fn(c)


# --------------------------------------------------------------------- real data ranges


def test_real_googl_values_in_range(googl: pd.DataFrame) -> None:
    h, lo, c = googl["high"], googl["low"], googl["close"]
    r = rsi(c).dropna()
    assert len(r) == len(c) - 14
    assert r.between(0, 100).all()
    assert 5 < r.min() < 35 and 65 < r.max() < 100  # real stocks visit both zones
    assert 45 < r.median() < 60

    a = atr(h, lo, c).dropna()
    assert (a > 0).all()
    # ATR as a fraction of price: daily ranges of a large cap, 0.5% .. 10%
    frac = (a / c.loc[a.index]).to_numpy()
    assert 0.005 < np.median(frac) < 0.05 and frac.max() < 0.10

    up, mid, low = (s.dropna() for s in bollinger(c))
    assert len(mid) == len(c) - 19
    assert (low <= mid).all() and (mid <= up).all() and ((up - low) > 0).all()
    pos = bollinger_position(c, *bollinger(c)[::2]).dropna()
    # with 2-sigma bands the close is inside most of the time
    assert 0.85 < pos.between(0, 1).mean() < 1.0
    assert pos.between(-1.5, 2.5).all()

    ch = pct_change(c, 1).dropna()
    assert ch.abs().max() < 0.25  # no unadjusted split in the data
