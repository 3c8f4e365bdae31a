"""OHLCV bars behind one :class:`MarketDataProvider` interface.

Bars are a ``pandas.DataFrame`` indexed by a tz-naive ``DatetimeIndex`` named ``time``
(bar open time; the date for daily bars), sorted ascending and unique, with float64
columns ``open``, ``high``, ``low``, ``close`` (price units of the symbol, USD for
stocks) and ``volume`` (shares or units).

Every ingest passes :func:`check_bars` and fails loudly with :class:`DataQualityError`.

Providers here: :class:`CsvMarketDataProvider` (files on disk, including the GOOGL daily
and EURUSD hourly bars bundled in the ``gym-anytrading`` wheel, see
:func:`bundled_provider`). The Alpaca and random-walk providers plug in behind the same
protocol in later work.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from importlib import resources
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

COLUMNS = ("open", "high", "low", "close", "volume")


class DataQualityError(ValueError):
    """Bars failed a data-quality check (unsorted or duplicate timestamps, NaN,
    high below open/close, low above open/close, missing columns)."""


class UnknownSymbolError(KeyError):
    """The provider has no bars for the requested symbol."""


@dataclass(frozen=True)
class Bar:
    symbol: str
    time: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float


class MarketDataProvider(Protocol):
    def symbols(self) -> list[str]: ...

    def fetch_history(self, symbol: str, start: date | None = None, end: date | None = None) -> pd.DataFrame:
        """Bars with ``start <= time.date() <= end`` (both inclusive, None = open)."""
        ...

    def fetch_snapshot(self, symbol: str, as_of: datetime | date) -> Bar:
        """The bar whose time equals ``as_of`` (dates match daily bars). Raises
        ``KeyError`` when there is no bar at that time."""
        ...


_TIME_NAMES = ("time", "date", "datetime", "timestamp", "gmt time")


def normalise_bars(raw: pd.DataFrame, *, source: str = "<frame>") -> pd.DataFrame:
    """Map a raw OHLCV table (any of the column spellings found in the wild) to the
    canonical frame described in the module docstring, then :func:`check_bars` it.

    Accepts ``Date``/``date``/``Time`` columns, ``YYYY-MM-DD`` and
    ``dd.mm.yyyy HH:MM:SS.mmm`` timestamps; ignores extra columns (``Adj Close``,
    ``dividend``, ``split``, a leading unnamed index). Prices are taken as given: the
    files used here are already split-adjusted.

    Raises DataQualityError when a column is missing or a timestamp cannot be parsed.
    """
    cols = {c: str(c).strip().lower() for c in raw.columns}
    df = raw.rename(columns=cols)
    time_col = next((c for c in _TIME_NAMES if c in df.columns), None)
    if time_col is None:
        raise DataQualityError(f"{source}: no time column (expected one of {_TIME_NAMES}); got {list(raw.columns)}")
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DataQualityError(f"{source}: missing columns {missing}; got {list(raw.columns)}")
    text = df[time_col].astype(str).str.strip()
    if text.str.match(r"^\d{2}\.\d{2}\.\d{4}").all():
        times = pd.to_datetime(text, format="%d.%m.%Y %H:%M:%S.%f", errors="coerce")
    else:
        times = pd.to_datetime(text, format="ISO8601", errors="coerce")
    if times.isna().any():
        bad = text[times.isna()].iloc[0]
        raise DataQualityError(f"{source}: unparseable timestamp {bad!r}")
    out = pd.DataFrame({c: pd.to_numeric(df[c], errors="coerce").astype("float64") for c in COLUMNS})
    out.index = pd.DatetimeIndex(times.values, name="time")
    check_bars(out, source=source)
    return out


def check_bars(bars: pd.DataFrame, *, source: str = "<frame>") -> None:
    """Raise DataQualityError unless timestamps are sorted and unique, no value is NaN,
    ``high >= max(open, close)`` and ``low <= min(open, close)``."""
    if len(bars) == 0:
        raise DataQualityError(f"{source}: no bars")
    idx = bars.index
    if not idx.is_monotonic_increasing:
        raise DataQualityError(f"{source}: timestamps are not sorted ascending")
    if idx.has_duplicates:
        raise DataQualityError(f"{source}: duplicate timestamp {idx[idx.duplicated()][0]}")
    values = bars.loc[:, list(COLUMNS)].to_numpy(dtype="float64")
    if np.isnan(values).any():
        row = bars.index[np.isnan(values).any(axis=1)][0]
        raise DataQualityError(f"{source}: NaN in bar at {row}")
    o, h, low, c = (bars[k].to_numpy() for k in ("open", "high", "low", "close"))
    bad_high = h < np.maximum(o, c) - 1e-9
    if bad_high.any():
        raise DataQualityError(f"{source}: high below open/close at {bars.index[bad_high][0]}")
    bad_low = low > np.minimum(o, c) + 1e-9
    if bad_low.any():
        raise DataQualityError(f"{source}: low above open/close at {bars.index[bad_low][0]}")


def load_csv(path: str | Path) -> pd.DataFrame:
    """Read and normalise one OHLCV CSV file (see :func:`normalise_bars`)."""
    p = Path(path)
    try:
        raw = pd.read_csv(p)
    except (OSError, pd.errors.ParserError) as exc:
        raise DataQualityError(f"{p}: cannot read CSV: {exc}") from exc
    return normalise_bars(raw, source=str(p))


class CsvMarketDataProvider:
    """Bars from CSV files, one per symbol, loaded lazily and cached in memory."""

    def __init__(self, files: dict[str, str | Path]):
        self._files = {s.upper(): Path(p) for s, p in files.items()}
        self._cache: dict[str, pd.DataFrame] = {}

    def symbols(self) -> list[str]:
        return sorted(self._files)

    def _bars(self, symbol: str) -> pd.DataFrame:
        key = symbol.upper()
        if key not in self._files:
            raise UnknownSymbolError(f"no bars for symbol {symbol!r}; known: {self.symbols()}")
        if key not in self._cache:
            self._cache[key] = load_csv(self._files[key])
        return self._cache[key]

    def fetch_history(self, symbol: str, start: date | None = None, end: date | None = None) -> pd.DataFrame:
        bars = self._bars(symbol)
        dates = bars.index.normalize()
        mask = np.ones(len(bars), dtype=bool)
        if start is not None:
            mask &= dates >= pd.Timestamp(start)
        if end is not None:
            mask &= dates <= pd.Timestamp(end)
        return bars.loc[mask].copy()

    def fetch_snapshot(self, symbol: str, as_of: datetime | date) -> Bar:
        bars = self._bars(symbol)
        ts = pd.Timestamp(as_of)
        if ts.tzinfo is not None:
            ts = ts.tz_convert("UTC").tz_localize(None)
        try:
            row = bars.loc[ts]
        except KeyError:
            raise KeyError(f"no {symbol.upper()} bar at {ts.isoformat()}") from None
        return Bar(symbol.upper(), ts.to_pydatetime(), *(float(row[c]) for c in COLUMNS))


def bundled_provider() -> CsvMarketDataProvider:
    """GOOGL daily bars (2009-05-22 .. 2018-08-29) and EURUSD hourly bars (2017) shipped
    inside the ``gym-anytrading`` wheel (AminHP/gym-anytrading, MIT), so every fresh
    install has real data."""
    data = resources.files("gym_anytrading.datasets") / "data"
    return CsvMarketDataProvider(
        {"GOOGL": Path(str(data / "STOCKS_GOOGL.csv")), "EURUSD": Path(str(data / "FOREX_EURUSD_1H_ASK.csv"))}
    )
