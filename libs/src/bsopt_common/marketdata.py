"""OHLCV bars behind one :class:`MarketDataProvider` interface.

Bars are a ``pandas.DataFrame`` indexed by a tz-naive ``DatetimeIndex`` named ``time``
(bar open time; the date for daily bars), sorted ascending and unique, with float64
columns ``open``, ``high``, ``low``, ``close`` (price units of the symbol, USD for
stocks) and ``volume`` (shares or units).

Every ingest passes :func:`check_bars` and fails loudly with :class:`DataQualityError`.

Providers here: :class:`CsvMarketDataProvider` (files on disk, including the GOOGL daily
and EURUSD hourly bars bundled in the ``gym-anytrading`` wheel, see
:func:`bundled_provider`); :class:`AlpacaBarsProvider` (daily bars from Alpaca's Market
Data API through alpaca-py, the ``alpaca`` extra, imported lazily); and
:class:`CompositeMarketDataProvider` (the bundled bars where they cover a symbol and date,
else another provider's).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

COLUMNS = ("open", "high", "low", "close", "volume")


class DataQualityError(ValueError):
    """Bars failed a data-quality check (unsorted or duplicate timestamps, NaN,
    high below open/close, low above open/close, missing columns)."""


class UnknownSymbolError(KeyError):
    """The provider has no bars for the requested symbol."""


class MarketDataUnavailableError(RuntimeError):
    """The market-data source could not answer (unreachable, timed out, 5xx, rate
    limited, refused the credentials). Transient: callers retry; it says nothing about
    the symbol."""


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
        return _slice(self._bars(symbol), start, end)

    def fetch_snapshot(self, symbol: str, as_of: datetime | date) -> Bar:
        return _snapshot(self._bars(symbol), symbol, as_of)


def bundled_provider() -> CsvMarketDataProvider:
    """GOOGL daily bars (2009-05-22 .. 2018-08-29) and EURUSD hourly bars (2017) shipped
    inside the ``gym-anytrading`` wheel (AminHP/gym-anytrading, MIT), so every fresh
    install has real data."""
    data = resources.files("gym_anytrading.datasets") / "data"
    return CsvMarketDataProvider(
        {"GOOGL": Path(str(data / "STOCKS_GOOGL.csv")), "EURUSD": Path(str(data / "FOREX_EURUSD_1H_ASK.csv"))}
    )


def _slice(bars: pd.DataFrame, start: date | None, end: date | None) -> pd.DataFrame:
    dates = bars.index.normalize()
    mask = np.ones(len(bars), dtype=bool)
    if start is not None:
        mask &= dates >= pd.Timestamp(start)
    if end is not None:
        mask &= dates <= pd.Timestamp(end)
    return bars.loc[mask].copy()


def _snapshot(bars: pd.DataFrame, symbol: str, as_of: datetime | date) -> Bar:
    ts = pd.Timestamp(as_of)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    try:
        row = bars.loc[ts]
    except KeyError:
        raise KeyError(f"no {symbol.upper()} bar at {ts.isoformat()}") from None
    return Bar(symbol.upper(), ts.to_pydatetime(), *(float(row[c]) for c in COLUMNS))


#: Alpaca's daily bars open at midnight US/Eastern (``t`` = 04:00Z or 05:00Z); the bar's
#: date is its exchange date, as in the bundled CSVs.
EXCHANGE_TZ = ZoneInfo("America/New_York")


@dataclass
class _Cached:
    bars: pd.DataFrame
    since: date
    fetched_at: float


class AlpacaBarsProvider:
    """Daily bars from Alpaca's Market Data API v2 (``GET /v2/stocks/bars``, through
    alpaca-py's ``StockHistoricalDataClient.get_stock_bars``, ``TimeFrame.Day``,
    split-adjusted), as the frame described in the module docstring (bar date = exchange
    date in New York, midnight, tz-naive).

    Per process, each symbol's bars are fetched once, from ``history_days`` (calendar days)
    before today up to now, and kept for ``cache_ttl_s`` seconds. An open ``start`` means
    ``lookback_days`` before ``end``; a request reaching further back than the cache
    refetches from there. Every HTTP request times out after
    ``timeout_s`` seconds. ``base_url`` overrides Alpaca's data URL (a proxy or the local
    stand-in); ``feed`` is Alpaca's ``sip``/``iex``/``otc`` (``None``: the plan's default).

    Raises :class:`UnknownSymbolError` when Alpaca has no bars for the symbol (an empty
    answer, 400/404/422), :class:`MarketDataUnavailableError` for anything else that
    went wrong (connection refused, timeout, 401/403, 429, 5xx): retry later.
    """

    def __init__(self, api_key_id: str, secret_key: str, *, base_url: str | None = None,
                 cache_ttl_s: float = 900.0, timeout_s: float = 10.0, history_days: int = 730,
                 lookback_days: int = 365,
                 feed: str | None = None, clock: Callable[[], float] = time.monotonic):
        self._api_key_id = api_key_id
        self._secret_key = secret_key
        self.base_url = base_url
        self.cache_ttl_s = cache_ttl_s
        self.timeout_s = timeout_s
        self.history_days = history_days
        self.lookback_days = lookback_days
        self.feed = feed
        self._clock = clock
        self._cache: dict[str, _Cached] = {}
        self._lock = threading.Lock()
        self._client: Any = None
        self.requests = 0
        """Bars fetched from Alpaca (one per symbol and refresh; paging not counted)."""

    def symbols(self) -> list[str]:
        """The symbols fetched so far (Alpaca's universe is not listed)."""
        with self._lock:
            return sorted(self._cache)

    def _data_client(self) -> Any:
        if self._client is None:
            import requests
            from alpaca.data.historical.stock import StockHistoricalDataClient

            timeout_s = self.timeout_s

            class _TimeoutSession(requests.Session):
                def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> requests.Response:
                    kwargs.setdefault("timeout", timeout_s)
                    return super().request(method, url, *args, **kwargs)

            client = StockHistoricalDataClient(self._api_key_id, self._secret_key, url_override=self.base_url)
            client._session = _TimeoutSession()
            client._retry = 0  # no sleeping retries inside a consumer; the caller retries
            self._client = client
        return self._client

    def _fetch(self, symbol: str, since: date) -> pd.DataFrame:
        import requests
        from alpaca.common.exceptions import APIError
        from alpaca.data.enums import Adjustment, DataFeed
        from alpaca.data.requests import StockBarsRequest
        from alpaca.data.timeframe import TimeFrame

        request = StockBarsRequest(
            symbol_or_symbols=symbol, timeframe=TimeFrame.Day, adjustment=Adjustment.ALL,
            start=datetime(since.year, since.month, since.day, tzinfo=EXCHANGE_TZ),
            # Free plans refuse SIP data of the last 15 minutes.
            end=datetime.now(UTC) - timedelta(minutes=16),
            feed=DataFeed(self.feed) if self.feed else None,
        )
        try:
            barset = self._data_client().get_stock_bars(request)
        except APIError as exc:
            status = exc.status_code
            if status in (400, 404, 422):
                raise UnknownSymbolError(f"Alpaca has no bars for symbol {symbol!r}: {exc}") from None
            raise MarketDataUnavailableError(f"Alpaca market data answered {status}: {exc}") from exc
        except (requests.RequestException, OSError, ValueError) as exc:
            raise MarketDataUnavailableError(f"Alpaca market data unreachable: {type(exc).__name__}: {exc}") from exc
        rows = barset.data.get(symbol) or []
        if not rows:
            raise UnknownSymbolError(f"Alpaca has no bars for symbol {symbol!r} since {since.isoformat()}")
        # Through normalise_bars, as the CSVs are, so the frame is the same to the dtype.
        raw = pd.DataFrame({"time": [b.timestamp.astimezone(EXCHANGE_TZ).date().isoformat() for b in rows]}
                           | {c: [float(getattr(b, c)) for b in rows] for c in COLUMNS})
        return normalise_bars(raw, source=f"alpaca:{symbol}")

    def _bars(self, symbol: str, needed: date) -> pd.DataFrame:
        key = symbol.strip().upper()
        if not key:
            raise UnknownSymbolError("empty symbol")
        now = self._clock()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and hit.since <= needed and now - hit.fetched_at < self.cache_ttl_s:
            return hit.bars
        since = min(needed, datetime.now(UTC).date() - timedelta(days=self.history_days))
        bars = self._fetch(key, since)
        with self._lock:
            self.requests += 1
            self._cache[key] = _Cached(bars, since, now)
        return bars

    def fetch_history(self, symbol: str, start: date | None = None, end: date | None = None) -> pd.DataFrame:
        """Bars with ``start <= time.date() <= end`` (both inclusive; None: end = now,
        start = ``lookback_days`` before end, or the cache's first bar if earlier)."""
        needed = start or (end or datetime.now(UTC).date()) - timedelta(days=self.lookback_days)
        return _slice(self._bars(symbol, needed), start, end)

    def fetch_snapshot(self, symbol: str, as_of: datetime | date) -> Bar:
        day = as_of.date() if isinstance(as_of, datetime) else as_of
        return _snapshot(self._bars(symbol, day), symbol, as_of)


class CompositeMarketDataProvider:
    """The ``primary`` provider's bars (the bundled CSVs) where they cover the symbol and
    the date asked for (between its first and last bar), else ``fallback``'s (Alpaca).
    So trades inside the bundled range keep their exact figures, newer ones are scored on
    Alpaca's bars."""

    def __init__(self, primary: CsvMarketDataProvider, fallback: MarketDataProvider):
        self.primary = primary
        self.fallback = fallback

    def symbols(self) -> list[str]:
        return sorted(set(self.primary.symbols()) | set(self.fallback.symbols()))

    def covers(self, symbol: str, day: date | None) -> bool:
        """Whether the primary provider has ``symbol`` and ``day`` lies within its bars
        (None: the latest bars are asked for, which the bundled data never are)."""
        if symbol.upper() not in self.primary.symbols() or day is None:
            return False
        idx = self.primary.fetch_history(symbol).index
        return bool(idx[0].normalize() <= pd.Timestamp(day) <= idx[-1].normalize())

    def fetch_history(self, symbol: str, start: date | None = None, end: date | None = None) -> pd.DataFrame:
        source = self.primary if self.covers(symbol, end) else self.fallback
        return source.fetch_history(symbol, start=start, end=end)

    def fetch_snapshot(self, symbol: str, as_of: datetime | date) -> Bar:
        day = as_of.date() if isinstance(as_of, datetime) else as_of
        source = self.primary if self.covers(symbol, day) else self.fallback
        return source.fetch_snapshot(symbol, as_of)
