"""The non-blocking sell module (issue 8, section 4): one background worker thread per
Alpaca account that closes positions by rule, off the request path.

Rules (:mod:`bsopt_broker.domain.sell_rules`): stop-loss and take-profit, in percent
from a position's average entry price, from the account's ``sell_rules`` in the accounts
file or set by its user through ``SetSellRules`` (stored in ``broker.sell_rules``; they
take precedence over the file's), and close-all on request (``CloseAllPositions``). The
RPCs only record the rule or the request, wake the account's worker and return; the
worker does every read and every sell.

Every sell goes through the :class:`~bsopt_broker.domain.venue.Broker` the servicer uses
(the :class:`~bsopt_broker.adapters.router.VenueRouter`): the per-account order lock, the
balance guard, the order timing, the retries and the circuit breaker apply to sells as to
any order. Its ``client_order_id`` is deterministic per (account, rule, position
snapshot) (:func:`~bsopt_broker.domain.sell_rules.sell_client_order_id`), so a second
pass, a retry or a restart never sells twice.

Every decision to sell is one structured log line (``sell decision {json}``) and one
``sells.decided.v1`` event (:class:`bsopt.broker_gateway.v1.events_pb2.SellDecision`)
through the transactional outbox, whose id is derived from the ``client_order_id``: a
decision already recorded (sold or refused) is not made again, also after a restart, so
a refused sell (a read-only account, the balance guard) is logged once and not retried
until the position changes. ``Unavailable`` (Alpaca unreachable) is logged and retried
on the next pass with the same ``client_order_id``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from bsopt.broker_gateway.v1 import broker_gateway_pb2 as pb
from bsopt.broker_gateway.v1 import events_pb2 as events
from bsopt_broker import models
from bsopt_broker.adapters.alpaca.accounts import AlpacaAccountConfig
from bsopt_broker.adapters.alpaca.broker import PriceSource
from bsopt_broker.domain.balance_guard import OrderRejected
from bsopt_broker.domain.records import Account, MarketOrder, OrderResult, OrderStatus
from bsopt_broker.domain.sell_rules import (
    DEFAULT_CHECK_INTERVAL_S,
    SellDecision,
    SellRule,
    SellRules,
    check_pcts,
    evaluate,
    sell_client_order_id,
)
from bsopt_broker.domain.venue import AccountNotFound, Broker
from bsopt_common import codec
from bsopt_common.db import session_scope
from bsopt_common.errors import FailedPrecondition, InvalidArgument, Unavailable
from bsopt_common.events import Outbox
from bsopt_common.money import Money
from bsopt_common.topics import SELLS_DECIDED
from bsopt_common.vocabulary import Side

log = logging.getLogger("bsopt_broker.sell")

_EVENT_NS = uuid.UUID("6f1d8a52-5c3e-4b8e-9a57-3d0f5b2c7e11")


def decision_event_id(client_order_id: str) -> str:
    """The ``sells.decided.v1`` event id of a sell (UUIDv5 of its client_order_id)."""
    return str(uuid.uuid5(_EVENT_NS, client_order_id))


@dataclass(frozen=True, slots=True)
class SellOutcome:
    """What one decision came to: ``sold``, ``refused`` or ``skipped`` (already decided)."""

    decision: SellDecision
    client_order_id: str
    outcome: str
    reason: str = ""
    result: OrderResult | None = None


def _file_rules(cfg: AlpacaAccountConfig) -> SellRules:
    r = cfg.sell_rules
    if r is None:
        return SellRules()
    return SellRules(r.stop_loss_pct, r.take_profit_pct, r.check_interval_s)


def _pct(value: float | None) -> Decimal | None:
    return None if value is None else Decimal(str(value))


class _Worker:
    """One account's thread: a pass every ``check_interval_s`` seconds, or at once when woken."""

    def __init__(self, module: SellModule, account_id: str):
        self.module = module
        self.account_id = account_id
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"sell-{account_id}", daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            interval = DEFAULT_CHECK_INTERVAL_S
            try:
                interval = self.module.run_once(self.account_id)
            except Unavailable as exc:
                log.warning("sell worker %s: Alpaca unavailable, retrying next pass: %s", self.account_id, exc)
            except Exception:
                log.exception("sell worker %s: pass failed; retrying next pass", self.account_id)
            self.wake.wait(interval)
            self.wake.clear()


class SellModule:
    """The sell workers of the Alpaca accounts of one pool (account id = entry name).

    Thread-safe. :meth:`start` / :meth:`stop` / :meth:`replace` block (they join threads):
    call them from a worker thread, not the event loop. :meth:`set_rules` writes one row;
    :meth:`close_all` only queues.

    At most ``max_concurrent_passes`` passes run at once over all accounts (the others
    wait their turn): the workers share the process (and its GIL) with the gRPC server,
    and this bounds what they take from it however many accounts have rules.
    """

    def __init__(self, broker: Broker, accounts: Mapping[str, AlpacaAccountConfig], prices: PriceSource | None,
                 session_factory: sessionmaker[Session], outbox: Outbox, *,
                 notify: Callable[[], object] | None = None, max_concurrent_passes: int = 1,
                 rules_cache_s: float = 5.0):
        """``broker``: the venue orders go through (the router); ``prices``: price per share
        of a symbol (the rules' comparison price); ``notify``: called (from a worker thread)
        after a decision event was committed, to wake the outbox relay;
        ``max_concurrent_passes``: passes running at once (>= 1); ``rules_cache_s``: seconds a
        worker reuses the rules it read from ``broker.sell_rules`` (this process's
        :meth:`set_rules` refreshes them at once; another instance's within that time).
        Raises ValueError for ``max_concurrent_passes`` < 1."""
        if max_concurrent_passes < 1:
            raise ValueError(f"max_concurrent_passes must be >= 1, got {max_concurrent_passes}")
        self._passes = threading.BoundedSemaphore(max_concurrent_passes)
        self._rules_cache_s = rules_cache_s
        self._rules_cache: dict[str, tuple[float, SellRules]] = {}
        self._broker = broker
        self._accounts = dict(accounts)
        self._prices = prices
        self._session_factory = session_factory
        self._outbox = outbox
        self._notify = notify
        self._lock = threading.Lock()
        self._workers: dict[str, _Worker] = {}
        self._pending: dict[str, list[str]] = {}
        self._decided: set[str] = set()
        # One pass at a time per account (a worker and a direct run_once never decide twice).
        self._pass_locks: dict[str, threading.Lock] = {}
        self._started = False

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start a worker for each account with rules (accounts file or ``broker.sell_rules``)."""
        with session_scope(self._session_factory) as s:
            stored = {(r.account_id, r.user_id) for r in s.execute(select(models.sell_rules)).all()}
        with self._lock:
            self._started = True
            for name, cfg in self._accounts.items():
                if cfg.sell_rules is not None or (name, cfg.owner) in stored or self._pending.get(name):
                    self._ensure_worker(name)
        log.info("sell module: %d worker(s): %s", len(self._workers), ", ".join(sorted(self._workers)))

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop every worker and wait (up to ``timeout_s`` seconds each) for its pass to end."""
        with self._lock:
            self._started = False
            workers, self._workers = list(self._workers.values()), {}
        for w in workers:
            w.stop.set()
            w.wake.set()
        for w in workers:
            w.thread.join(timeout_s)

    def replace(self, accounts: Mapping[str, AlpacaAccountConfig], prices: PriceSource | None) -> None:
        """A new pool (accounts reload): stop the workers, start them for ``accounts``.
        Queued close-all requests of accounts that stay are kept."""
        self.stop()
        with self._lock:
            self._accounts = dict(accounts)
            self._prices = prices
            self._pending = {k: v for k, v in self._pending.items() if k in self._accounts}
        self.start()

    def _ensure_worker(self, account_id: str) -> _Worker | None:
        """Caller holds self._lock."""
        if not self._started:
            return None
        worker = self._workers.get(account_id)
        if worker is None:
            worker = self._workers[account_id] = _Worker(self, account_id)
            worker.thread.start()
        return worker

    @property
    def workers(self) -> frozenset[str]:
        """The accounts with a running worker."""
        with self._lock:
            return frozenset(self._workers)

    # -- what the RPCs do -----------------------------------------------------------------

    def _account(self, account_id: str, user_id: str) -> AlpacaAccountConfig:
        cfg = self._accounts.get(account_id)
        if cfg is None or cfg.owner != user_id:
            raise AccountNotFound(f"no Alpaca account {account_id!r} for this user")
        return cfg

    def rules(self, account_id: str, user_id: str) -> SellRules:
        """The rules in force: the user's (``SetSellRules``), else the accounts file's.
        Raises AccountNotFound (not an Alpaca account of this user)."""
        cfg = self._account(account_id, user_id)
        return self._rules(cfg)

    def _rules(self, cfg: AlpacaAccountConfig, *, cached: bool = False) -> SellRules:
        if cached and (hit := self._rules_cache.get(cfg.name)) is not None and hit[0] > time.monotonic():
            return hit[1]
        rules = self._read_rules(cfg)
        self._rules_cache[cfg.name] = (time.monotonic() + self._rules_cache_s, rules)
        return rules

    def _read_rules(self, cfg: AlpacaAccountConfig) -> SellRules:
        file_rules = _file_rules(cfg)
        t = models.sell_rules
        with session_scope(self._session_factory) as s:
            row = s.execute(select(t.c.stop_loss_pct, t.c.take_profit_pct).where(
                t.c.account_id == cfg.name, t.c.user_id == cfg.owner)).first()
        if row is None:
            return file_rules
        return SellRules(_pct(row.stop_loss_pct), _pct(row.take_profit_pct), file_rules.check_interval_s)

    def set_rules(self, account_id: str, user_id: str, stop_loss_pct: Decimal | None,
                  take_profit_pct: Decimal | None) -> SellRules:
        """Store the user's rules of an account (percent; None: no such rule) and wake its
        worker; return the rules in force. Raises AccountNotFound, InvalidArgument (a
        threshold out of range). Blocking: one database write."""
        cfg = self._account(account_id, user_id)
        check_pcts(stop_loss_pct, take_profit_pct)
        values = dict(stop_loss_pct=None if stop_loss_pct is None else float(stop_loss_pct),
                      take_profit_pct=None if take_profit_pct is None else float(take_profit_pct),
                      updated_at=datetime.now(UTC))
        t = models.sell_rules
        with session_scope(self._session_factory) as s:
            s.execute(insert(t).values(user_id=user_id, account_id=account_id, **values)
                      .on_conflict_do_update(index_elements=[t.c.user_id, t.c.account_id], set_=values))
        log.info("sell rules of %s set by its user: stop_loss_pct=%s take_profit_pct=%s", account_id,
                 stop_loss_pct, take_profit_pct)
        rules = SellRules(stop_loss_pct, take_profit_pct, _file_rules(cfg).check_interval_s)
        self._rules_cache[account_id] = (time.monotonic() + self._rules_cache_s, rules)
        self._wake(account_id)
        return rules

    def close_all(self, account_id: str, user_id: str) -> str:
        """Queue a request to sell every position of the account; return its id at once.
        Raises AccountNotFound; FailedPrecondition for a read-only account."""
        cfg = self._account(account_id, user_id)
        if cfg.read_only:
            raise FailedPrecondition(f"account {account_id!r} is read-only: it may import, never place orders")
        request_id = str(uuid.uuid4())
        with self._lock:
            self._pending.setdefault(account_id, []).append(request_id)
        log.info("close-all of %s accepted: request %s", account_id, request_id)
        self._wake(account_id)
        return request_id

    def _wake(self, account_id: str) -> None:
        with self._lock:
            worker = self._ensure_worker(account_id)
        if worker is not None:
            worker.wake.set()

    # -- the worker's pass ------------------------------------------------------------------

    def run_once(self, account_id: str) -> float:
        """One evaluation pass of an account (blocking; the worker's, and the tests'):
        queued close-all requests first, else the rules. Returns the seconds until the next
        pass. Raises Unavailable (Alpaca unreachable: close-all requests stay queued)."""
        with self._lock:
            pass_lock = self._pass_locks.setdefault(account_id, threading.Lock())
        with pass_lock, self._passes:
            return self._pass(account_id)

    def _pass(self, account_id: str) -> float:
        with self._lock:
            cfg = self._accounts.get(account_id)
            pending = self._pending.pop(account_id, [])
            prices = self._prices
        if cfg is None:
            return DEFAULT_CHECK_INTERVAL_S
        rules = self._rules(cfg, cached=True)
        if not pending and rules.empty:
            return rules.check_interval_s
        try:
            account = self._broker.get_account(account_id, cfg.owner)
            if pending:
                for request_id in pending:
                    for p in account.positions:
                        quoted = self._price(prices, cfg.name, p.symbol)  # informational for close-all
                        at = quoted if quoted is not None else p.average_price
                        self._sell(cfg, account, SellDecision(SellRule.CLOSE_ALL, p, at, Decimal(0)), request_id)
                with self._lock:
                    more = bool(self._pending.get(account_id))
                return 0.0 if more else rules.check_interval_s
            for p in account.positions:
                current = self._price(prices, cfg.name, p.symbol)
                decision = evaluate(rules, p, current) if current is not None else None
                if decision is not None:
                    self._sell(cfg, account, decision)
        except Unavailable:
            if pending:
                with self._lock:
                    self._pending[account_id] = pending + self._pending.get(account_id, [])
            raise
        return rules.check_interval_s

    @staticmethod
    def _price(prices: PriceSource | None, account_id: str, symbol: str) -> Money | None:
        """The symbol's price, or None (no price source; a symbol the market data does not
        know: logged, the position is skipped). Raises Unavailable."""
        if prices is None:
            return None
        try:
            return prices(symbol)
        except InvalidArgument as exc:
            log.warning("sell worker %s: no price for %s, position not evaluated: %s", account_id, symbol, exc)
            return None

    def _already_decided(self, event_id: str) -> bool:
        if event_id in self._decided:
            return True
        t = self._outbox.table
        with session_scope(self._session_factory) as s:
            found = s.execute(select(t.c.event_id).where(t.c.event_id == event_id)).first() is not None
        if found:
            self._decided.add(event_id)
        return found

    def _sell(self, cfg: AlpacaAccountConfig, account: Account, decision: SellDecision,
              request_id: str = "") -> SellOutcome:
        p = decision.position
        client_order_id = sell_client_order_id(cfg.name, decision.rule, p, request_id)
        event_id = decision_event_id(client_order_id)
        if self._already_decided(event_id):
            return SellOutcome(decision, client_order_id, "skipped")
        order = MarketOrder(account_id=cfg.name, user_id=cfg.owner, client_order_id=client_order_id,
                            symbol=p.symbol, side=Side.SELL, quantity=p.quantity, as_of=datetime.now(UTC))
        result: OrderResult | None = None
        try:
            result = self._broker.submit_market_order(order)
        except (OrderRejected, InvalidArgument) as exc:
            outcome = SellOutcome(decision, client_order_id, "refused", str(exc))
        else:
            filled = result.order.status is OrderStatus.FILLED
            outcome = SellOutcome(decision, client_order_id, "sold" if filled else "refused",
                                  "" if filled else result.order.reject_reason, result)
        self._record(cfg, account, outcome, event_id, request_id)
        return outcome

    def _record(self, cfg: AlpacaAccountConfig, account: Account, outcome: SellOutcome, event_id: str,
                request_id: str) -> None:
        d, p = outcome.decision, outcome.decision.position
        kind = outcome.result.order.account_kind if outcome.result is not None else account.account_kind
        order_id = outcome.result.order.order_id if outcome.result is not None else ""
        now = datetime.now(UTC)
        message = events.SellDecision(
            decision_id=outcome.client_order_id, user_id=cfg.owner, account_id=cfg.name, symbol=p.symbol,
            rule=str(d.rule), price=codec.money_pb(d.price), quantity=p.quantity,
            average_price=codec.money_pb(p.average_price), threshold_pct=float(d.threshold_pct),
            account_kind=pb.ACCOUNT_KIND_LIVE if kind.value == "live" else pb.ACCOUNT_KIND_PAPER,
            outcome=outcome.outcome, reason=outcome.reason, order_id=order_id, request_id=request_id,
            decided_at=codec.timestamp(now))
        try:
            with session_scope(self._session_factory) as s:
                self._outbox.add(s, SELLS_DECIDED, message, event_id=event_id)
        except IntegrityError:
            # Another instance recorded the same decision (its sell replayed here): once is enough.
            self._decided.add(event_id)
            return
        self._decided.add(event_id)
        if self._notify is not None:
            self._notify()
        timing = getattr(outcome.result, "timing", None)
        line = {"account": cfg.name, "user_id": cfg.owner, "kind": str(kind), "rule": str(d.rule),
                "symbol": p.symbol, "price": str(d.price.amount), "quantity": p.quantity,
                "average_price": str(p.average_price.amount), "threshold_pct": str(d.threshold_pct),
                "client_order_id": outcome.client_order_id, "outcome": outcome.outcome, "reason": outcome.reason,
                "order_id": order_id, "request_id": request_id,
                "timing_ms": timing.ms() if timing is not None else None}
        level = logging.INFO if outcome.outcome == "sold" else logging.WARNING
        log.log(level, "sell decision %s", json.dumps(line, sort_keys=True), extra={"sell_decision": line})
