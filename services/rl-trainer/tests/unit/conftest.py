"""Shared fixtures for the rl-trainer domain tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


def bars_from_closes(closes, *, volume=None, start="2020-01-01") -> pd.DataFrame:
    """Canonical bars with the given closes; open = previous close, high/low bracket both."""
    close = np.asarray(closes, dtype=np.float64)
    open_ = np.concatenate([[close[0]], close[:-1]])
    high = np.maximum(open_, close) * 1.01
    low = np.minimum(open_, close) * 0.99
    vol = np.full(close.shape, 1_000.0) if volume is None else np.asarray(volume, dtype=np.float64)
    index = pd.DatetimeIndex(pd.bdate_range(start, periods=len(close)), name="time")
    return pd.DataFrame({"open": open_, "high": high, "low": low, "close": close, "volume": vol}, index=index)


def trending_closes(n: int, drift: float, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 100.0 * np.exp(np.cumsum(drift + noise * rng.standard_normal(n)))


@pytest.fixture
def make_bars():
    """``make_bars(closes, volume=None, start=...)`` -> canonical bars frame."""
    return bars_from_closes


@pytest.fixture
def make_trending_bars():
    """``make_trending_bars(n, drift, noise, seed)`` -> bars whose log closes are a
    random walk with the given per-bar drift and noise."""

    def make(n: int, drift: float, noise: float, seed: int = 0) -> pd.DataFrame:
        return bars_from_closes(trending_closes(n, drift, noise, seed))

    return make


@pytest.fixture
def random_bars():
    """300 bars of a noisy random walk with varying volume."""
    rng = np.random.default_rng(7)
    closes = trending_closes(300, 0.0, 0.02, seed=7)
    return bars_from_closes(closes, volume=rng.uniform(1e3, 5e3, size=300))


@pytest.fixture(scope="session")
def googl_bars() -> pd.DataFrame:
    from bsopt_common.marketdata import bundled_provider

    return bundled_provider().fetch_history("GOOGL")
