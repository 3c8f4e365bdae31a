"""Technical indicators behind one interface, :class:`IndicatorLib`, with two
implementations:

- :class:`TalibIndicators` (the default of :mod:`bsopt_scorer.domain.features`): TA-Lib's
  C library through its Python wrapper (PyPI ``TA-Lib``, which ships wheels with the C
  library), ``talib.RSI``, ``talib.ATR``, ``talib.BBANDS`` and ``talib.SMA``;
- :class:`PandasIndicators`: the module-level numpy/pandas functions below
  (:func:`rsi`, :func:`atr`, :func:`bollinger`, :func:`sma`), kept as the reference the
  TA-Lib results are tested against (they agree within 1e-10 on the bundled GOOGL and
  EURUSD bars; TA-Lib is 30-70x faster on a few thousand bars).

Both take 1-D float64 arrays and return float64 arrays of the same length with the same
NaN warm-up (TA-Lib's "lookback") and raise the same ``ValueError`` on a bad period or a
NaN input.

The module-level functions take ``pandas.Series`` of float prices (any index; daily bars use the
``time`` ``DatetimeIndex`` of :mod:`bsopt_common.marketdata`) and returns float64
``Series`` with the same length and index as the input. Positions where the indicator is
not yet defined (its warm-up, TA-Lib's "lookback") hold NaN. Each value at position ``i``
depends only on inputs at positions ``<= i`` (the indicators are causal), so computing on
a longer series never changes earlier values.

Inputs must not contain NaN (bars that passed :func:`bsopt_common.marketdata.check_bars`
never do); a NaN raises ``ValueError`` rather than silently poisoning every later value of
a recursive indicator.

Sources
-------
- J. Welles Wilder Jr., *New Concepts in Technical Trading Systems* (1978): RSI, true
  range, ATR and "Wilder smoothing" (an exponential average with ``alpha = 1/period``,
  seeded with a simple average).
- TA-Lib (ta-lib.org, ``ta_RSI.c``, ``ta_ATR.c``, ``ta_TRANGE.c``, ``ta_BBANDS.c``) in its
  default (non-Metastock) compatibility mode with no unstable period: the reference the
  output values and NaN lookbacks here are tested against.
- John Bollinger, *Bollinger on Bollinger Bands* (2001): bands = SMA +/- k population
  standard deviations.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import pandas as pd
import talib

# TA-Lib's TA_IS_ZERO: |x| < 1e-8 counts as zero (used by RSI for "no movement at all").
_TA_EPSILON = 1e-8
# A Bollinger band narrower than this fraction of the middle band is degenerate (zero width
# up to floating-point rounding of the mean/std of identical values).
_BAND_REL_EPSILON = 1e-12


def _as_series(x: pd.Series | Sequence[float] | np.ndarray, name: str) -> pd.Series:
    s = x if isinstance(x, pd.Series) else pd.Series(np.asarray(x, dtype="float64"))
    s = s.astype("float64")
    nan = np.isnan(s.to_numpy())
    if nan.any():
        raise ValueError(f"{name}: input contains NaN at position {int(np.flatnonzero(nan)[0])}")
    return s


def _check_period(period: int, minimum: int, name: str) -> int:
    if isinstance(period, bool) or not isinstance(period, (int, np.integer)) or period < minimum:
        raise ValueError(f"{name}: period must be an integer >= {minimum}, got {period!r}")
    return int(period)


def _wilder_smooth(x: np.ndarray, first: int, period: int) -> np.ndarray:
    """Wilder smoothing of ``x`` (Wilder 1978; TA-Lib's RSI/ATR recursion).

    ``out[first] = mean(x[first-period+1 .. first])`` and for ``t > first``
    ``out[t] = (out[t-1] * (period-1) + x[t]) / period``; ``out[:first]`` is NaN.
    The recursion is an exponential moving average with ``alpha = 1/period`` and no
    bias adjustment, run by pandas' compiled ``ewm``.
    """
    out = np.full(len(x), np.nan)
    if len(x) <= first:
        return out
    seed = float(np.mean(x[first - period + 1 : first + 1]))
    seq = np.concatenate(([seed], x[first + 1 :]))
    out[first:] = pd.Series(seq).ewm(alpha=1.0 / period, adjust=False).mean().to_numpy()
    return out


def rsi(close: pd.Series, period: int = 14) -> pd.Series:
    """Wilder's Relative Strength Index (Wilder 1978), as TA-Lib ``RSI``.

    Let ``d[i] = close[i] - close[i-1]``, gains ``max(d, 0)`` and losses ``max(-d, 0)``.
    The average gain/loss at position ``period`` is the simple mean of the first
    ``period`` gains/losses (``d[1..period]``); afterwards each is Wilder-smoothed:
    ``avg[t] = (avg[t-1] * (period-1) + x[t]) / period``.
    ``RSI = 100 * avg_gain / (avg_gain + avg_loss)`` (equal to ``100 - 100/(1+RS)``).

    Args:
        close: closing prices, float (any price unit; RSI is unit-free).
        period: look-back in bars, integer >= 2 (TA-Lib's minimum).

    Returns:
        float64 Series aligned to ``close``, values in ``[0, 100]``; positions
        ``0 .. period-1`` are NaN (first value at position ``period``). A strictly rising
        window gives 100, a strictly falling one 0. Like TA-Lib, when
        ``avg_gain + avg_loss`` is zero (``|x| < 1e-8``: no price movement at all over
        the smoothing memory) the value is 0, not 50.

    Raises:
        ValueError: ``period`` < 2 or not an integer, or ``close`` contains NaN.
    """
    period = _check_period(period, 2, "rsi")
    s = _as_series(close, "rsi")
    c = s.to_numpy()
    d = np.full(len(c), np.nan)
    d[1:] = np.diff(c)
    gain = _wilder_smooth(np.where(d > 0, d, 0.0), period, period)
    loss = _wilder_smooth(np.where(d < 0, -d, 0.0), period, period)
    total = gain + loss
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(np.abs(total) < _TA_EPSILON, 0.0, 100.0 * gain / total)
    out[np.isnan(gain)] = np.nan
    return pd.Series(out, index=s.index, name=f"rsi_{period}", dtype="float64")


def true_range(high: pd.Series, low: pd.Series, close: pd.Series) -> pd.Series:
    """Wilder's true range (Wilder 1978), as TA-Lib ``TRANGE``.

    ``TR[i] = max(high[i] - low[i], |high[i] - close[i-1]|, |low[i] - close[i-1]|)``.

    Args:
        high, low, close: equally long float Series of bar prices (price units, USD for
            stocks), aligned position by position.

    Returns:
        float64 Series aligned to ``close`` in price units; position 0 is NaN (no previous
        close), as in TA-Lib.

    Raises:
        ValueError: the inputs differ in length or contain NaN.
    """
    h, lo, c = (_as_series(x, "true_range") for x in (high, low, close))
    if not len(h) == len(lo) == len(c):
        raise ValueError(f"true_range: high/low/close lengths differ ({len(h)}, {len(lo)}, {len(c)})")
    hv, lv, cv = h.to_numpy(), lo.to_numpy(), c.to_numpy()
    tr = np.full(len(cv), np.nan)
    if len(cv) > 1:
        prev = cv[:-1]
        tr[1:] = np.maximum.reduce([hv[1:] - lv[1:], np.abs(hv[1:] - prev), np.abs(lv[1:] - prev)])
    return pd.Series(tr, index=c.index, name="true_range", dtype="float64")


def atr(high: pd.Series, low: pd.Series, close: pd.Series, period: int = 14) -> pd.Series:
    """Wilder's Average True Range (Wilder 1978), as TA-Lib ``ATR``.

    The first ATR, at position ``period``, is the simple mean of the true ranges
    ``TR[1..period]`` (see :func:`true_range`); afterwards
    ``ATR[t] = (ATR[t-1] * (period-1) + TR[t]) / period``.

    Args:
        high, low, close: equally long float Series of bar prices (USD for stocks).
        period: look-back in bars, integer >= 1.

    Returns:
        float64 Series aligned to ``close``, in price units (USD), ``>= 0``; positions
        ``0 .. period-1`` are NaN.

    Raises:
        ValueError: ``period`` < 1 or not an integer, lengths differ, or NaN in input.
    """
    period = _check_period(period, 1, "atr")
    tr = true_range(high, low, close)
    out = _wilder_smooth(tr.to_numpy(), period, period)
    return pd.Series(out, index=tr.index, name=f"atr_{period}", dtype="float64")


def bollinger(
    close: pd.Series, period: int = 20, nbdev: float = 2.0
) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Bollinger bands (Bollinger 2001), as TA-Lib ``BBANDS`` with ``matype=SMA`` and
    ``nbdevup = nbdevdn = nbdev``.

    ``middle = SMA(close, period)``; ``sd`` = population standard deviation (ddof=0) of
    the same ``period`` closes; ``upper = middle + nbdev*sd``, ``lower = middle - nbdev*sd``.

    Args:
        close: closing prices, float (USD for stocks).
        period: window in bars, integer >= 2.
        nbdev: band half-width in standard deviations, finite float >= 0.

    Returns:
        ``(upper, middle, lower)``: three float64 Series aligned to ``close``, in price
        units; positions ``0 .. period-2`` are NaN (first value at position
        ``period-1``). On a constant window the three coincide (width 0).

    Raises:
        ValueError: bad ``period``/``nbdev``, or NaN in ``close``.
    """
    period = _check_period(period, 2, "bollinger")
    if not np.isfinite(nbdev) or nbdev < 0:
        raise ValueError(f"bollinger: nbdev must be finite and >= 0, got {nbdev!r}")
    s = _as_series(close, "bollinger")
    c = s.to_numpy()
    mid = np.full(len(c), np.nan)
    sd = np.full(len(c), np.nan)
    if len(c) >= period:
        win = np.lib.stride_tricks.sliding_window_view(c, period)
        mid[period - 1 :] = win.mean(axis=1)
        # two-pass population std: exactly 0 on a constant window (no negative variance)
        sd[period - 1 :] = win.std(axis=1, ddof=0)
    upper = pd.Series(mid + nbdev * sd, index=s.index, name="bb_upper", dtype="float64")
    middle = pd.Series(mid, index=s.index, name="bb_middle", dtype="float64")
    lower = pd.Series(mid - nbdev * sd, index=s.index, name="bb_lower", dtype="float64")
    return upper, middle, lower


def bollinger_position(close: pd.Series, upper: pd.Series, lower: pd.Series) -> pd.Series:
    """Where the close sits inside its Bollinger bands: ``(close - lower) / (upper - lower)``.

    0 = on the lower band, 0.5 = on the middle band, 1 = on the upper band; below 0 or
    above 1 = outside the bands. Unbounded.

    Degenerate bands: when ``upper == lower`` (a constant window; in practice
    ``upper - lower <= 1e-12 * |middle|`` to absorb rounding) the position is defined as
    0.5 ("at the middle"), never a division error.

    Args:
        close, upper, lower: equally long float Series in the same price unit, aligned
            position by position (e.g. the outputs of :func:`bollinger`).

    Returns:
        float64 Series (unit-free) aligned to ``close``; NaN where a band is NaN (warm-up).

    Raises:
        ValueError: lengths differ or ``close`` contains NaN.
    """
    c = _as_series(close, "bollinger_position")
    u = np.asarray(upper, dtype="float64")
    lo = np.asarray(lower, dtype="float64")
    if not len(c) == len(u) == len(lo):
        raise ValueError(f"bollinger_position: lengths differ ({len(c)}, {len(u)}, {len(lo)})")
    cv = c.to_numpy()
    width = u - lo
    middle = (u + lo) / 2.0
    degenerate = width <= _BAND_REL_EPSILON * np.abs(middle)
    with np.errstate(invalid="ignore", divide="ignore"):
        pos = np.where(degenerate, 0.5, (cv - lo) / np.where(degenerate, 1.0, width))
    pos[np.isnan(width)] = np.nan
    return pd.Series(pos, index=c.index, name="bollinger_position", dtype="float64")


def sma(close: pd.Series, period: int = 20) -> pd.Series:
    """Simple moving average, as TA-Lib ``SMA``: the mean of the last ``period`` closes.

    Args:
        close: prices, float (any unit; the output has the same unit).
        period: window in bars, integer >= 2 (TA-Lib's minimum).

    Returns:
        float64 Series aligned to ``close``; positions ``0 .. period-2`` are NaN (first
        value at position ``period-1``).

    Raises:
        ValueError: ``period`` < 2 or not an integer, or NaN in ``close``.
    """
    period = _check_period(period, 2, "sma")
    s = _as_series(close, "sma")
    c = s.to_numpy()
    out = np.full(len(c), np.nan)
    if len(c) >= period:
        out[period - 1 :] = np.lib.stride_tricks.sliding_window_view(c, period).mean(axis=1)
    return pd.Series(out, index=s.index, name=f"sma_{period}", dtype="float64")


def pct_change(close: pd.Series, n: int = 1) -> pd.Series:
    """Simple return over ``n`` bars: ``close[i] / close[i-n] - 1``.

    Args:
        close: closing prices, float, positive (USD for stocks).
        n: distance in bars, integer >= 1.

    Returns:
        float64 Series (a fraction: 0.05 = +5%) aligned to ``close``; positions
        ``0 .. n-1`` are NaN.

    Raises:
        ValueError: ``n`` < 1 or not an integer, or NaN in ``close``.
    """
    n = _check_period(n, 1, "pct_change")
    s = _as_series(close, "pct_change")
    c = s.to_numpy()
    out = np.full(len(c), np.nan)
    if len(c) > n:
        with np.errstate(invalid="ignore", divide="ignore"):
            out[n:] = c[n:] / c[:-n] - 1.0
    return pd.Series(out, index=s.index, name=f"change_{n}", dtype="float64")


# --------------------------------------------------------------------- the interface

#: A 1-D float64 numpy array: the inputs and outputs of an :class:`IndicatorLib`.
FloatArray = npt.NDArray[np.float64]


@runtime_checkable
class IndicatorLib(Protocol):
    """The indicators the scorer's features need, on 1-D float64 numpy arrays.

    Conventions shared by every implementation (and checked by the unit tests against
    both):

    - inputs: 1-D arrays (anything ``np.asarray`` turns into float64: a numpy array, a
      ``pandas.Series``, a list) of bar prices in price units (USD for stocks), oldest
      first; several inputs (high/low/close) must have equal lengths;
    - outputs: new float64 arrays of the input's length, position ``i`` depending only on
      inputs ``0..i`` (causal); the warm-up positions (TA-Lib's lookback) are NaN and an
      input shorter than the warm-up gives all NaN (an empty input, an empty output);
    - errors: ``ValueError`` for a period below the minimum or not an integer (the
      messages name ``period``), a NaN input (naming its position), unequal lengths or an
      input that is not 1-D.
    """

    @property
    def name(self) -> str:
        """Short name for logs and benchmarks (``"talib"``, ``"pandas"``)."""
        ...

    def rsi(self, close: npt.ArrayLike, period: int = 14) -> FloatArray:
        """Wilder's RSI (TA-Lib ``RSI``; see :func:`rsi`): unit-free, ``0..100``; NaN at
        positions ``0 .. period-1``; ``period`` >= 2."""
        ...

    def atr(self, high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike, period: int = 14) -> FloatArray:
        """Wilder's ATR (TA-Lib ``ATR``; see :func:`atr`): price units, ``>= 0``; NaN at
        positions ``0 .. period-1``; ``period`` >= 1."""
        ...

    def bbands(
        self, close: npt.ArrayLike, period: int = 20, nbdev: float = 2.0
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Bollinger bands ``(upper, middle, lower)`` (TA-Lib ``BBANDS``, ``matype`` SMA,
        ``nbdevup = nbdevdn = nbdev``, population std; see :func:`bollinger`): price
        units; NaN at positions ``0 .. period-2``; ``period`` >= 2, ``nbdev`` finite and
        >= 0."""
        ...

    def sma(self, close: npt.ArrayLike, period: int = 20) -> FloatArray:
        """Simple moving average (TA-Lib ``SMA``; see :func:`sma`): price units; NaN at
        positions ``0 .. period-2``; ``period`` >= 2."""
        ...


def _as_array(x: npt.ArrayLike, name: str) -> FloatArray:
    a = np.ascontiguousarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name}: input must be 1-D, got shape {a.shape}")
    nan = np.isnan(a)
    if nan.any():
        raise ValueError(f"{name}: input contains NaN at position {int(np.flatnonzero(nan)[0])}")
    return a


def _as_arrays(name: str, *xs: npt.ArrayLike) -> list[FloatArray]:
    arrays = [_as_array(x, name) for x in xs]
    if len({len(a) for a in arrays}) > 1:
        raise ValueError(f"{name}: high/low/close lengths differ ({', '.join(str(len(a)) for a in arrays)})")
    return arrays


def _check_nbdev(nbdev: float, name: str) -> float:
    if isinstance(nbdev, bool) or not isinstance(nbdev, (int, float, np.floating, np.integer)):
        raise ValueError(f"{name}: nbdev must be a finite number >= 0, got {nbdev!r}")
    if not np.isfinite(nbdev) or nbdev < 0:
        raise ValueError(f"{name}: nbdev must be finite and >= 0, got {nbdev!r}")
    return float(nbdev)


class TalibIndicators:
    """:class:`IndicatorLib` on TA-Lib (``talib.RSI``, ``talib.ATR``, ``talib.BBANDS``
    with ``matype=MA_Type.SMA``, ``talib.SMA``), TA-Lib's default compatibility mode (not
    Metastock) with no unstable period.

    Inputs are validated before TA-Lib sees them (TA-Lib itself would skip leading NaNs
    and raise a generic ``Exception`` on a bad period), so errors are the ``ValueError``
    of the interface.

    One numerical difference from :class:`PandasIndicators`: TA-Lib computes the
    Bollinger variance as ``E[x^2] - E[x]^2`` over running sums and treats a variance
    below 1e-8 as zero, so a window whose standard deviation is under 1e-4 price units
    gets bands of zero width (a Bollinger position of 0.5) where the pandas reference
    still has a (tiny) width. Real daily stock prices never come near that; the bundled
    EURUSD hourly bars (prices ~1.1) do not either (tested).
    """

    @property
    def name(self) -> str:
        return "talib"

    def rsi(self, close: npt.ArrayLike, period: int = 14) -> FloatArray:
        period = _check_period(period, 2, "rsi")
        out: FloatArray = talib.RSI(_as_array(close, "rsi"), timeperiod=period)
        return out

    def atr(self, high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike, period: int = 14) -> FloatArray:
        period = _check_period(period, 1, "atr")
        h, lo, c = _as_arrays("atr", high, low, close)
        out: FloatArray = talib.ATR(h, lo, c, timeperiod=period)
        return out

    def bbands(
        self, close: npt.ArrayLike, period: int = 20, nbdev: float = 2.0
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        period = _check_period(period, 2, "bollinger")
        k = _check_nbdev(nbdev, "bollinger")
        upper, middle, lower = talib.BBANDS(
            _as_array(close, "bollinger"), timeperiod=period, nbdevup=k, nbdevdn=k, matype=talib.MA_Type.SMA
        )
        return upper, middle, lower

    def sma(self, close: npt.ArrayLike, period: int = 20) -> FloatArray:
        period = _check_period(period, 2, "sma")
        out: FloatArray = talib.SMA(_as_array(close, "sma"), timeperiod=period)
        return out


class PandasIndicators:
    """:class:`IndicatorLib` on this module's numpy/pandas functions (:func:`rsi`,
    :func:`atr`, :func:`bollinger`, :func:`sma`): the reference implementation, tested
    against independent loop oracles and hand-computed cases, that TA-Lib's results are
    checked against."""

    @property
    def name(self) -> str:
        return "pandas"

    def rsi(self, close: npt.ArrayLike, period: int = 14) -> FloatArray:
        period = _check_period(period, 2, "rsi")
        out: FloatArray = rsi(pd.Series(_as_array(close, "rsi")), period).to_numpy()
        return out

    def atr(self, high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike, period: int = 14) -> FloatArray:
        period = _check_period(period, 1, "atr")
        h, lo, c = (pd.Series(a) for a in _as_arrays("atr", high, low, close))
        out: FloatArray = atr(h, lo, c, period).to_numpy()
        return out

    def bbands(
        self, close: npt.ArrayLike, period: int = 20, nbdev: float = 2.0
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        period = _check_period(period, 2, "bollinger")
        k = _check_nbdev(nbdev, "bollinger")
        upper, middle, lower = bollinger(pd.Series(_as_array(close, "bollinger")), period, k)
        return upper.to_numpy(), middle.to_numpy(), lower.to_numpy()

    def sma(self, close: npt.ArrayLike, period: int = 20) -> FloatArray:
        period = _check_period(period, 2, "sma")
        out: FloatArray = sma(pd.Series(_as_array(close, "sma")), period).to_numpy()
        return out
