"""The latest price of a symbol from Alpaca's Market Data API (alpaca-py's
``StockHistoricalDataClient.get_stock_latest_trade``): the :data:`PriceSource` the
balance check of :class:`~bsopt_broker.adapters.alpaca.broker.AlpacaBroker` estimates an
order's cost with.

Market data is not per account: one set of credentials (any account of the accounts
file) reads it. With ``base_url`` set on that account (a proxy or the local stand-in) the
data client goes there too (``url_override``); otherwise to ``data.alpaca.markets``.

Each request has a timeout and goes through a :class:`~.resilience.RetryPolicy` (429,
5xx and connection errors retried with backoff; alpaca-py's own retry loop is off).

Blocking: call from a worker thread. Thread-safe: one client (one HTTP session) per thread.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import requests
from alpaca.common.exceptions import APIError
from alpaca.data.historical.stock import StockHistoricalDataClient
from alpaca.data.models import Trade
from alpaca.data.requests import StockLatestTradeRequest

from bsopt_broker.adapters.alpaca.accounts import AlpacaAccountConfig
from bsopt_broker.adapters.alpaca.resilience import RetryPolicy, TimeoutSession, disable_builtin_retries
from bsopt_common.errors import InvalidArgument, Unavailable
from bsopt_common.money import Money, price_decimal


class LatestTradePrices:
    """``prices(symbol) -> Money`` (USD per share): the price of the symbol's latest trade.

    Raises InvalidArgument when Alpaca knows no trade of ``symbol`` (an unknown symbol),
    Unavailable when the Market Data API cannot be reached or refuses the request.
    """

    def __init__(self, config: AlpacaAccountConfig, *, request_timeout_s: float = 10.0,
                 retry: RetryPolicy | None = None):
        """``request_timeout_s``: each request's timeout, seconds. ``retry``: default 3 tries
        within 5 s (backoff 0.2 s to 2 s)."""
        self._config = config
        self._timeout_s = request_timeout_s
        self._retry = retry or RetryPolicy(attempts=3, total_s=5.0, initial_wait_s=0.2, max_wait_s=2.0)
        self._local = threading.local()

    @classmethod
    def from_accounts(cls, accounts: Mapping[str, AlpacaAccountConfig], **kw: Any) -> LatestTradePrices | None:
        """Read market data with the first account's credentials; None for no accounts."""
        first = next(iter(accounts.values()), None)
        return None if first is None else cls(first, **kw)

    def _client(self) -> StockHistoricalDataClient:
        client: StockHistoricalDataClient | None = getattr(self._local, "client", None)
        if client is None:
            cfg = self._config
            oauth_token = getattr(cfg, "oauth_token", None)  # a connection made by OAuth
            if oauth_token is not None:
                client = StockHistoricalDataClient(oauth_token=oauth_token.get_secret_value(),
                                                   url_override=cfg.base_url)
            else:
                client = StockHistoricalDataClient(api_key=cfg.api_key_id.get_secret_value(),
                                                   secret_key=cfg.api_secret_key.get_secret_value(),
                                                   url_override=cfg.base_url)
            client._session = TimeoutSession(self._timeout_s)
            disable_builtin_retries(client)
            self._local.client = client
        return client

    def __call__(self, symbol: str) -> Money:
        if not symbol:
            raise InvalidArgument("symbol is required")
        try:
            client = self._client()
            request = StockLatestTradeRequest(symbol_or_symbols=symbol)
            latest = self._retry.call(lambda: client.get_stock_latest_trade(request),
                                      f"market data {self._config.name}: latest trade")
        except requests.RequestException as exc:
            raise Unavailable(f"Alpaca market data: latest trade of {symbol!r}: {type(exc).__name__}") from exc
        except APIError as exc:
            raise Unavailable(f"Alpaca market data: latest trade of {symbol!r}: HTTP {exc.status_code}") from exc
        trade = latest.get(symbol) if isinstance(latest, dict) else None
        if not isinstance(trade, Trade) or trade.price <= 0:
            raise InvalidArgument(f"no latest trade of symbol {symbol!r} at Alpaca (unknown symbol?)")
        return Money(price_decimal(trade.price), "USD")
