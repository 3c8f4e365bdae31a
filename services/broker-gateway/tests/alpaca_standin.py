"""A local stand-in for the subset of Alpaca's Trading API (v2) the adapter uses, served
over real HTTP on 127.0.0.1. Written for the tests; field names and shapes follow
Alpaca's documented responses (as alpaca-py's models parse them).

Accounts are keyed by API key id; each request must carry the matching
``APCA-API-KEY-ID``/``APCA-API-SECRET-KEY``. Market orders are accepted (``new``) and
filled at once at the configured price. A duplicate ``client_order_id`` answers 422 as
Alpaca does. ``delay_s`` on an account slows every response of that account only.

Market data: daily bars (``GET /v2/stocks/bars``) of every priced symbol, see
:meth:`AlpacaStandin.daily_bars`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http
import math
import random
import secrets
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from bsopt_common.testing.services import ServiceThread, free_port


def _ts(t: datetime | None) -> str | None:
    return t.isoformat().replace("+00:00", "Z") if t else None


def _error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status)


@dataclass
class InjectedFailure:
    """An error answer :meth:`AlpacaStandin.fail_next` queued for an account's next requests."""

    status: int
    times: int
    retry_after: str | None
    method: str | None
    path: str | None
    after_placing: bool

    def matches(self, method: str, path: str) -> bool:
        return self.method in (None, method) and self.path in (None, path)

    def response(self) -> JSONResponse:
        phrase = http.HTTPStatus(self.status).phrase.lower()
        headers = {"Retry-After": self.retry_after} if self.retry_after is not None else None
        # Alpaca's error body: {"code": <status><5 digits>, "message": ...} (e.g. 42910000).
        return JSONResponse({"code": int(f"{self.status}10000"), "message": phrase}, status_code=self.status,
                            headers=headers)


@dataclass
class StandinAccount:
    key_id: str
    secret: str
    account_number: str
    cash: Decimal
    positions: dict[str, tuple[int, Decimal]] = field(default_factory=dict)
    """symbol -> (quantity, average entry price)."""
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    """order id -> order JSON."""
    delay_s: float = 0.0
    ack_delay_s: float = 0.0
    """Delay of an order's acknowledgement, after the order was placed (a lost answer)."""
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    history: list[dict[str, Any]] = field(default_factory=list)
    """One entry per placed order: cash and equity after it."""
    activities: list[dict[str, Any]] = field(default_factory=list)
    """FILL account activities (Alpaca's JSON), placed orders' and seeded ones."""


@dataclass
class StandinOAuth:
    """Alpaca's OAuth 2.0 endpoints (https://docs.alpaca.markets/docs/using-oauth2-and-trading-api),
    as the stand-in serves them: ``GET /oauth/authorize`` and ``POST /oauth/token``.

    Authorize: with ``approve_as`` set (or ``?approve_as=<key id>`` on the request), the
    user "approves" at once for that account: 302 to ``redirect_uri?code=..&state=..``;
    ``deny`` answers ``error=access_denied``; neither: a small approve page. Token:
    ``grant_type=authorization_code``, client id/secret (form body or Basic), the
    ``redirect_uri`` of the authorization, a single-use code younger than 10 minutes, and
    the PKCE verifier when a ``code_challenge`` (S256) was sent. The access token then
    works as ``Authorization: Bearer`` on the Trading and Market Data APIs for the
    approved account."""

    clients: dict[str, tuple[str, set[str]]] = field(default_factory=dict)
    """client id -> (secret, registered redirect URIs)."""
    approve_as: str | None = None
    deny: bool = False
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    """access token -> key id of the approved account."""
    token_requests: list[dict[str, str]] = field(default_factory=list)
    """The form of every token request (secrets included: tests only)."""

    def add_client(self, client_id: str, secret: str, redirect_uri: str) -> None:
        self.clients.setdefault(client_id, (secret, set()))[1].add(redirect_uri)


class AlpacaStandin:
    def __init__(self, prices: dict[str, Decimal] | None = None):
        self.accounts: dict[str, StandinAccount] = {}
        self.prices: dict[str, Decimal] = dict(prices or {"AAPL": Decimal("100.00")})
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str, str]] = []
        """(key id, method, path) of every authenticated request."""
        self.failures: dict[str, list[InjectedFailure]] = {}
        self.oauth = StandinOAuth()
        """key id -> error answers queued by :meth:`fail_next`, in order."""
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.app = self._build()

    def add_account(self, key_id: str, secret: str, *, cash: Decimal | int | str,
                    account_number: str | None = None, delay_s: float = 0.0) -> StandinAccount:
        number = account_number or ("PA" if key_id.startswith("PK") else "") + uuid.uuid4().hex[:10].upper()
        acct = StandinAccount(key_id, secret, number, Decimal(cash), delay_s=delay_s)
        with self.lock:
            self.accounts[key_id] = acct
        return acct

    # -- account activities (FILL) --------------------------------------------------------

    @staticmethod
    def fill_activity(order_id: str, symbol: str, side: str, qty: int, price: Decimal, at: datetime, *,
                      cum_qty: int, order_qty: int) -> dict[str, Any]:
        """One FILL activity in Alpaca's shape (id = ``YYYYMMDDHHMMSSmmm::uuid``, as Alpaca's)."""
        leaves = order_qty - cum_qty
        return {"id": f"{at.astimezone(UTC):%Y%m%d%H%M%S}{at.microsecond // 1000:03d}::{uuid.uuid4()}",
                "activity_type": "FILL", "transaction_time": _ts(at.replace(microsecond=at.microsecond // 1000 * 1000)),
                "type": "fill" if leaves == 0 else "partial_fill", "price": str(price), "qty": str(qty),
                "side": side, "symbol": symbol, "leaves_qty": str(leaves), "order_id": order_id,
                "cum_qty": str(cum_qty), "order_status": "filled" if leaves == 0 else "partially_filled"}

    def seed_fills(self, key_id: str, count: int, start: datetime, end: datetime, *, fills_per_order: int = 1,
                   symbol: str = "AAPL", side: str = "buy", qty: int = 2,
                   price: Decimal | str = "100.00") -> list[dict[str, Any]]:
        """Add ``count`` historical FILL activities to an account, evenly spread over
        ``[start, end)`` (millisecond times), ``fills_per_order`` consecutive fills per
        order (all but the last of an order ``partial_fill``). Returns them, oldest first."""
        step = (end - start) / count
        made: list[dict[str, Any]] = []
        order_id = ""
        for i in range(count):
            nth = i % fills_per_order
            if nth == 0:
                order_id = str(uuid.uuid4())
                in_order = min(fills_per_order, count - i)
            at = start + step * i
            made.append(self.fill_activity(order_id, symbol, side, qty, Decimal(price), at.replace(
                microsecond=at.microsecond // 1000 * 1000), cum_qty=qty * (nth + 1), order_qty=qty * in_order))
        with self.lock:
            self.accounts[key_id].activities.extend(made)
        return made

    # -- market data: daily bars ---------------------------------------------------------

    #: Calendar days of daily bars served before today (weekdays only).
    BAR_HISTORY_DAYS = 730

    def daily_bars(self, symbol: str, today: date | None = None) -> list[dict[str, Any]]:
        """Daily bars of ``symbol`` (one of :attr:`prices`) in Alpaca's shape, oldest first:
        every weekday (no holidays) from :attr:`BAR_HISTORY_DAYS` days before ``today``
        (default: today in New York, the exchange's date: between 00:00 and 04:00-05:00 UTC
        the UTC date's bar would start in the future) to ``today``, ``t`` = midnight New
        York in UTC.

        Deterministic: a random walk of daily log returns (N(0, 1.5%), ``random.Random``
        seeded with the symbol) run backwards from the close of the last bar, which is the
        symbol's configured price; open = previous close, high/low 0.5% beyond the larger /
        smaller of open and close, volume 1e6 + 1e5 * U(0, 10) shares. The same symbol and
        day give the same bars in every process."""
        today = today or datetime.now(ZoneInfo("America/New_York")).date()
        days = [today - timedelta(days=n) for n in range(self.BAR_HISTORY_DAYS, -1, -1)]
        days = [d for d in days if d.weekday() < 5]
        rng = random.Random(f"alpaca-standin-bars/{symbol}")
        closes = [float(self.prices[symbol])]
        for _ in days[1:]:
            closes.append(closes[-1] / math.exp(rng.gauss(0.0, 0.015)))
        closes.reverse()
        bars = []
        ny = ZoneInfo("America/New_York")
        for i, d in enumerate(days):
            c = round(closes[i], 2)
            o = round(closes[i - 1], 2) if i else c
            bars.append({"t": _ts(datetime.combine(d, time(0), ny).astimezone(UTC)), "o": o,
                         "h": round(max(o, c) * 1.005, 2), "l": round(min(o, c) * 0.995, 2), "c": c,
                         "v": float(1_000_000 + int(rng.uniform(0, 10) * 100_000)), "n": 1000,
                         "vw": round((o + c) / 2, 4)})
        return bars

    # -- error injection ---------------------------------------------------------------

    def fail_next(self, key_id: str, status: int, times: int = 1, retry_after: float | str | None = None, *,
                  method: str | None = None, path: str | None = None, after_placing: bool = False) -> None:
        """Answer the account's next ``times`` requests (those of ``method``/``path`` when given,
        e.g. ``"POST"``, ``"/v2/orders"``) with HTTP ``status`` and Alpaca's error body, with a
        ``Retry-After`` header (seconds) when ``retry_after`` is given. ``after_placing``: only
        ``POST /v2/orders``, answered with the error *after* the order was placed (a lost
        answer). Queued failures apply in order, after the ones already queued."""
        if after_placing:
            method, path = method or "POST", path or "/v2/orders"
        queued = InjectedFailure(status, times, None if retry_after is None else str(retry_after), method, path,
                                 after_placing)
        with self.lock:
            self.failures.setdefault(key_id, []).append(queued)

    def clear_failures(self, key_id: str) -> None:
        """Drop the account's queued error answers."""
        with self.lock:
            self.failures.pop(key_id, None)

    def _injected(self, key_id: str, request: Request, *, after_placing: bool) -> JSONResponse | None:
        with self.lock:
            queue = self.failures.get(key_id, [])
            # The first failure queued for this request decides, in queue order: an answer
            # queued after placing is not jumped by a later one queued before placing.
            due = next((f for f in queue if f.times > 0 and f.matches(request.method, request.url.path)), None)
            if due is None or due.after_placing is not after_placing:
                return None
            due.times -= 1
            if due.times <= 0:
                queue.remove(due)
        return due.response()

    def equity(self, acct: StandinAccount) -> Decimal:
        return acct.cash + sum((q * self.prices[s] for s, (q, _) in acct.positions.items()), Decimal(0))

    # -- JSON shapes -------------------------------------------------------------------

    def _account_json(self, a: StandinAccount) -> dict[str, Any]:
        equity = self.equity(a)
        long_value = equity - a.cash
        return {
            "id": a.id, "account_number": a.account_number, "status": "ACTIVE", "crypto_status": "ACTIVE",
            "currency": "USD", "buying_power": str(a.cash), "regt_buying_power": str(a.cash),
            "daytrading_buying_power": "0", "non_marginable_buying_power": str(a.cash),
            "options_buying_power": str(a.cash), "cash": str(a.cash), "accrued_fees": "0",
            "pending_transfer_in": "0", "pending_transfer_out": "0", "portfolio_value": str(equity),
            "pattern_day_trader": False, "trading_blocked": False, "transfers_blocked": False,
            "account_blocked": False, "created_at": _ts(a.created_at), "trade_suspended_by_user": False,
            "multiplier": "1", "shorting_enabled": False, "equity": str(equity), "last_equity": str(equity),
            "long_market_value": str(long_value), "short_market_value": "0", "initial_margin": "0",
            "maintenance_margin": "0", "last_maintenance_margin": "0", "sma": "0", "daytrade_count": 0,
            "options_approved_level": 0, "options_trading_level": 0,
        }

    def _position_json(self, symbol: str, qty: int, avg: Decimal) -> dict[str, Any]:
        price = self.prices[symbol]
        return {
            "asset_id": str(uuid.uuid5(uuid.NAMESPACE_URL, symbol)), "symbol": symbol, "exchange": "NASDAQ",
            "asset_class": "us_equity", "asset_marginable": True, "avg_entry_price": str(avg), "qty": str(qty),
            "side": "long", "market_value": str(price * qty), "cost_basis": str(avg * qty),
            "unrealized_pl": str((price - avg) * qty), "unrealized_plpc": "0", "unrealized_intraday_pl": "0",
            "unrealized_intraday_plpc": "0", "current_price": str(price), "lastday_price": str(price),
            "change_today": "0", "qty_available": str(qty),
        }

    @staticmethod
    def _order_json(body: dict[str, Any], now: datetime) -> dict[str, Any]:
        symbol = body["symbol"]
        return {
            "id": str(uuid.uuid4()), "client_order_id": body.get("client_order_id") or str(uuid.uuid4()),
            "created_at": _ts(now), "updated_at": _ts(now), "submitted_at": _ts(now), "filled_at": None,
            "expired_at": None, "canceled_at": None, "failed_at": None, "replaced_at": None,
            "replaced_by": None, "replaces": None, "asset_id": str(uuid.uuid5(uuid.NAMESPACE_URL, symbol)),
            "symbol": symbol, "asset_class": "us_equity", "notional": None, "qty": str(body["qty"]),
            "filled_qty": "0", "filled_avg_price": None, "order_class": "", "order_type": "market",
            "type": "market", "side": body["side"], "position_intent": f"{body['side']}_to_open",
            "time_in_force": body["time_in_force"], "limit_price": None, "stop_price": None, "status": "new",
            "extended_hours": False, "legs": None, "trail_percent": None, "trail_price": None, "hwm": None,
        }

    # -- the app -------------------------------------------------------------------------

    def _build(self) -> FastAPI:
        app = FastAPI()

        async def auth(request: Request) -> StandinAccount | JSONResponse:
            key, secret = request.headers.get("APCA-API-KEY-ID"), request.headers.get("APCA-API-SECRET-KEY")
            authorization = request.headers.get("Authorization", "")
            if authorization[:7].lower() == "bearer ":  # an OAuth access token: its approved account
                key = self.oauth.tokens.get(authorization[7:].strip())
                secret = self.accounts[key].secret if key in self.accounts else None
            acct = self.accounts.get(key or "")
            if acct is None or acct.secret != secret:
                return _error(401, 40110000, "request is not authorized")
            self.requests.append((acct.key_id, request.method, request.url.path))
            if (injected := self._injected(acct.key_id, request, after_placing=False)) is not None:
                return injected
            if acct.delay_s:
                await asyncio.sleep(acct.delay_s)
            return acct

        @app.get("/v2/account")
        async def account(request: Request) -> Any:
            acct = await auth(request)
            if isinstance(acct, JSONResponse):
                return acct
            with self.lock:
                return self._account_json(acct)

        @app.get("/v2/positions")
        async def positions(request: Request) -> Any:
            acct = await auth(request)
            if isinstance(acct, JSONResponse):
                return acct
            with self.lock:
                return [self._position_json(s, q, avg) for s, (q, avg) in sorted(acct.positions.items())]

        # Market Data API v2 (alpaca-py's StockHistoricalDataClient with url_override):
        # the latest trade of each symbol, at the configured price. Unknown symbols are
        # left out, as Alpaca does.
        def latest_trade_json(symbol: str) -> dict[str, Any]:
            return {"t": _ts(datetime.now(UTC)), "x": "V", "p": float(self.prices[symbol]), "s": 100,
                    "c": ["@"], "i": 1, "z": "C"}

        @app.get("/v2/stocks/trades/latest")
        async def latest_trades(request: Request, symbols: str = "") -> Any:
            acct = await auth(request)
            if isinstance(acct, JSONResponse):
                return acct
            wanted = [s for s in symbols.split(",") if s]
            if not wanted:
                return _error(400, 40010001, "symbols is required")
            with self.lock:
                return {"trades": {s: latest_trade_json(s) for s in wanted if s in self.prices}}

        @app.get("/v2/stocks/{symbol}/trades/latest")
        async def latest_trade(request: Request, symbol: str) -> Any:
            acct = await auth(request)
            if isinstance(acct, JSONResponse):
                return acct
            with self.lock:
                if symbol not in self.prices:
                    return _error(404, 40410000, f"no trade found for {symbol}")
                return {"symbol": symbol, "trade": latest_trade_json(symbol)}

        # Daily bars (alpaca-py's get_stock_bars): ``symbols``, ``timeframe`` (1Day only),
        # ``start``/``end`` (RFC 3339 or dates, inclusive), ``limit`` bars per page and
        # ``page_token`` (the index of the next bar across all symbols, as an opaque string)
        # -> {"bars": {symbol: [...]}, "next_page_token": ...}. Unknown symbols are left out.
        def parse_time(text: str | None) -> datetime | None:
            if not text:
                return None
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

        @app.get("/v2/stocks/bars")
        async def stock_bars(request: Request, symbols: str = "", timeframe: str = "1Day", start: str | None = None,
                             end: str | None = None, limit: int = 1000, page_token: str | None = None) -> Any:
            acct = await auth(request)
            if isinstance(acct, JSONResponse):
                return acct
            wanted = [s for s in symbols.split(",") if s]
            if not wanted:
                return _error(400, 40010001, "symbols is required")
            if timeframe not in ("1Day", "1D"):
                return _error(422, 42210000, f"the stand-in serves daily bars only, not {timeframe}")
            try:
                lo, hi = parse_time(start), parse_time(end)
            except ValueError:
                return _error(422, 42210000, "invalid start or end")
            with self.lock:
                known = [s for s in wanted if s in self.prices]
                every = [(s, b) for s in known for b in self.daily_bars(s)
                         if (lo is None or parse_time(b["t"]) >= lo) and (hi is None or parse_time(b["t"]) <= hi)]
            first = int(page_token or 0)
            page = every[first:first + max(1, min(limit, 10_000))]
            out: dict[str, list[dict[str, Any]]] = {}
            for s, b in page:
                out.setdefault(s, []).append(b)
            nxt = first + len(page)
            return {"bars": out, "next_page_token": str(nxt) if nxt < len(every) else None}

        @app.post("/v2/orders")
        async def submit(request: Request) -> Any:
            acct = await auth(request)
            if isinstance(acct, JSONResponse):
                return acct
            body = await request.json()
            if body.get("type") != "market":
                return _error(422, 40010001, "only market orders are supported by this stand-in")
            symbol, side = body.get("symbol"), body.get("side")
            if symbol not in self.prices:
                return _error(422, 40010001, f"asset \"{symbol}\" not found")
            qty = int(Decimal(str(body.get("qty"))))
            now = datetime.now(UTC)
            with self.lock:
                cid = body.get("client_order_id")
                if cid and any(o["client_order_id"] == cid for o in acct.orders.values()):
                    return _error(422, 40010001, "client_order_id must be unique")
                price = self.prices[symbol]
                held, avg = acct.positions.get(symbol, (0, Decimal(0)))
                if side == "buy" and price * qty > acct.cash:
                    return _error(403, 40310000, "insufficient buying power")
                if side == "sell" and qty > held:
                    return _error(403, 40310000, f"insufficient qty available for order (requested: {qty}, "
                                                 f"available: {held})")
                order = self._order_json(body, now)
                response = dict(order)
                # Filled at once, after the acknowledgement was composed.
                if side == "buy":
                    acct.cash -= price * qty
                    acct.positions[symbol] = (held + qty, (avg * held + price * qty) / (held + qty))
                else:
                    acct.cash += price * qty
                    if held == qty:
                        del acct.positions[symbol]
                    else:
                        acct.positions[symbol] = (held - qty, avg)
                order.update(status="filled", filled_qty=str(qty), filled_avg_price=str(price),
                             filled_at=_ts(datetime.now(UTC)), updated_at=_ts(datetime.now(UTC)))
                acct.orders[order["id"]] = order
                acct.activities.append(self.fill_activity(order["id"], symbol, side, qty, price, datetime.now(UTC),
                                                          cum_qty=qty, order_qty=qty))
                acct.history.append({"order_id": order["id"], "side": side, "qty": qty, "cash": acct.cash,
                                     "equity": self.equity(acct)})
            if (injected := self._injected(acct.key_id, request, after_placing=True)) is not None:
                return injected  # the order stands; its answer is an error
            if acct.ack_delay_s:
                await asyncio.sleep(acct.ack_delay_s)
            return response

        @app.get("/v2/orders:by_client_order_id")
        async def by_client_order_id(request: Request, client_order_id: str = "") -> Any:
            acct = await auth(request)
            if isinstance(acct, JSONResponse):
                return acct
            with self.lock:
                found = next((o for o in acct.orders.values() if o["client_order_id"] == client_order_id), None)
            return found if found is not None else _error(404, 40410000, "order not found")

        @app.get("/v2/orders/{order_id}")
        async def get_order(request: Request, order_id: str) -> Any:
            acct = await auth(request)
            if isinstance(acct, JSONResponse):
                return acct
            with self.lock:
                found = acct.orders.get(order_id)
            return found if found is not None else _error(404, 40410000, "order not found")

        async def activities(request: Request, types: str) -> Any:
            """Alpaca's ``GET /v2/account/activities[/{type}]``: newest first unless
            ``direction=asc``; ``page_token`` = id of the previous page's last activity."""
            acct = await auth(request)
            if isinstance(acct, JSONResponse):
                return acct
            q = request.query_params
            try:
                page_size = int(q.get("page_size", "100"))
                after, until = (datetime.fromisoformat(q[k]) if k in q else None for k in ("after", "until"))
            except ValueError as exc:
                return _error(422, 40010001, f"invalid query: {exc}")
            direction = q.get("direction", "desc")
            if not 1 <= page_size <= 100 or direction not in ("asc", "desc"):
                return _error(422, 40010001, "page_size must be 1..100 and direction asc or desc")
            if types and "FILL" not in types.split(","):
                return []
            with self.lock:
                found = sorted(acct.activities, key=lambda a: a["id"], reverse=direction == "desc")
            token = q.get("page_token")

            def keep(a: dict[str, Any]) -> bool:
                t = datetime.fromisoformat(a["transaction_time"])
                return ((after is None or t > (after if after.tzinfo else after.replace(tzinfo=UTC)))
                        and (until is None or t < (until if until.tzinfo else until.replace(tzinfo=UTC)))
                        and (token is None or (a["id"] < token if direction == "desc" else a["id"] > token)))

            return [a for a in found if keep(a)][:page_size]

        @app.get("/v2/account/activities/{activity_type}")
        async def activities_of_type(request: Request, activity_type: str) -> Any:
            return await activities(request, activity_type)

        @app.get("/v2/account/activities")
        async def activities_of_types(request: Request) -> Any:
            return await activities(request, request.query_params.get("activity_types", ""))

        def oauth_error(status: int, error: str, description: str) -> JSONResponse:
            return JSONResponse({"error": error, "error_description": description}, status_code=status)

        @app.get("/oauth/authorize")
        async def oauth_authorize(request: Request) -> Any:
            q = request.query_params
            client = self.oauth.clients.get(q.get("client_id", ""))
            redirect_uri = q.get("redirect_uri", "")
            if client is None or redirect_uri not in client[1]:
                return oauth_error(400, "invalid_request", "unknown client_id or unregistered redirect_uri")
            if q.get("response_type") != "code":
                return oauth_error(400, "unsupported_response_type", "response_type must be code")
            state = q.get("state", "")
            approve_as = q.get("approve_as") or self.oauth.approve_as
            sep = "&" if "?" in redirect_uri else "?"
            if self.oauth.deny:
                return RedirectResponse(f"{redirect_uri}{sep}error=access_denied&state={state}", status_code=302)
            if not approve_as:
                return HTMLResponse("<form method=get><p>Allow this app to access your Alpaca account?</p>"
                                    "<input name=approve_as placeholder='account key id'></form>")
            if approve_as not in self.accounts:
                return oauth_error(400, "invalid_request", "approve_as names no account")
            code = secrets.token_urlsafe(24)
            with self.lock:
                self.oauth.codes[code] = {
                    "client_id": q["client_id"], "redirect_uri": redirect_uri, "key_id": approve_as,
                    "scope": q.get("scope", ""), "challenge": q.get("code_challenge"),
                    "challenge_method": q.get("code_challenge_method", "plain"), "issued": datetime.now(UTC)}
            return RedirectResponse(f"{redirect_uri}{sep}code={code}&state={state}", status_code=302)

        @app.post("/oauth/token")
        async def oauth_token(request: Request) -> Any:
            form = {k: str(v) for k, v in (await request.form()).items()}
            self.oauth.token_requests.append(form)
            client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
            basic = request.headers.get("Authorization", "")
            if basic[:6].lower() == "basic ":
                client_id, _, secret = base64.b64decode(basic[6:]).decode().partition(":")
            client = self.oauth.clients.get(client_id)
            if client is None or not secrets.compare_digest(client[0], secret):
                return oauth_error(401, "invalid_client", "client authentication failed")
            if form.get("grant_type") != "authorization_code":
                return oauth_error(400, "unsupported_grant_type", "grant_type must be authorization_code")
            with self.lock:
                issued = self.oauth.codes.pop(form.get("code", ""), None)  # single use, even when refused below
            if (issued is None or issued["client_id"] != client_id
                    or (datetime.now(UTC) - issued["issued"]).total_seconds() > 600):
                return oauth_error(400, "invalid_grant", "unknown, used or expired code")
            if form.get("redirect_uri") != issued["redirect_uri"]:
                return oauth_error(400, "invalid_grant", "redirect_uri differs from the authorization request")
            if issued["challenge"] is not None:
                verifier = form.get("code_verifier", "")
                if issued["challenge_method"] == "S256":
                    digest = hashlib.sha256(verifier.encode()).digest()
                    computed = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
                else:
                    computed = verifier
                if not verifier or not secrets.compare_digest(computed, issued["challenge"]):
                    return oauth_error(400, "invalid_grant", "PKCE verification failed")
            token = secrets.token_urlsafe(32)
            with self.lock:
                self.oauth.tokens[token] = issued["key_id"]
            return {"access_token": token, "token_type": "bearer", "scope": issued["scope"]}

        return app

    def serving(self) -> ServiceThread:
        async def serve(stop: asyncio.Event) -> None:
            server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                                   lifespan="off", access_log=False))
            task = asyncio.create_task(server.serve())
            await stop.wait()
            server.should_exit = True
            await task

        return ServiceThread(serve, port=self.port)
