"""The non-blocking sell module (issue 8, section 4): one background worker thread per
Alpaca account that closes positions by rule, off the request path.

Accounts: the entries of the accounts file (account id = entry name) and the Alpaca
accounts users connected from the API (account id = connection id; OAuth or API keys,
opened through the router's :class:`~bsopt_broker.connections.service.ConnectedAccounts`).
A paused connection's worker sells nothing until it is resumed; a revoked one's stops
(its open close-all requests fail).

Rules (:mod:`bsopt_broker.domain.sell_rules`): stop-loss and take-profit, in percent
from a position's average entry price, from the account's ``sell_rules`` in the accounts
file or set by its user through ``SetSellRules`` (stored in ``broker.sell_rules``; they
take precedence over the file's), and close-all on request (``CloseAllPositions``). The
RPCs only record the rule or the request, wake the account's worker and return; the
worker does every read and every sell.

Close-all requests are rows of ``broker.close_all_requests`` (migration 0008), committed
before the RPC returns: ``queued``, claimed ``running`` by the worker, ``done`` (or
``failed``: the account is gone) with the counts of positions sold and refused, counted
in the transaction that records each decision. :meth:`SellModule.start` resumes the
requests an earlier process left queued or running.

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
from enum import StrEnum

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from bsopt.broker_gateway.v1 import broker_gateway_pb2 as pb
from bsopt.broker_gateway.v1 import events_pb2 as events
from bsopt_broker import models
from bsopt_broker.adapters.alpaca.accounts import AlpacaAccountConfig
from bsopt_broker.adapters.alpaca.broker import PriceSource
from bsopt_broker.adapters.router import VenueRouter
from bsopt_broker.connections.service import ConnectedAccounts
from bsopt_broker.connections.store import ConnectionStatus
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
from bsopt_common.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
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


class RequestStatus(StrEnum):
    """Status of a close-all request (``broker.close_all_requests.status``)."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


_OPEN = (RequestStatus.QUEUED.value, RequestStatus.RUNNING.value)


@dataclass(frozen=True, slots=True)
class CloseAllRequest:
    """A close-all request as stored: who asked, when, how far it came."""

    request_id: str
    account_id: str
    user_id: str
    status: RequestStatus
    positions_sold: int
    positions_refused: int
    error: str
    requested_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class _Target:
    """An account the module sells for: an entry of the accounts file (``connection`` is
    None) or a broker connection (its status)."""

    account_id: str
    owner: str
    read_only: bool
    file_rules: SellRules
    connection: ConnectionStatus | None = None


class _Retire(Exception):
    """The account is gone (no longer in the accounts file, or its connection revoked)."""


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
            except _Retire as exc:
                log.info("sell worker %s: stops: %s", self.account_id, exc)
                self.module._retire(self)
                return
            except Unavailable as exc:
                log.warning("sell worker %s: Alpaca unavailable, retrying next pass: %s", self.account_id, exc)
            except Exception:
                log.exception("sell worker %s: pass failed; retrying next pass", self.account_id)
            self.wake.wait(interval)
            self.wake.clear()


class SellModule:
    """The sell workers of the Alpaca accounts: the accounts file's (account id = entry
    name) and the broker connections users made from the API (account id = connection id,
    resolved through the router's :class:`~bsopt_broker.connections.service.ConnectedAccounts`).

    Thread-safe. :meth:`start` / :meth:`stop` / :meth:`replace` block (they join threads):
    call them from a worker thread, not the event loop. :meth:`set_rules` writes one row;
    :meth:`close_all` writes one request row (``broker.close_all_requests``) and wakes the
    worker: the request survives a restart (:meth:`start` resumes queued and running ones).

    At most ``max_concurrent_passes`` passes run at once over all accounts (the others
    wait their turn): the workers share the process (and its GIL) with the gRPC server,
    and this bounds what they take from it however many accounts have rules.
    """

    def __init__(self, broker: Broker, accounts: Mapping[str, AlpacaAccountConfig], prices: PriceSource | None,
                 session_factory: sessionmaker[Session], outbox: Outbox, *,
                 notify: Callable[[], object] | None = None, max_concurrent_passes: int = 1,
                 rules_cache_s: float = 5.0, connections: ConnectedAccounts | None = None):
        """``broker``: the venue orders go through (the router); ``prices``: price per share
        of a symbol of the accounts file's accounts (the rules' comparison price);
        ``notify``: called (from a worker thread) after a decision event was committed, to
        wake the outbox relay; ``max_concurrent_passes``: passes running at once (>= 1);
        ``rules_cache_s``: seconds a worker reuses the rules it read from
        ``broker.sell_rules`` (this process's :meth:`set_rules` refreshes them at once;
        another instance's within that time); ``connections``: the broker connections
        (default: the router's, when ``broker`` is a VenueRouter; None: accounts file only).
        Raises ValueError for ``max_concurrent_passes`` < 1."""
        if max_concurrent_passes < 1:
            raise ValueError(f"max_concurrent_passes must be >= 1, got {max_concurrent_passes}")
        self._passes = threading.BoundedSemaphore(max_concurrent_passes)
        self._rules_cache_s = rules_cache_s
        self._rules_cache: dict[str, tuple[float, SellRules]] = {}
        self._broker = broker
        self._connections = connections if connections is not None else (
            broker.connections if isinstance(broker, VenueRouter) else None)
        self._accounts = dict(accounts)
        self._prices = prices
        self._session_factory = session_factory
        self._outbox = outbox
        self._notify = notify
        self._lock = threading.Lock()
        self._workers: dict[str, _Worker] = {}
        self._decided: set[str] = set()
        # One pass at a time per account (a worker and a direct run_once never decide twice).
        self._pass_locks: dict[str, threading.Lock] = {}
        self._started = False

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start a worker for each account with rules (accounts file or ``broker.sell_rules``,
        the latter also for broker connections that are not revoked) and for each account
        with a queued or running close-all request (an earlier process's: resumed here)."""
        r, q = models.sell_rules, models.close_all_requests
        with session_scope(self._session_factory) as s:
            stored = {(row.account_id, row.user_id) for row in s.execute(select(r.c.account_id, r.c.user_id)).all()}
            open_requests = set(s.execute(select(q.c.account_id).where(q.c.status.in_(_OPEN)).distinct())
                                .scalars().all())
        wanted = set(open_requests)
        for name, cfg in self._accounts.items():
            if cfg.sell_rules is not None or (name, cfg.owner) in stored:
                wanted.add(name)
        if self._connections is not None:
            for account_id, user_id in stored:
                if account_id in self._accounts or account_id in wanted:
                    continue
                found = self._connections.connection(account_id)
                if found is not None and found.user_id == user_id and found.status is not ConnectionStatus.REVOKED:
                    wanted.add(account_id)
        with self._lock:
            self._started = True
            for account_id in sorted(wanted):
                self._ensure_worker(account_id)
        if open_requests:
            log.info("sell module: resuming the close-all requests of %s", ", ".join(sorted(open_requests)))
        log.info("sell module: %d worker(s): %s", len(self._workers), ", ".join(sorted(self._workers)))

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop every worker and wait (up to ``timeout_s`` seconds each) for its pass to end.
        Close-all requests not finished stay in the table (the next start resumes them)."""
        with self._lock:
            self._started = False
            workers, self._workers = list(self._workers.values()), {}
        for w in workers:
            w.stop.set()
            w.wake.set()
        for w in workers:
            w.thread.join(timeout_s)

    def replace(self, accounts: Mapping[str, AlpacaAccountConfig], prices: PriceSource | None) -> None:
        """A new pool (accounts reload): stop the workers, start them for ``accounts`` (and
        the broker connections). Stored close-all requests of accounts that stay resume."""
        self.stop()
        with self._lock:
            self._accounts = dict(accounts)
            self._prices = prices
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

    def _retire(self, worker: _Worker) -> None:
        with self._lock:
            if self._workers.get(worker.account_id) is worker:
                del self._workers[worker.account_id]

    @property
    def workers(self) -> frozenset[str]:
        """The accounts with a running worker."""
        with self._lock:
            return frozenset(self._workers)

    # -- what the RPCs do -----------------------------------------------------------------

    def _target(self, account_id: str) -> _Target | None:
        """The account by id, whoever owns it (connections: revoked ones too); None: unknown."""
        with self._lock:
            cfg = self._accounts.get(account_id)
        if cfg is not None:
            return _Target(cfg.name, cfg.owner, cfg.read_only, _file_rules(cfg))
        if self._connections is None or not account_id:
            return None
        found = self._connections.connection(account_id)
        if found is None:
            return None
        return _Target(account_id, found.user_id, False, SellRules(), found.status)

    def _account(self, account_id: str, user_id: str) -> _Target:
        target = self._target(account_id)
        if target is None or target.owner != user_id or target.connection is ConnectionStatus.REVOKED:
            raise AccountNotFound(f"no Alpaca account {account_id!r} for this user")
        return target

    def rules(self, account_id: str, user_id: str) -> SellRules:
        """The rules in force: the user's (``SetSellRules``), else the accounts file's.
        Raises AccountNotFound (not an Alpaca account or connection of this user)."""
        return self._rules(self._account(account_id, user_id))

    def _rules(self, target: _Target, *, cached: bool = False) -> SellRules:
        hit = self._rules_cache.get(target.account_id)
        if cached and hit is not None and hit[0] > time.monotonic():
            return hit[1]
        rules = self._read_rules(target)
        self._rules_cache[target.account_id] = (time.monotonic() + self._rules_cache_s, rules)
        return rules

    def _read_rules(self, target: _Target) -> SellRules:
        t = models.sell_rules
        with session_scope(self._session_factory) as s:
            row = s.execute(select(t.c.stop_loss_pct, t.c.take_profit_pct).where(
                t.c.account_id == target.account_id, t.c.user_id == target.owner)).first()
        if row is None:
            return target.file_rules
        return SellRules(_pct(row.stop_loss_pct), _pct(row.take_profit_pct), target.file_rules.check_interval_s)

    def set_rules(self, account_id: str, user_id: str, stop_loss_pct: Decimal | None,
                  take_profit_pct: Decimal | None) -> SellRules:
        """Store the user's rules of an account (percent; None: no such rule) and wake its
        worker; return the rules in force. Raises AccountNotFound, InvalidArgument (a
        threshold out of range). Blocking: one database write."""
        target = self._account(account_id, user_id)
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
        rules = SellRules(stop_loss_pct, take_profit_pct, target.file_rules.check_interval_s)
        self._rules_cache[account_id] = (time.monotonic() + self._rules_cache_s, rules)
        self._wake(account_id)
        return rules

    def close_all(self, account_id: str, user_id: str) -> str:
        """Record a request to sell every position of the account (``queued``, committed
        before this returns) and wake its worker; return the request id. Raises
        AccountNotFound; FailedPrecondition for a read-only account or a paused connection.
        Blocking: one or two database round trips, no venue call."""
        target = self._account(account_id, user_id)
        if target.read_only:
            raise FailedPrecondition(f"account {account_id!r} is read-only: it may import, never place orders")
        if target.connection is ConnectionStatus.PAUSED:
            raise FailedPrecondition(f"broker connection {account_id!r} is paused: orders are refused until it is "
                                     "resumed (ResumeBrokerConnection)")
        request_id = str(uuid.uuid4())
        with session_scope(self._session_factory) as s:
            s.execute(models.close_all_requests.insert().values(
                request_id=request_id, account_id=account_id, user_id=user_id, status=RequestStatus.QUEUED.value,
                requested_at=datetime.now(UTC)))
        log.info("close-all of %s accepted: request %s", account_id, request_id)
        self._wake(account_id)
        return request_id

    def close_all_request(self, request_id: str, user_id: str) -> CloseAllRequest:
        """A close-all request of the user. Raises NotFound (unknown, another user's)."""
        t = models.close_all_requests
        with session_scope(self._session_factory) as s:
            row = s.execute(select(t).where(t.c.request_id == request_id, t.c.user_id == user_id)).mappings().first()
        if row is None:
            raise NotFound(f"no close-all request {request_id!r} for this user")
        return CloseAllRequest(**{**row, "status": RequestStatus(row["status"])})

    def _wake(self, account_id: str) -> None:
        with self._lock:
            worker = self._ensure_worker(account_id)
        if worker is not None:
            worker.wake.set()

    # -- close-all requests ----------------------------------------------------------------

    def _open_requests(self, account_id: str) -> list[str]:
        t = models.close_all_requests
        with session_scope(self._session_factory) as s:
            return list(s.execute(select(t.c.request_id).where(t.c.account_id == account_id,
                                                               t.c.status.in_(_OPEN))
                                  .order_by(t.c.requested_at, t.c.request_id)).scalars().all())

    def _claim(self, request_id: str) -> bool:
        """Mark a request running (also one an earlier process left running). False when it
        is finished already (another instance completed it)."""
        t = models.close_all_requests
        with session_scope(self._session_factory) as s:
            claimed = s.execute(update(t).where(t.c.request_id == request_id, t.c.status.in_(_OPEN))
                                .values(status=RequestStatus.RUNNING.value,
                                        started_at=func.coalesce(t.c.started_at, func.now()))
                                .returning(t.c.request_id)).first()
        return claimed is not None

    def _finish(self, request_ids: list[str], status: RequestStatus, error: str = "") -> None:
        t = models.close_all_requests
        with session_scope(self._session_factory) as s:
            s.execute(update(t).where(t.c.request_id.in_(request_ids), t.c.status.in_(_OPEN))
                      .values(status=status.value, error=error[:500], finished_at=datetime.now(UTC)))

    # -- the worker's pass ------------------------------------------------------------------

    def run_once(self, account_id: str) -> float:
        """One evaluation pass of an account (blocking; the worker's, and the tests'):
        stored close-all requests first (oldest first), then the rules. Returns the seconds
        until the next pass. Raises Unavailable (Alpaca unreachable: the requests stay
        queued or running, and are taken up again by the next pass); _Retire (the account
        is gone: its open requests were marked failed)."""
        with self._lock:
            pass_lock = self._pass_locks.setdefault(account_id, threading.Lock())
        with pass_lock, self._passes:
            return self._pass(account_id)

    def _gone(self, account_id: str, why: str) -> _Retire:
        requests = self._open_requests(account_id)
        if requests:
            self._finish(requests, RequestStatus.FAILED, why)
            log.warning("close-all request(s) %s of %s failed: %s", ", ".join(requests), account_id, why)
        return _Retire(why)

    def _pass(self, account_id: str) -> float:
        target = self._target(account_id)
        if target is None:
            raise self._gone(account_id, "the account is no longer an Alpaca account of this broker-gateway")
        if target.connection is ConnectionStatus.REVOKED:
            raise self._gone(account_id, "the broker connection was revoked")
        rules = self._rules(target, cached=True)
        if target.connection is ConnectionStatus.PAUSED:
            return rules.check_interval_s  # a paused connection sells nothing; requests wait for resume
        requests = self._open_requests(account_id)
        if not requests and rules.empty:
            return rules.check_interval_s
        try:
            prices = self._prices_of(target)
            if requests:
                for request_id in requests:
                    if not self._claim(request_id):
                        continue
                    # read again for each request: a second request sees what the first sold
                    account = self._broker.get_account(account_id, target.owner)
                    for p in account.positions:
                        quoted = self._price(prices, account_id, p.symbol)  # informational for close-all
                        at = quoted if quoted is not None else p.average_price
                        self._sell(target, account, SellDecision(SellRule.CLOSE_ALL, p, at, Decimal(0)), request_id)
                    self._finish([request_id], RequestStatus.DONE)
                    log.info("close-all request %s of %s done", request_id, account_id)
                return rules.check_interval_s
            account = self._broker.get_account(account_id, target.owner)
            for p in account.positions:
                current = self._price(prices, account_id, p.symbol)
                decision = evaluate(rules, p, current) if current is not None else None
                if decision is not None:
                    self._sell(target, account, decision)
        except AccountNotFound:
            # the connection was revoked (or the entry removed) during the pass
            raise self._gone(account_id, "the account is gone (connection revoked or entry removed)") from None
        except OrderRejected:
            raise
        except FailedPrecondition as exc:
            # a connection paused during the pass: nothing more is sold until it is resumed
            log.info("sell worker %s: stopped selling: %s", account_id, exc)
        return rules.check_interval_s

    def _prices_of(self, target: _Target) -> PriceSource | None:
        if target.connection is None:
            with self._lock:
                return self._prices
        assert self._connections is not None
        return self._connections.prices(target.account_id, target.owner)

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

    def _sell(self, target: _Target, account: Account, decision: SellDecision,
              request_id: str = "") -> SellOutcome:
        p = decision.position
        client_order_id = sell_client_order_id(target.account_id, decision.rule, p, request_id)
        event_id = decision_event_id(client_order_id)
        if self._already_decided(event_id):
            return SellOutcome(decision, client_order_id, "skipped")
        order = MarketOrder(account_id=target.account_id, user_id=target.owner, client_order_id=client_order_id,
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
        self._record(target, account, outcome, event_id, request_id)
        return outcome

    def _record(self, target: _Target, account: Account, outcome: SellOutcome, event_id: str,
                request_id: str) -> None:
        d, p = outcome.decision, outcome.decision.position
        kind = outcome.result.order.account_kind if outcome.result is not None else account.account_kind
        order_id = outcome.result.order.order_id if outcome.result is not None else ""
        now = datetime.now(UTC)
        message = events.SellDecision(
            decision_id=outcome.client_order_id, user_id=target.owner, account_id=target.account_id, symbol=p.symbol,
            rule=str(d.rule), price=codec.money_pb(d.price), quantity=p.quantity,
            average_price=codec.money_pb(p.average_price), threshold_pct=float(d.threshold_pct),
            account_kind=pb.ACCOUNT_KIND_LIVE if kind.value == "live" else pb.ACCOUNT_KIND_PAPER,
            outcome=outcome.outcome, reason=outcome.reason, order_id=order_id, request_id=request_id,
            decided_at=codec.timestamp(now))
        try:
            with session_scope(self._session_factory) as s:
                self._outbox.add(s, SELLS_DECIDED, message, event_id=event_id)
                if request_id:  # counted with the decision: a replayed decision is not counted again
                    t = models.close_all_requests
                    counter = t.c.positions_sold if outcome.outcome == "sold" else t.c.positions_refused
                    s.execute(update(t).where(t.c.request_id == request_id).values({counter: counter + 1}))
        except IntegrityError:
            # Another instance recorded the same decision (its sell replayed here): once is enough.
            self._decided.add(event_id)
            return
        self._decided.add(event_id)
        if self._notify is not None:
            self._notify()
        timing = getattr(outcome.result, "timing", None)
        line = {"account": target.account_id, "user_id": target.owner, "kind": str(kind), "rule": str(d.rule),
                "symbol": p.symbol, "price": str(d.price.amount), "quantity": p.quantity,
                "average_price": str(p.average_price.amount), "threshold_pct": str(d.threshold_pct),
                "client_order_id": outcome.client_order_id, "outcome": outcome.outcome, "reason": outcome.reason,
                "order_id": order_id, "request_id": request_id,
                "timing_ms": timing.ms() if timing is not None else None}
        level = logging.INFO if outcome.outcome == "sold" else logging.WARNING
        log.log(level, "sell decision %s", json.dumps(line, sort_keys=True), extra={"sell_decision": line})
