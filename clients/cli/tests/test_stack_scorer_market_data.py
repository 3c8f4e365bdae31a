"""The dev stack gives ml-scorer a market-data source for recent Alpaca fills: the local
stand-in's daily bars without Alpaca keys, Alpaca's Market Data API with them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bsopt_cli.stack import ALPACA_KEY_ID_ENV, ALPACA_SECRET_ENV, STANDIN_KEY_ID, Ports, Stack
from bsopt_common.marketdata import AlpacaBarsProvider, CompositeMarketDataProvider
from bsopt_common.testing.services import free_port
from bsopt_scorer.bootstrap import market_data_from
from bsopt_scorer.config import ScorerSettings

OWNER = "2f0c6d4e-0000-4000-8000-000000000001"


@pytest.fixture
def no_alpaca_keys(monkeypatch):
    monkeypatch.delenv(ALPACA_KEY_ID_ENV, raising=False)
    monkeypatch.delenv(ALPACA_SECRET_ENV, raising=False)


def test_scorer_reads_the_standins_bars(tmp_path, monkeypatch, no_alpaca_keys):
    stack = Stack(state_dir=tmp_path / "state", ports=Ports(alpaca=free_port()))
    monkeypatch.setattr(Stack, "demo_user_id", staticmethod(lambda url: OWNER))
    scorer_env: dict[str, str] = {}
    try:
        stack._start_alpaca("postgresql://unused/bsopt", timeout_seconds=60, scorer_env=scorer_env)
        assert scorer_env["BSOPT_SCORER_ALPACA_DATA_KEY_ID"] == STANDIN_KEY_ID
        assert scorer_env["BSOPT_SCORER_ALPACA_DATA_URL"] == stack.alpaca_url
        assert "BSOPT_SCORER_ALPACA_DATA_SECRET_KEY" not in scorer_env  # a file, not the value
        for name, value in scorer_env.items():
            monkeypatch.setenv(name, value)
        provider = market_data_from(ScorerSettings())
        assert isinstance(provider, CompositeMarketDataProvider)
        day = datetime.now(UTC).date() - timedelta(days=10)
        while day.weekday() >= 5:
            day -= timedelta(days=1)
        bars = provider.fetch_history("GOOGL", end=day)  # the demo's Alpaca fills are GOOGL
        assert bars.index[-1].date() == day and len(bars) >= 50
    finally:
        stack.stop()


def test_real_keys_go_to_the_scorer(tmp_path, monkeypatch):
    monkeypatch.setenv(ALPACA_KEY_ID_ENV, "PKREALKEY00000000001")
    monkeypatch.setenv(ALPACA_SECRET_ENV, "real-secret")
    env = Stack(state_dir=tmp_path / "state").scorer_market_data_env(standin=False)
    assert env == {"BSOPT_SCORER_ALPACA_DATA_KEY_ID": "PKREALKEY00000000001",
                   "BSOPT_SCORER_ALPACA_DATA_SECRET_KEY": "real-secret"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    provider = market_data_from(ScorerSettings())
    assert isinstance(provider, CompositeMarketDataProvider)
    assert isinstance(provider.fallback, AlpacaBarsProvider) and provider.fallback.base_url is None
