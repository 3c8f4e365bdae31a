"""ml-scorer's market data for recent Alpaca fills: ``AlpacaBarsProvider`` against the
local Alpaca stand-in over real HTTP (alpaca-py's ``get_stock_bars``), the composite's
choice between the bundled bars and Alpaca's, and a ``trades.imported.v1`` event for a
fill of the last 30 days scored end to end (real Kafka and Postgres)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import create_engine, text

from bsopt.broker_gateway.v1 import events_pb2 as broker_events
from bsopt.type.v1 import money_pb2
from bsopt_common import codec, topics
from bsopt_common.events import EventPublisher
from bsopt_common.marketdata import (
    AlpacaBarsProvider,
    CompositeMarketDataProvider,
    MarketDataUnavailableError,
    UnknownSymbolError,
    bundled_provider,
)
from bsopt_common.security.event_signing import EventSigner
from bsopt_common.testing.identity import service_identity
from bsopt_common.testing.services import ServiceThread, free_port
from bsopt_common.testing.standins import alpaca_standin_module
from bsopt_common.vocabulary import Side
from bsopt_scorer.bootstrap import market_data_from, serve
from bsopt_scorer.config import ScorerSettings
from bsopt_scorer.domain.features import features_at

STANDIN_FILE = Path(__file__).resolve().parents[3] / "broker-gateway" / "tests" / "alpaca_standin.py"
KEY, SECRET = "PKMARKETDATA01", "standin-secret"
SLOW_KEY = "PKSLOWDATA01"


@pytest.fixture(scope="module")
def standin() -> Any:
    s = alpaca_standin_module().AlpacaStandin(prices={"AAPL": Decimal("100.00"), "GOOGL": Decimal("750.00")})
    s.add_account(KEY, SECRET, cash=0)
    s.add_account(SLOW_KEY, SECRET, cash=0, delay_s=2.0)
    with s.serving():
        yield s


def _provider(standin: Any, **kw: Any) -> AlpacaBarsProvider:
    return AlpacaBarsProvider(kw.pop("key", KEY), kw.pop("secret", SECRET), base_url=standin.base_url, **kw)


def _recent_weekday(days_ago: int) -> date:
    d = datetime.now(UTC).date() - timedelta(days=days_ago)
    while d.weekday() >= 5:
        d -= timedelta(days=1)
    return d


def test_bars_have_the_bundled_providers_shape(standin):
    ours = _provider(standin).fetch_history("AAPL", end=datetime.now(UTC).date())
    bundled = bundled_provider().fetch_history("GOOGL", end=date(2018, 1, 1))
    assert list(ours.columns) == list(bundled.columns)
    assert ours.dtypes.to_dict() == bundled.dtypes.to_dict()
    assert ours.index.name == bundled.index.name == "time"
    assert ours.index.dtype == bundled.index.dtype and ours.index.tz is None
    assert ours.index.is_monotonic_increasing and ours.index.is_unique
    assert (ours.index == ours.index.normalize()).all()
    assert set(ours.index.day_of_week) <= {0, 1, 2, 3, 4}  # no weekend bars
    assert ours.index[0] <= pd.Timestamp(datetime.now(UTC).date() - timedelta(days=400))
    assert ours["close"].iloc[-1] == 100.0  # the walk ends at the configured price
    # Deterministic: a second process (a fresh provider) gets the same bars.
    assert ours.equals(_provider(standin).fetch_history("AAPL", end=datetime.now(UTC).date()))


def test_features_of_a_recent_fill(standin):
    day = _recent_weekday(12)
    bars = _provider(standin).fetch_history("GOOGL", end=day)
    assert bars.index[-1].date() == day
    features = features_at(bars, datetime.combine(day, time(15, 30)))
    assert features.close_usd == bars["close"].iloc[-1]


def test_bars_endpoint_pages_with_next_page_token(standin):
    params = {"symbols": "AAPL,GOOGL", "timeframe": "1Day", "limit": 10_000}
    headers = {"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET}
    whole = httpx.get(f"{standin.base_url}/v2/stocks/bars", params=params, headers=headers).json()
    assert whole["next_page_token"] is None
    paged: dict[str, list[dict[str, Any]]] = {}
    token, pages = None, 0
    while True:
        answer = httpx.get(f"{standin.base_url}/v2/stocks/bars", headers=headers,
                           params=params | {"limit": 100} | ({"page_token": token} if token else {})).json()
        pages += 1
        for symbol, bars in answer["bars"].items():
            paged.setdefault(symbol, []).extend(bars)
        token = answer["next_page_token"]
        if token is None:
            break
    assert pages > 2 and paged == whole["bars"]


def test_cache_per_symbol_until_the_ttl(standin):
    now = [1000.0]
    provider = _provider(standin, cache_ttl_s=60, clock=lambda: now[0])
    provider.fetch_history("AAPL", end=_recent_weekday(3))
    provider.fetch_history("AAPL", end=_recent_weekday(20))
    provider.fetch_snapshot("AAPL", _recent_weekday(5))
    assert provider.requests == 1
    provider.fetch_history("GOOGL", end=_recent_weekday(3))
    assert provider.requests == 2
    now[0] += 61
    provider.fetch_history("AAPL", end=_recent_weekday(3))
    assert provider.requests == 3


def test_unknown_symbol(standin):
    with pytest.raises(UnknownSymbolError):
        _provider(standin).fetch_history("NOPE", end=_recent_weekday(3))


def test_alpaca_down_is_retryable(standin):
    down = AlpacaBarsProvider(KEY, SECRET, base_url=f"http://127.0.0.1:{free_port()}", timeout_s=2)
    with pytest.raises(MarketDataUnavailableError):
        down.fetch_history("AAPL", end=_recent_weekday(3))
    assert not isinstance(MarketDataUnavailableError("x"), UnknownSymbolError | KeyError | ValueError)
    standin.fail_next(KEY, 503, path="/v2/stocks/bars")
    with pytest.raises(MarketDataUnavailableError):
        _provider(standin).fetch_history("AAPL", end=_recent_weekday(3))
    with pytest.raises(MarketDataUnavailableError):  # a refused key is not "no such symbol"
        _provider(standin, secret="wrong").fetch_history("AAPL", end=_recent_weekday(3))


def test_timeout(standin):
    slow = _provider(standin, key=SLOW_KEY, timeout_s=0.5)
    with pytest.raises(MarketDataUnavailableError):
        slow.fetch_history("AAPL", end=_recent_weekday(3))


def test_composite_bundled_where_it_covers_else_alpaca(standin):
    alpaca = _provider(standin)
    bundled = bundled_provider()
    composite = CompositeMarketDataProvider(bundled, alpaca)
    old = composite.fetch_history("GOOGL", end=date(2017, 6, 1))
    assert old.equals(bundled.fetch_history("GOOGL", end=date(2017, 6, 1)))
    assert composite.fetch_snapshot("GOOGL", date(2017, 6, 1)) == bundled.fetch_snapshot("GOOGL", date(2017, 6, 1))
    assert alpaca.requests == 0
    recent = composite.fetch_history("GOOGL", end=_recent_weekday(10))
    assert recent.index[-1].date() == _recent_weekday(10) and alpaca.requests == 1
    assert composite.fetch_history("AAPL", end=_recent_weekday(10)).index[-1].date() == _recent_weekday(10)
    assert "AAPL" in composite.symbols() and "GOOGL" in composite.symbols()


def test_settings_choose_the_provider(standin, tmp_path):
    assert type(market_data_from(ScorerSettings())).__name__ == "CsvMarketDataProvider"
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    settings = ScorerSettings(alpaca_data_key_id=KEY, alpaca_data_secret_key_file=str(secret_file),
                              alpaca_data_url=standin.base_url, market_data_cache_ttl_s=30)
    provider = market_data_from(settings)
    assert isinstance(provider, CompositeMarketDataProvider)
    assert isinstance(provider.fallback, AlpacaBarsProvider) and provider.fallback.cache_ttl_s == 30
    assert provider.fetch_history("AAPL", end=_recent_weekday(3)).index[-1].date() == _recent_weekday(3)
    assert SECRET not in repr(settings)


def test_recent_imported_fill_is_scored(standin, service_database_urls, kafka_bootstrap, kafka_topics,
                                        test_issuer):
    kafka_topics([topics.TRADES_IMPORTED.name, topics.TRADES_IMPORTED.dlq, topics.TRADES_SCORED.name])
    port = free_port()
    settings = ScorerSettings(
        database_url=service_database_urls["ml-scorer"], kafka_bootstrap_servers=kafka_bootstrap, port=port,
        alpaca_data_key_id=KEY, alpaca_data_secret_key=SECRET, alpaca_data_url=standin.base_url,
        **service_identity(test_issuer, "ml-scorer"))
    trade_id = str(uuid.uuid4())
    day = _recent_weekday(8)
    executed = Timestamp()
    executed.FromDatetime(datetime.combine(day, time(15, 30), UTC))
    event = broker_events.TradeImported(
        trade_id=trade_id, user_id="u-alpaca", account_id="acct-alpaca", broker="alpaca", symbol="AAPL",
        side=codec.SIDE.to_pb(Side.BUY), quantity=5,
        price=money_pb2.Money(currency_code="USD", units=101, nanos=250_000_000), executed_at=executed,
        import_id="imp-1")

    async def publish() -> None:
        publisher = EventPublisher(kafka_bootstrap, source="/bsopt/broker-gateway",
                                   signer=EventSigner("broker-gateway", test_issuer.service_key("broker-gateway")))
        await publisher.start()
        try:
            await publisher.publish(topics.TRADES_IMPORTED, event)
        finally:
            await publisher.stop()

    engine = create_engine(service_database_urls["ml-scorer"])
    try:
        with ServiceThread(lambda stop: serve(settings, stop), port=port):
            asyncio.run(publish())
            deadline = datetime.now(UTC) + timedelta(seconds=90)
            row = None
            while row is None and datetime.now(UTC) < deadline:
                with engine.connect() as c:
                    row = c.execute(text("SELECT symbol, features FROM scorer.scored_trades WHERE trade_id = :t"),
                                    {"t": trade_id}).first()
                if row is None:
                    asyncio.run(asyncio.sleep(0.2))
            assert row is not None, "the recent Alpaca fill was not scored"
            bars = _provider(standin).fetch_history("AAPL", end=day)
            assert row.symbol == "AAPL" and row.features["close_usd"] == bars["close"].iloc[-1]
            with engine.connect() as c:
                scored = c.execute(text("SELECT count(*) FROM scorer.outbox WHERE topic = :topic AND subject = :s"),
                                   {"topic": topics.TRADES_SCORED.name, "s": f"trades/{trade_id}"}).scalar_one()
            assert scored == 1
    finally:
        engine.dispose()
