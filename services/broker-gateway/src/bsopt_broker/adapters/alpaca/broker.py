"""``AlpacaBroker``: the ``Broker`` seam over a thread-safe pool of alpaca-py ``TradingClient``s.

One ``TradingClient`` per account (``url_override=base_url``, ``paper=`` from detection),
created on first use, and one lock per account, held for the whole check-and-send of an
order: two orders on one account never both spend the same cash, and accounts never wait
for each other (the pool itself is a dict built once and never mutated, so no global lock).

Every order: ``received`` → balance checked → sent → acknowledged → filled, each a
``time.perf_counter_ns()`` reading, stored on the result (:class:`OrderTiming`) and written
as one structured log line. ``client_order_id`` goes to Alpaca; a duplicate (422) or a
timeout is answered by looking the order up by ``client_order_id``, never by trading twice.
``order_timing=False`` turns the readings and the line off (the benchmark compares both).

Every request goes through one retry policy (429/5xx/connection errors, ``Retry-After``
honoured, exponential backoff with jitter, bounded in tries and time; alpaca-py's own loop
is turned off) and the account's circuit breaker (open after consecutive failures: calls
answer ``Unavailable`` at once, without a request; see :mod:`.resilience`). Read-only
accounts are refused before any request.

Blocking: call from a worker thread. Served by ``bsopt_broker.adapters.router.VenueRouter``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import requests
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.enums import OrderStatus as AlpacaOrderStatus
from alpaca.trading.models import Order as AlpacaOrder
from alpaca.trading.models import Position as AlpacaPosition
from alpaca.trading.models import TradeAccount
from alpaca.trading.requests import MarketOrderRequest

from bsopt_broker.adapters.alpaca.accounts import AlpacaAccountConfig
from bsopt_broker.adapters.alpaca.activities import alpaca_fills
from bsopt_broker.adapters.alpaca.detection import AccountKind, detect, kind_from_key_id
from bsopt_broker.adapters.alpaca.guard import check_balance, usd
from bsopt_broker.adapters.alpaca.resilience import (
    BreakerState,
    CircuitBreaker,
    CircuitOpen,
    RetryPolicy,
    TimeoutSession,
    disable_builtin_retries,
    retry_after_s,
    retryable,
    status_of,
    unavailability,
)
from bsopt_broker.domain.balance_guard import OrderRejected
from bsopt_broker.domain.records import Account, Fill, MarketOrder, Order, OrderResult, OrderStatus, Position
from bsopt_broker.domain.records import AccountKind as RecordKind
from bsopt_broker.domain.venue import AccountNotFound, FetchProgress, OnPage
from bsopt_common.errors import InvalidArgument, Unavailable
from bsopt_common.money import Money
from bsopt_common.vocabulary import Side

log = logging.getLogger("bsopt_broker.alpaca")

#: The price a market order's cost is estimated at, per symbol (e.g. the latest trade).
PriceSource = Callable[[str], Money]


@dataclass(frozen=True, slots=True, kw_only=True)
class AlpacaAccount(Account):
    """An Alpaca account: :class:`Account` plus what the balance check reads."""

    kind: AccountKind
    equity: Money
    buying_power: Money
    account_number: str


@dataclass(frozen=True, slots=True)
class OrderTiming:
    """``time.perf_counter_ns()`` readings of one order's path (monotonic)."""

    received_ns: int
    balance_checked_ns: int
    sent_ns: int
    acknowledged_ns: int
    filled_ns: int

    def ms(self) -> dict[str, float]:
        """Milliseconds since ``received`` of each later step (microsecond resolution)."""
        return {name: round((getattr(self, f"{name}_ns") - self.received_ns) / 1e6, 3)
                for name in ("balance_checked", "sent", "acknowledged", "filled")}


@dataclass(frozen=True, slots=True, kw_only=True)
class AlpacaOrderResult(OrderResult):
    kind: AccountKind
    timing: OrderTiming | None
    """None for a replayed result (the order was placed by an earlier call)."""
    balance_unchecked: bool = False
    """True when the balance could not be read and the account's ``on_balance_unavailable:
    allow`` let the order go unchecked (logged as a warning)."""


class _Slot:
    """One account of the pool: its config, its lock, its client once created."""

    def __init__(self, config: AlpacaAccountConfig):
        self.config = config
        self.lock = threading.Lock()
        self.client: TradingClient | None = None
        self.kind: AccountKind | None = None
        self.results: dict[str, AlpacaOrderResult] = {}


def _now() -> datetime:
    return datetime.now(UTC)


class AlpacaBroker:
    """The Alpaca venue over the accounts of the accounts file (account id = entry name)."""

    name = "alpaca"

    def __init__(self, accounts: Mapping[str, AlpacaAccountConfig], prices: PriceSource, *,
                 request_timeout_s: float = 10.0, fill_timeout_s: float = 10.0, fill_poll_s: float = 0.02,
                 retry_attempts: int = 4, retry_total_s: float = 15.0, retry_initial_wait_s: float = 0.2,
                 retry_max_wait_s: float = 5.0, breaker_failures: int = 5, breaker_cooldown_s: float = 30.0,
                 order_timing: bool = True):
        """``request_timeout_s``: each HTTP request's timeout (seconds). ``fill_timeout_s``,
        ``fill_poll_s``: how long and how often an order is polled until final (seconds).

        Retries (of every request): ``retry_attempts`` tries in all (1 = none); no retry starts
        ``retry_total_s`` seconds or later after the first try; backoff starts at
        ``retry_initial_wait_s`` and is capped at ``retry_max_wait_s`` (seconds, full jitter),
        unless Alpaca's ``Retry-After`` says how long. Circuit breaker (per account): opens after
        ``breaker_failures`` consecutive failed calls, half-opens after ``breaker_cooldown_s``.
        ``order_timing``: the per-order perf_counter_ns readings and their log line.

        Raises :class:`ValueError` for a retry or breaker setting out of range.
        """
        self._slots: dict[str, _Slot] = {name: _Slot(cfg) for name, cfg in accounts.items()}
        self._prices = prices
        self._request_timeout_s = request_timeout_s
        self._fill_timeout_s = fill_timeout_s
        self._fill_poll_s = fill_poll_s
        self._retry = RetryPolicy(attempts=retry_attempts, total_s=retry_total_s,
                                  initial_wait_s=retry_initial_wait_s, max_wait_s=retry_max_wait_s)
        self._breakers: dict[str, CircuitBreaker] = {
            name: CircuitBreaker(name, failures=breaker_failures, cooldown_s=breaker_cooldown_s) for name in accounts}
        self._order_timing = order_timing

    def breaker_state(self, account_id: str) -> BreakerState:
        """The circuit breaker state of an account of the accounts file. Raises ``KeyError`` for another name."""
        return self._breakers[account_id].state

    # -- the pool ------------------------------------------------------------------------

    def _slot(self, account_id: str, user_id: str) -> _Slot:
        slot = self._slots.get(account_id)
        if slot is None or slot.config.owner != user_id:
            raise AccountNotFound(f"no Alpaca account {account_id!r} for this user")
        return slot

    def _client(self, slot: _Slot) -> tuple[TradingClient, AccountKind]:
        """The slot's client and kind; created and detected on first use. Caller holds slot.lock."""
        if slot.client is not None and slot.kind is not None:
            return slot.client, slot.kind
        cfg = slot.config
        key_id = cfg.api_key_id.get_secret_value()
        if cfg.paper is not None:
            hint: AccountKind | None = AccountKind.PAPER if cfg.paper else AccountKind.LIVE
        else:
            hint = kind_from_key_id(key_id)
        # No hint: try the paper endpoint (a probe); with base_url the endpoint proves nothing.
        paper = hint is not AccountKind.LIVE
        oauth_token = getattr(cfg, "oauth_token", None)  # a connection made by OAuth (bsopt_broker.connections)
        if oauth_token is not None:
            client = TradingClient(oauth_token=oauth_token.get_secret_value(), paper=paper, url_override=cfg.base_url)
        else:
            client = TradingClient(api_key=key_id, secret_key=cfg.api_secret_key.get_secret_value(),
                                   paper=paper, url_override=cfg.base_url)
        client._session = TimeoutSession(self._request_timeout_s)
        disable_builtin_retries(client)  # one retry policy: ours (in _call)
        raw = self._call(cfg.name, client.get_account)
        assert isinstance(raw, TradeAccount)
        probe = AccountKind.PAPER if hint is None and cfg.base_url is None else None
        detection = detect(account=cfg.name, key_id=key_id, override=cfg.paper,
                           account_number=raw.account_number, probe=probe)
        slot.client, slot.kind = client, detection.kind
        log.info("alpaca account %s is %s (%s)", cfg.name, detection.kind, ", ".join(detection.reasons))
        return client, detection.kind

    def _call(self, account: str, fn: Callable[[], Any]) -> Any:
        """``fn()``, one alpaca-py call for ``account`` (its name), under the account's circuit
        breaker and the retry policy.

        Raises :class:`CircuitOpen` (an ``Unavailable``) at once, without a request, while the
        breaker is open; ``Unavailable`` when 429/5xx/connection errors outlast the retries or a
        request times out (each such call counts toward opening the breaker); alpaca-py's
        ``APIError`` for any other error answer (4xx: the caller's to interpret).
        """
        breaker = self._breakers[account]
        breaker.before()
        failed = False
        try:
            return self._retry.call(fn, account)
        except (APIError, requests.RequestException) as exc:
            if not unavailability(exc):
                raise
            failed = True
            status = status_of(exc)
            what = f"HTTP {status}" if status is not None else type(exc).__name__
            if retryable(exc):
                what += f" (up to {self._retry.attempts} tries within {self._retry.total_s:g}s)"
            wait = retry_after_s(exc)
            hint = f"; Alpaca asks to retry after {wait:.0f}s" if wait is not None else ""
            raise Unavailable(f"Alpaca account {account!r} is unavailable: {what}{hint}") from exc
        finally:
            if failed:
                breaker.failure()
            else:
                breaker.success()

    # -- Broker --------------------------------------------------------------------------

    def create_account(self, user_id: str, initial_cash: Money) -> Account:
        """Raises InvalidArgument: Alpaca accounts are opened at Alpaca, then listed in the
        accounts file or connected from the API (``POST /v1/brokers/alpaca/connect``)."""
        raise InvalidArgument("Alpaca accounts are opened at Alpaca, then listed in the accounts file "
                              "(BSOPT_BROKER_ACCOUNTS_FILE) or connected from the API "
                              "(POST /v1/brokers/alpaca/connect)")

    def fills_between(self, account_id: str, user_id: str, start: datetime, end: datetime, *,
                      on_page: OnPage | None = None) -> list[Fill]:
        """The account's executions in ``[start, end)``, oldest first: its ``FILL`` account
        activities, every page (:func:`~bsopt_broker.adapters.alpaca.activities.alpaca_fills`;
        Alpaca: ``GET /v2/account/activities/FILL``). Read-only: allowed on ``read_only``
        accounts. The account's lock is held only to create the client, so orders on the
        account are not held up by a long import; each page goes through ``_call`` (retries,
        circuit breaker). Raises AccountNotFound, Unavailable, UnsupportedFill (a fractional
        quantity). ``on_page``: told after each page (pages, fills so far, the account's kind)."""
        slot = self._slot(account_id, user_id)
        with slot.lock:
            client, kind = self._client(slot)
        name = slot.config.name
        record_kind = RecordKind(kind.value)
        page_cb = None if on_page is None else (
            lambda pages, seen: on_page(FetchProgress(pages, seen, record_kind)))
        fills = alpaca_fills(client, name, start, end, call=lambda fn: self._call(name, fn), on_page=page_cb)
        return [dataclasses.replace(f, account_kind=RecordKind(kind.value)) for f in fills]

    def get_account(self, account_id: str, user_id: str) -> AlpacaAccount:
        slot = self._slot(account_id, user_id)
        with slot.lock:
            client, kind = self._client(slot)
            return self._read_account(slot, client, kind)

    def _read_account(self, slot: _Slot, client: TradingClient, kind: AccountKind) -> AlpacaAccount:
        name = slot.config.name
        raw = self._call(name, client.get_account)
        positions = self._call(name, client.get_all_positions)
        assert isinstance(raw, TradeAccount) and isinstance(positions, list)
        return AlpacaAccount(
            account_id=name, user_id=slot.config.owner, broker=self.name, cash=usd(raw.cash),
            positions=tuple(_position(p) for p in positions if isinstance(p, AlpacaPosition)),
            created_at=raw.created_at, kind=kind, equity=usd(raw.equity), buying_power=usd(raw.buying_power),
            account_number=raw.account_number, account_kind=RecordKind(kind.value))

    def _check_balance(self, slot: _Slot, client: TradingClient, kind: AccountKind, order: MarketOrder) -> bool:
        """The balance check before an order (caller holds the slot's lock): True when it
        passed; False when the balance or price could not be read and the account allows
        unchecked orders (``on_balance_unavailable: allow``, a warning is logged). Raises
        OrderRejected (the check failed, with the numbers), Unavailable (could not read,
        ``refuse``), InvalidArgument (unknown symbol)."""
        cfg = slot.config
        try:
            account = self._read_account(slot, client, kind)
            price = self._prices(order.symbol)
        except CircuitOpen:
            raise  # Alpaca is down for this account: the order could not go either
        except Unavailable as exc:
            if cfg.on_balance_unavailable != "allow":
                raise Unavailable(f"the balance of Alpaca account {cfg.name!r} could not be read, so the order "
                                  f"was refused (on_balance_unavailable: refuse): {exc}") from exc
            log.warning("alpaca order on %s sent WITHOUT a balance check: the balance could not be read (%s); "
                        "the account allows it (on_balance_unavailable: allow)", cfg.name, exc,
                        extra={"event": "alpaca.balance_check_skipped", "account": cfg.name,
                               "client_order_id": order.client_order_id, "account_kind": kind.value})
            return False
        position = account.position(order.symbol)
        check_balance(account=cfg.name, side=order.side, quantity=order.quantity, price=price,
                      equity=account.equity, cash=account.cash, buying_power=account.buying_power,
                      position_quantity=position.quantity if position else 0,
                      min_balance=usd(cfg.min_balance_usd))
        return True

    def submit_market_order(self, order: MarketOrder) -> AlpacaOrderResult:
        """Place a market order on an Alpaca account after the balance check, and wait until it is final.

        Idempotent by ``order.client_order_id`` (required): a second call with the same id, here
        or from another process, returns the first order (``replayed``), never a second one. With
        ``order_timing`` on, ``timing`` holds the ``perf_counter_ns`` readings (nanoseconds) and
        one log line gives them in milliseconds; with it off, ``timing`` is None and no line.

        Raises :class:`AccountNotFound`; :class:`OrderRejected` (``FAILED_PRECONDITION``) for a
        missing ``client_order_id``, a read-only account (before any request to Alpaca), a live
        account without ``allow_live``, a failed balance check, or Alpaca's refusal (a 4xx);
        ``Unavailable`` when Alpaca cannot be reached (breaker open, 429/5xx after the retries,
        a timeout, the fill not final within ``fill_timeout_s``): the same call may be repeated
        with the same ``client_order_id`` safely.
        """
        timed = self._order_timing
        received_ns = time.perf_counter_ns() if timed else 0
        slot = self._slot(order.account_id, order.user_id)
        cfg = slot.config
        if not order.client_order_id:
            raise OrderRejected("client_order_id is required for Alpaca orders (it makes them idempotent)")
        if cfg.read_only:
            raise OrderRejected(f"account {cfg.name!r} is read-only: it may import, never place orders")
        with slot.lock:
            if (done := slot.results.get(order.client_order_id)) is not None:
                return _replayed(done)
            client, kind = self._client(slot)
            if kind is AccountKind.LIVE and not cfg.allow_live:
                raise OrderRejected(f"account {cfg.name!r} is a live account; orders need allow_live: true "
                                    "in the accounts file")
            unchecked = not self._check_balance(slot, client, kind, order)
            balance_checked_ns = time.perf_counter_ns() if timed else 0
            request = MarketOrderRequest(symbol=order.symbol, qty=order.quantity,
                                         side=OrderSide.BUY if order.side is Side.BUY else OrderSide.SELL,
                                         time_in_force=TimeInForce.DAY, client_order_id=order.client_order_id)
            sent_ns = time.perf_counter_ns() if timed else 0
            replayed = False
            try:
                # Retried on 429/5xx/connection errors: safe only because client_order_id makes the
                # POST idempotent (a retry of an order already placed answers 422, looked up below).
                placed = self._call(cfg.name, lambda: client.submit_order(request))
            except CircuitOpen:
                raise  # refused before any request: nothing was sent
            except APIError as exc:
                if exc.status_code != 422:
                    raise OrderRejected(f"Alpaca refused the order on {cfg.name!r}: {_api_message(exc)}") from exc
                replayed = True  # a duplicate client_order_id: the order exists already (if not, why)
                placed = self._by_client_order_id(cfg.name, client, order.client_order_id, refused=exc)
            except Unavailable:
                replayed = True  # timed out, cut off, 5xx: it may have been placed; look before anything else
                placed = self._by_client_order_id(cfg.name, client, order.client_order_id)
            acknowledged_ns = time.perf_counter_ns() if timed else 0
            assert isinstance(placed, AlpacaOrder)
            filled = self._await_fill(cfg.name, client, placed)
            filled_ns = time.perf_counter_ns() if timed else 0
            after = self._read_account(slot, client, kind)
            timing = (OrderTiming(received_ns, balance_checked_ns, sent_ns, acknowledged_ns, filled_ns)
                      if timed else None)
            result = AlpacaOrderResult(order=_order(filled, cfg.name, kind), fills=_fills(filled, cfg.name, kind),
                                       account=after, replayed=replayed, kind=kind, timing=timing,
                                       balance_unchecked=unchecked)
            slot.results[order.client_order_id] = result
        if timing is not None:
            _log_order(result, order, timing)
        return result

    def _by_client_order_id(self, account: str, client: TradingClient, client_order_id: str, *,
                            refused: APIError | None = None) -> AlpacaOrder:
        """The order of ``client_order_id``, after a 422 (``refused``) or a lost answer. Raises
        ``OrderRejected`` when a 422 was not a duplicate (no such order: Alpaca's reason), and
        ``Unavailable`` when a lost order cannot be found or looked up (repeating is safe)."""
        try:
            found = self._call(account, lambda: client.get_order_by_client_id(client_order_id))
        except APIError as exc:
            if refused is not None and exc.status_code == 404:
                raise OrderRejected(f"Alpaca refused the order on {account!r}: {_api_message(refused)}") from refused
            raise Unavailable(f"Alpaca account {account!r}: order {client_order_id!r} neither placed nor "
                              f"found ({exc.status_code}); repeat it with the same client_order_id") from exc
        except Unavailable as exc:
            raise Unavailable(f"Alpaca account {account!r}: order {client_order_id!r} may have been placed and "
                              f"cannot be looked up now ({exc}); repeat it with the same client_order_id") from exc
        assert isinstance(found, AlpacaOrder)
        return found

    def _await_fill(self, account: str, client: TradingClient, placed: AlpacaOrder) -> AlpacaOrder:
        deadline = time.monotonic() + self._fill_timeout_s
        current = placed
        while current.status not in _FINAL:
            if time.monotonic() > deadline:
                raise Unavailable(f"Alpaca account {account!r}: order {placed.client_order_id!r} is "
                                  f"{current.status} after {self._fill_timeout_s}s; look it up by client_order_id")
            time.sleep(self._fill_poll_s)
            fetched = self._call(account, lambda: client.get_order_by_id(placed.id))
            assert isinstance(fetched, AlpacaOrder)
            current = fetched
        return current


_FINAL = {AlpacaOrderStatus.FILLED, AlpacaOrderStatus.REJECTED, AlpacaOrderStatus.CANCELED,
          AlpacaOrderStatus.EXPIRED}


def _api_message(exc: APIError) -> str:
    """Alpaca's ``message`` of an error answer; the status alone when the body is not Alpaca's JSON."""
    try:
        message = exc.message
    except (ValueError, KeyError, TypeError):
        return f"HTTP {exc.status_code}"
    return str(message)


def _log_order(result: AlpacaOrderResult, order: MarketOrder, timing: OrderTiming) -> None:
    """The one log line of a timed order (no secret in it): ids, order, outcome, step times in ms."""
    if not log.isEnabledFor(logging.INFO):
        return
    log.info("alpaca order %s", json.dumps({
        "account": result.order.account_id, "kind": str(result.kind), "client_order_id": order.client_order_id,
        "order_id": result.order.order_id, "symbol": order.symbol, "side": str(order.side),
        "quantity": order.quantity, "status": str(result.order.status), "replayed": result.replayed,
        "balance_unchecked": result.balance_unchecked,
        **{f"{k}_ms": v for k, v in timing.ms().items()}}, sort_keys=True))


def _replayed(done: AlpacaOrderResult) -> AlpacaOrderResult:
    return AlpacaOrderResult(order=done.order, fills=done.fills, account=done.account, replayed=True,
                             kind=done.kind, timing=None)


def _position(p: AlpacaPosition) -> Position:
    return Position(symbol=p.symbol, quantity=int(Decimal(p.qty)), average_price=usd(p.avg_entry_price))


def _order(o: AlpacaOrder, account: str, kind: AccountKind) -> Order:
    filled = o.status is AlpacaOrderStatus.FILLED
    latency = ((o.filled_at - o.submitted_at).total_seconds() * 1000) if filled and o.filled_at else None
    return Order(order_id=str(o.id), client_order_id=o.client_order_id, account_id=account,
                 symbol=o.symbol or "", side=Side.BUY if o.side is OrderSide.BUY else Side.SELL,
                 quantity=int(Decimal(str(o.qty or 0))),
                 status=OrderStatus.FILLED if filled else OrderStatus.REJECTED,
                 submitted_at=o.submitted_at, filled_at=o.filled_at if filled else None,
                 fill_latency_ms=latency, reject_reason="" if filled else f"Alpaca order {o.status}",
                 account_kind=RecordKind(kind.value))


def _fills(o: AlpacaOrder, account: str, kind: AccountKind) -> tuple[Fill, ...]:
    if o.status is not AlpacaOrderStatus.FILLED or o.filled_avg_price is None:
        return ()
    # The broker's own trade ids come from account activities (the import slice); until
    # then an order's fill is keyed by the order id.
    return (Fill(trade_id=str(o.id), order_id=str(o.id), account_id=account, symbol=o.symbol or "",
                 side=Side.BUY if o.side is OrderSide.BUY else Side.SELL,
                 quantity=int(Decimal(str(o.filled_qty or 0))), price=usd(str(o.filled_avg_price)),
                 fee=usd(0), executed_at=o.filled_at or _now(), account_kind=RecordKind(kind.value)),)
