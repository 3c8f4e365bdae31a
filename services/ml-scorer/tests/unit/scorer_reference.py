"""Independent, deliberately plain loop implementations of TA-Lib RSI, ATR and BBANDS,
transcribed from the C sources' logic (``ta_RSI.c``, ``ta_ATR.c``/``ta_TRANGE.c``,
``ta_BBANDS.c`` with SMA) and Wilder (1978). They share no code with
``bsopt_scorer.domain.indicators`` (which uses pandas ewm / numpy windows) and serve as
the oracle of the unit tests. Plain Python lists in, lists out, NaN during warm-up."""

from __future__ import annotations

import math

NAN = float("nan")


def ref_rsi(close: list[float], period: int) -> list[float]:
    out = [NAN] * len(close)
    if len(close) <= period:
        return out
    gain = loss = 0.0
    for i in range(1, period + 1):
        d = close[i] - close[i - 1]
        if d < 0:
            loss -= d
        else:
            gain += d
    gain /= period
    loss /= period
    out[period] = 0.0 if abs(gain + loss) < 1e-8 else 100.0 * gain / (gain + loss)
    for i in range(period + 1, len(close)):
        d = close[i] - close[i - 1]
        gain *= period - 1
        loss *= period - 1
        if d < 0:
            loss -= d
        else:
            gain += d
        gain /= period
        loss /= period
        out[i] = 0.0 if abs(gain + loss) < 1e-8 else 100.0 * gain / (gain + loss)
    return out


def ref_true_range(high: list[float], low: list[float], close: list[float]) -> list[float]:
    out = [NAN] * len(close)
    for i in range(1, len(close)):
        out[i] = max(high[i] - low[i], abs(high[i] - close[i - 1]), abs(low[i] - close[i - 1]))
    return out


def ref_atr(high: list[float], low: list[float], close: list[float], period: int) -> list[float]:
    tr = ref_true_range(high, low, close)
    out = [NAN] * len(close)
    if len(close) <= period:
        return out
    prev = sum(tr[1 : period + 1]) / period
    out[period] = prev
    for i in range(period + 1, len(close)):
        prev = (prev * (period - 1) + tr[i]) / period
        out[i] = prev
    return out


def ref_bbands(close: list[float], period: int, nbdev: float) -> tuple[list[float], list[float], list[float]]:
    upper, middle, lower = [NAN] * len(close), [NAN] * len(close), [NAN] * len(close)
    for i in range(period - 1, len(close)):
        window = close[i - period + 1 : i + 1]
        mean = sum(window) / period
        # TA-Lib: variance = E[x^2] - E[x]^2, population; clamp tiny negatives to 0
        var = sum(x * x for x in window) / period - mean * mean
        sd = math.sqrt(var) if var > 0 else 0.0
        upper[i], middle[i], lower[i] = mean + nbdev * sd, mean, mean - nbdev * sd
    return upper, middle, lower
